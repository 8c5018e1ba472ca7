"""E2E fixtures: one real local control plane per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import install_crds
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane

_planes: list[ControlPlane] = []


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    """The shared control plane (watch cache on), started once for the session."""
    binaries.ensure_built()
    cp = ControlPlane(name="ojsctrl-e2e")
    _planes.append(cp)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
        _planes.remove(cp)


@pytest.fixture(scope="session")
def raw_plane() -> Iterator[ControlPlane]:
    """A second plane, watch cache off (so an etcd compaction reaches watches), that tests may
    restart, freeze (SIGSTOP) and compact without disturbing the shared one."""
    binaries.ensure_built()
    cp = ControlPlane(name="ojsctrl-e2e-raw", watch_cache=False)
    _planes.append(cp)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
        _planes.remove(cp)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _planes:
        for cp in _planes:
            report.sections.append((f"control plane logs ({cp.workdir})", cp.log_tails(lines=25)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def crds(plane: ControlPlane) -> ControlPlane:
    """The plane with the operator's CRDs installed (server-side apply, as `make install` does)."""
    return install_crds(plane)
