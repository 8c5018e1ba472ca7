"""E2E fixtures: one real local control plane per test session, and the fixtures every folder shares.

Fixtures here serve a test file directly in tests/e2e/ and in any folder below it: the planes (`plane`,
`raw_plane`, `crds`, `raw_crds`), operators started as processes (`ops`, `shared`), a keyed and counting
OJS double (`ojs`), and the per-module secret ledger whose teardown scans for leaks.

The reliability tests (faults/, leadership/test_failover.py, conflicts/test_foreign_writers.py, ojs_faults/,
bad_input/, security/, load/; docs/reliability.md): each test is one fault, against the real local control
plane, with figures (tests/harness/figures.py). Sizes are reduced by default and the issue's with
OJSCTRL_FULL=1 (`size()`). Every operator runs as a process with a distinct user agent
(`--user-agent-suffix`), so the API server's audit log tells who wrote what; what a module plants and the
namespaces it uses are registered with its secret ledger, scanned for leaks when the module ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness import figures, ledger
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import RESTRICTED, driver, install_crds, ns_for, wait_until
from tests.harness.ojs import CountingOJSServer, keyed_ojs_server
from tests.harness.operator import OperatorProcess, Shared, start_op, stop_op
from tests.harness.planes import PLANES, start_plane, stop_plane


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    """The shared control plane (watch cache on), started once for the session."""
    cp = start_plane("ojsctrl-e2e")
    try:
        yield cp
    finally:
        stop_plane(cp)


@pytest.fixture(scope="session")
def raw_plane() -> Iterator[ControlPlane]:
    """A second plane, watch cache off (so an etcd compaction reaches watches), that tests may
    restart, freeze (SIGSTOP) and compact without disturbing the shared one."""
    cp = start_plane("ojsctrl-e2e-raw", watch_cache=False)
    try:
        yield cp
    finally:
        stop_plane(cp)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and PLANES:
        for cp in PLANES:
            report.sections.append((f"control plane logs ({cp.workdir})", cp.log_tails(lines=25)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def crds(plane: ControlPlane) -> ControlPlane:
    """The plane with the operator's CRDs installed (server-side apply, as `make install` does)."""
    return install_crds(plane)


@pytest.fixture(scope="module")
def raw_crds(raw_plane: ControlPlane) -> ControlPlane:
    """The raw plane with the operator's CRDs installed."""
    return install_crds(raw_plane)


# --------------------------------------------------------------------------- secrets and figures
@pytest.fixture(scope="module", autouse=True)
def secret_ledger() -> Iterator[ledger.SecretLedger]:
    """The module's secret ledger; at the module's end, no registered secret may appear anywhere.

    Autouse and module-scoped, so it is set up before, and torn down after, every other fixture of the
    module: the operators it scans have stopped and saved their last /metrics by then.
    """
    book = ledger.SecretLedger()
    ledger.activate(book)
    try:
        yield book
    finally:
        ledger.deactivate(book)
    if book.empty():
        return
    found = book.scan()
    assert found.leaks == [], found.leaks[:20]


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    figures.write()


# --------------------------------------------------------------------------- operators and OJS
@pytest.fixture
def ops() -> Iterator[list[OperatorProcess]]:
    """Operators a test starts (``start_op(..., started=ops)``), stopped after it."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        stop_op(op)


@pytest.fixture
def procs() -> Iterator[list[OperatorProcess]]:
    """Processes a test starts (appended by the test), stopped after it."""
    started: list[OperatorProcess] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def ojs(crds: ControlPlane) -> Iterator[CountingOJSServer]:
    """A counting OJS double that wants each cluster's own API key (see keyed_ojs_server)."""
    srv = keyed_ojs_server(driver(crds))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared(crds: ControlPlane, ojs: CountingOJSServer) -> Iterator[Shared]:
    """The module's shared operator, watching one namespace per concern (one of them `restricted`)."""
    names = {k: ns_for(crds, f"rel-{k}") for k in ("conflict", "faults", "bad", "secrets")}
    names["psa"] = ns_for(crds, "rel-psa", RESTRICTED)
    op = start_op(
        crds,
        "--sync-period",
        "10m",
        name="rel-shared",
        namespaces=list(names.values()),
        ojs_url=ojs.base_url + "/{namespace}/{name}",
    )
    wait_until("shared operator ready", op.ready, 60)
    yield Shared(op, names)
    stop_op(op)
