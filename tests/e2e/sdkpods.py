"""Simulated SDK workers under their old name: the harness keeps them in tests/harness/sdkpods.py."""

from __future__ import annotations

from tests.harness.sdkpods import PodWorkers

__all__ = ["PodWorkers"]
