"""The control planes a test session has running, so a failed test's report can show their log tails."""

from __future__ import annotations

import contextlib
from typing import Any

from tests.harness import binaries
from tests.harness.controlplane import ControlPlane

PLANES: list[ControlPlane] = []


def start_plane(name: str, **kw: Any) -> ControlPlane:
    """Build the binaries when missing, start a plane and register it (its logs go into failed reports)."""
    binaries.ensure_built()
    cp = ControlPlane(name=name, **kw)
    PLANES.append(cp)
    cp.start()
    return cp


def stop_plane(cp: ControlPlane) -> None:
    """Stop a plane started by :func:`start_plane`."""
    cp.stop()
    with contextlib.suppress(ValueError):
        PLANES.remove(cp)
