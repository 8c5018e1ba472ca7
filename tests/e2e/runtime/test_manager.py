"""The manager as a process: endpoints, a controller at work, leader election and shutdown."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from ojsctrl.runtime.client import CONFIGMAPS, LEASES, NotFoundError
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import configmap, driver, holder, namespace, wait_until
from tests.harness.operator import OperatorProcess, leader_election_args

APP = "tests.e2e.apps.mirror"
SOURCE = {"ojsctrl-test/source": "true"}


def _start(plane: ControlPlane, procs: list[OperatorProcess], *args: str, name: str) -> OperatorProcess:
    p = OperatorProcess(plane, APP, "--identity", name, "--log-level", "debug", *args, name=name)
    procs.append(p)
    return p


def _mirror(client, ns: str, name: str):  # type: ignore[no-untyped-def]
    try:
        return client.get(CONFIGMAPS, f"{name}-mirror", ns)
    except NotFoundError:
        return None


def test_endpoints_and_a_controller_at_work(plane: ControlPlane, procs: list[OperatorProcess]) -> None:
    ns = namespace(plane, "mgr")
    client = driver(plane)
    op = _start(plane, procs, "--watch-namespace", ns, name="solo")
    wait_until("readyz", op.ready, 30)
    assert op.get(op.health_port, "/healthz") == (200, "ok")
    status, body = op.get(op.health_port, "/readyz?verbose")
    assert status == 200 and "[+]informers-synced ok" in body
    client.create(CONFIGMAPS, configmap(ns, "src", SOURCE, greeting="hello"))
    wait_until(
        "mirror created",
        lambda: (_mirror(client, ns, "src") or {}).get("data", {}).get("greeting") == "hello",
        30,
    )
    mirror = _mirror(client, ns, "src")
    assert mirror["metadata"]["ownerReferences"][0]["controller"] is True
    assert mirror["data"]["writer"] == "solo"
    # An owned object deleted behind the controller's back is recreated (owned watch -> owner).
    client.delete(CONFIGMAPS, "src-mirror", ns)
    wait_until("mirror recreated", lambda: _mirror(client, ns, "src") is not None, 30)
    # A spec change propagates.
    client.patch(CONFIGMAPS, "src", {"data": {"greeting": "bye"}}, ns)
    wait_until("mirror updated", lambda: _mirror(client, ns, "src")["data"]["greeting"] == "bye", 30)

    text = op.metrics()
    for name in (
        'controller_runtime_reconcile_total{controller="mirror",result="success"}',
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        'controller_runtime_active_workers{controller="mirror"}',
        'controller_runtime_max_concurrent_reconciles{controller="mirror"}',
        'workqueue_depth{controller="mirror",name="mirror"}',
        "workqueue_adds_total",
        "workqueue_queue_duration_seconds_bucket",
        "workqueue_work_duration_seconds_bucket",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "workqueue_retries_total",
        "rest_client_requests_total",
        "rest_client_request_duration_seconds_bucket",
        "ojsctrl_informer_objects",
    ):
        assert name in text, f"{name} missing from /metrics"
    # Structured logs: one JSON object per line with controller, key, reconcile id, duration.
    import json

    lines = [json.loads(x) for x in op.logs().splitlines() if x.startswith("{")]
    rec = [x for x in lines if x.get("event") == "reconciled"]
    assert rec and {"controller", "key", "reconcile_id", "duration"} <= set(rec[0])

    op.signal(signal.SIGTERM)
    assert op.wait(30) == 0


def test_not_ready_before_caches_sync(raw_plane: ControlPlane, procs: list[OperatorProcess]) -> None:
    apiserver = raw_plane.processes["kube-apiserver"]
    apiserver.signal(signal.SIGSTOP)
    try:
        op = _start(raw_plane, procs, name="slow-sync")
        wait_until("health endpoint up", lambda: op.get(op.health_port, "/healthz")[0] == 200, 30)
        status, body = op.get(op.health_port, "/readyz?verbose")
        assert status == 500 and "[-]informers-synced failed" in body
    finally:
        apiserver.signal(signal.SIGCONT)
    wait_until("ready after the apiserver resumes", op.ready, 60)


def test_leader_election_takeover_on_kill_and_on_sigterm(
    plane: ControlPlane, procs: list[OperatorProcess]
) -> None:
    ns = namespace(plane, "leader")
    client = driver(plane)
    lease = f"mirror-{uuid.uuid4().hex[:6]}"
    timing = ("--lease-duration", "8s", "--renew-deadline", "5s", "--retry-period", "1s")
    common = (
        *leader_election_args(lease, ns),
        *timing,
    )
    a = _start(plane, procs, *common, name="a")
    wait_until("a leads", lambda: holder(client, ns, lease) == "a", 30)
    b = _start(plane, procs, *common, name="b")
    wait_until("b ready (warm standby)", b.ready, 30)

    client.create(CONFIGMAPS, configmap(ns, "one", SOURCE))
    wait_until(
        "leader reconciles",
        lambda: (_mirror(client, ns, "one") or {}).get("data", {}).get("writer") == "a",
        30,
    )
    assert b.metric("leader_election_master_status", {"name": lease}) == 0
    assert a.metric("leader_election_master_status", {"name": lease}) == 1
    assert not b.metric("controller_runtime_reconcile_total", {"controller": "mirror"})

    # kill -9: b takes over once the lease expires by its own clock.
    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until("b leads", lambda: holder(client, ns, lease) == "b", 30, 0.05)
    takeover = time.monotonic() - killed
    assert takeover <= 8 + 1 + 2.5, f"takeover took {takeover:.1f}s"
    client.create(CONFIGMAPS, configmap(ns, "two", SOURCE))
    wait_until(
        "new leader reconciles",
        lambda: (_mirror(client, ns, "two") or {}).get("data", {}).get("writer") == "b",
        30,
    )

    # SIGTERM: b drains, releases the lease, exits 0; c takes over within 5 s.
    c = _start(plane, procs, *common, name="c")
    wait_until("c ready (warm standby)", c.ready, 30)
    b.signal(signal.SIGTERM)
    termed = time.monotonic()
    wait_until("c leads", lambda: holder(client, ns, lease) == "c", 15, 0.05)
    assert time.monotonic() - termed <= 5.0
    assert b.wait(20) == 0
    assert "released the lease" in b.logs()


def test_losing_the_lease_stops_the_process(plane: ControlPlane, procs: list[OperatorProcess]) -> None:
    ns = namespace(plane, "lost")
    client = driver(plane)
    lease = "mirror-lost"
    a = _start(
        plane,
        procs,
        *leader_election_args(lease, ns),
        "--lease-duration",
        "8s",
        "--renew-deadline",
        "5s",
        "--retry-period",
        "1s",
        name="victim",
    )
    wait_until("victim leads", lambda: holder(client, ns, lease) == "victim", 30)
    obj = client.get(LEASES, lease, ns)
    obj["spec"]["holderIdentity"] = "usurper"
    client.replace(LEASES, obj, ns)
    assert a.wait(20) == 1
    assert "leadership lost" in a.logs()


@pytest.mark.parametrize("stuck", [False, True], ids=["drained", "reconcile-still-running"])
def test_shutdown_releases_the_lease_only_when_no_reconcile_runs(plane: ControlPlane, stuck: bool) -> None:
    import threading

    from ojsctrl.runtime.client import Client
    from ojsctrl.runtime.controller import Controller, Request, Result
    from ojsctrl.runtime.manager import Manager, ManagerOptions

    ns = namespace(plane, "drain")
    client = driver(plane)
    lease, identity = f"drain-{uuid.uuid4().hex[:6]}", f"m-{uuid.uuid4().hex[:6]}"
    entered, release = threading.Event(), threading.Event()

    def reconcile(req: Request) -> Result | None:
        entered.set()
        if stuck:
            release.wait(30)
        return None

    manager = Manager(
        Client.from_kubeconfig(str(plane.kubeconfig)),
        ManagerOptions(
            metrics_bind_address="0",
            health_probe_bind_address="0",
            leader_elect=True,
            leader_election_id=lease,
            leader_election_namespace=ns,
            namespaces=[ns],
            lease_duration=6.0,
            renew_deadline=4.0,
            retry_period=1.0,
            graceful_shutdown_timeout=1.0,
            identity=identity,
        ),
        exit_on_lost_lease=lambda code: None,
    )
    controller = Controller(f"drain-{identity}", reconcile)
    sources = manager.informers.informer(CONFIGMAPS, label_selector="ojsctrl-test/source=true")
    controller.watch_primary(sources)
    manager.add_controller(controller)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(manager.run()), daemon=True)
    runner.start()
    try:
        wait_until("leads", lambda: holder(client, ns, lease) == identity, 30)
        client.create(CONFIGMAPS, configmap(ns, "src", SOURCE))
        assert entered.wait(30)
        if not stuck:
            wait_until("reconcile done", lambda: controller.active() == 0, 10)
        manager.stop_event.set()
        runner.join(30)
        assert codes == [0]
        if stuck:
            # A reconcile may still write: the lease stays ours until it expires.
            assert holder(client, ns, lease) == identity
        else:
            assert holder(client, ns, lease) == ""
    finally:
        release.set()
        manager.stop_event.set()
