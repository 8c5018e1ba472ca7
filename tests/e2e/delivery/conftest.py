"""Delivery fixtures: a control plane of the module's own.

The delivery tests run against a real control plane. Each module that needs a plane has its own
(`dplane`, below), so it can install and remove CRDs and webhook configurations without disturbing
the rest of the suite.

No request may leave loopback: kwok's pods have addresses in 10.244.0.0/16 and Services in 10.96.0.0/16
that nothing serves, so no OJS object is created or updated while a ValidatingWebhookConfiguration that
points at a Service exists, and no command reads pod logs (which the API server fetches from the node).
"""

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
