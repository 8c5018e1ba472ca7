"""Delivery fixtures: a control plane of the module's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.planes import start_plane, stop_plane


@pytest.fixture(scope="module")
def dplane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """This module's control plane (installs and removes CRDs and webhook configurations freely)."""
    cp = start_plane(f"ojsctrl-e2e-delivery-{request.module.__name__.rsplit('.', 1)[-1]}")
    try:
        yield cp
    finally:
        stop_plane(cp)
