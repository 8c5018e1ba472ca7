"""The API server misbehaves: it restarts during a storm, loses history (410 after a compaction), or
keeps a watch open and silent. The `raw_plane` (watch cache off, so compaction reaches watches) is
restarted, frozen and compacted.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
    ApiError,
    Resource,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import (
    FULL,
    cond_of,
    driver,
    ns_for,
    size,
    status_of,
    ts,
    wait_until,
)
from tests.harness.ojs import ClusterKeys, CountingOJSServer
from tests.harness.operator import (
    OperatorProcess,
    log_records,
    metric,
    metric_sum,
    reconcile_failures,
    start_op,
    unexpected_failures,
)
from tests.harness.storm import (
    child_problems,
    cluster_body,
    not_converged,
    run_storm,
    storm_bodies,
    wait_converged,
    worker_body,
)

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def test_apiserver_restart_during_a_storm(raw_crds: ControlPlane, ops: list[OperatorProcess]) -> None:
    plane = raw_crds
    n = size(30, 200)
    ns = ns_for(plane, "rel-restart")
    client = driver(plane)
    op = start_op(plane, name="rel-restart", namespaces=[ns], started=ops)
    wait_until("operator ready", op.ready, 60)

    bodies = storm_bodies(ns, n, "r")
    storm = threading.Thread(target=run_storm, args=(client, ns, bodies))
    started = time.monotonic()
    storm.start()

    def created() -> int:
        try:
            return len(client.list(OJSCLUSTERS, ns)[0]) + len(client.list(OJSWORKERS, ns)[0])
        except ApiError:
            return 0

    wait_until("a third of the storm created", lambda: created() >= len(bodies) // 3, 120, 0.2)
    restart_at = time.monotonic()
    plane.restart_apiserver(kill=True, down_for=2.0)
    back_at = time.monotonic()
    storm.join(300)
    assert not storm.is_alive()
    took = wait_converged(client, ns, 2 * n, size(240, 900))
    problems = child_problems(client, ns)
    assert problems == [], problems[:20]
    assert op.proc.poll() is None, "the operator exited"
    assert unexpected_failures(op) == []
    restarts = sum(
        metric(op, "ojsctrl_informer_watch_restarts_total", {"resource": r, "cause": "error"})
        for r in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
    )
    figure(
        "apiserver_restart",
        objects=2 * n,
        apiserver_down_s=round(back_at - restart_at, 1),
        converged_after_restart_s=round(time.monotonic() - back_at, 1),
        wait_for_convergence_s=round(took, 1),
        storm_to_converged_s=round(time.monotonic() - started, 1),
        primary_watch_error_restarts=restarts,
        reconcile_failures=dict(reconcile_failures(op)),
        orphans_or_duplicates=len(problems),
    )


# =========================================================================== 2. lost history (410)
def test_lost_history_compaction_relists_and_delivers_deletes(
    raw_crds: ControlPlane, ojs: CountingOJSServer, ops: list[OperatorProcess]
) -> None:
    plane = raw_crds
    n = size(12, 60)
    q = n // 4
    ns = ns_for(plane, "rel-gone")
    client = driver(plane)
    assert isinstance(ojs.key_resolver, ClusterKeys)
    ojs.key_resolver.add(client)  # this plane's clusters too
    op = start_op(
        plane, name="rel-gone", namespaces=[ns], ojs_url=ojs.base_url + "/{namespace}/{name}", started=ops
    )
    wait_until("operator ready", op.ready, 60)
    auto = {"enabled": True, "minReplicas": 1, "maxReplicas": 2, "pollingInterval": "1s"}
    bodies: list[tuple[Resource, dict[str, Any]]] = []
    for i in range(n):
        # Not lite: a lite server rolls with Recreate, which waits out the old pod's 40 s grace period.
        bodies.append(
            (OJSCLUSTERS, cluster_body(f"g{i:03d}", ns, backend={"type": "nats", "url": "nats://n:4222"}))
        )
        bodies.append((OJSWORKERS, worker_body(f"g{i:03d}-w", ns, f"g{i:03d}", autoScaling=auto)))
    run_storm(client, ns, bodies)
    wait_converged(client, ns, 2 * n, size(180, 600))

    changed = [f"g{i:03d}" for i in range(q)]
    deleted_all = [f"g{i:03d}" for i in range(q, 2 * q)]
    deleted_keep_worker = [f"g{i:03d}" for i in range(2 * q, 3 * q)]
    late = [f"late{i:03d}" for i in range(q)]
    expired_before = sum(
        metric(op, "ojsctrl_informer_watch_restarts_total", {"resource": r, "cause": "expired"})
        for r in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
    )
    op.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # The frozen operator's streams die first, so none of what follows sits in its socket buffers: when
        # it resumes, it must watch from versions that the compaction below has removed.
        plane.restart_apiserver(kill=True, down_for=0.5)
        for c in changed:
            client.patch(OJSCLUSTERS, c, {"spec": {"image": "example.invalid/ojs-server:v2"}}, ns)
            client.patch(OJSWORKERS, f"{c}-w", {"spec": {"jobTypes": ["t.run", "t.changed"]}}, ns)
        for c in deleted_all:
            client.delete(OJSWORKERS, f"{c}-w", ns)
            client.delete(OJSCLUSTERS, c, ns)
        for c in deleted_keep_worker:
            client.delete(OJSCLUSTERS, c, ns)
        for c in late:
            client.create(OJSCLUSTERS, cluster_body(c, ns), ns)
            client.create(OJSWORKERS, worker_body(f"{c}-w", ns, c), ns)
        compacted = plane.etcd_compact()
    finally:
        op.signal(signal.SIGCONT)
    resumed_at = time.monotonic()

    def final_state() -> bool:
        for c in changed:
            dep = client.get(DEPLOYMENTS, f"{c}-server", ns)
            if dep["spec"]["template"]["spec"]["containers"][0]["image"] != "example.invalid/ojs-server:v2":
                return False
            wdep = client.get(DEPLOYMENTS, f"{c}-w-worker", ns)
            env = {
                e["name"]: e.get("value") for e in wdep["spec"]["template"]["spec"]["containers"][0]["env"]
            }
            if env.get("OJS_JOB_TYPES") != "t.run,t.changed":
                return False
        for c in deleted_keep_worker:
            w = client.get(OJSWORKERS, f"{c}-w", ns)
            if cond_of(w, "ClusterFound").get("status") != "False" or status_of(w).get("phase") != "Error":
                return False
        live = {f"g{i:03d}" for i in range(n)} - set(deleted_all) - set(deleted_keep_worker)
        names = live | {f"{c}-w" for c in live} | set(late) | {f"{c}-w" for c in late}
        return not not_converged(client, ns, names)

    took = wait_until("final state after the relist", final_state, size(180, 600), 1.0)
    # Garbage collection removes the children of deleted clusters and workers; nothing is orphaned.
    wait_until(
        "children of deleted owners collected",
        lambda: not [p for p in child_problems(client, ns, one_replicaset=False) if "orphan" in p],
        120,
        1.0,
    )
    for c in deleted_keep_worker:
        # The worker's Deployment stays (a missing cluster never takes the workers down).
        assert client.get(DEPLOYMENTS, f"{c}-w-worker", ns)
    expired_after = sum(
        metric(op, "ojsctrl_informer_watch_restarts_total", {"resource": r, "cause": "expired"})
        for r in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
    )
    assert expired_after > expired_before, "no watch saw 410 Gone: the test did not exercise a relist"
    # The informer's cache equals the API: its object gauge counts exactly the live clusters.
    live_clusters = len(client.list(OJSCLUSTERS, ns)[0])
    wait_until(
        "informer holds exactly the live clusters",
        lambda: (
            metric(op, "ojsctrl_informer_objects", {"resource": "ojsclusters.ojs.openjobspec.dev"})
            == live_clusters
        ),
        30,
        0.5,
    )
    # Deleted clusters are no longer polled (the delete reached the cluster controller), live ones are.
    before = ojs.poll_counts()
    time.sleep(4)
    after = ojs.poll_counts()
    polled = {k for k in after if after[k] > before.get(k, 0) and k.startswith(f"/{ns}/")}
    gone = {f"/{ns}/{c}" for c in deleted_all + deleted_keep_worker}
    assert not polled & gone, sorted(polled & gone)
    assert f"/{ns}/{changed[0]}" in polled
    assert op.proc.poll() is None and unexpected_failures(op) == []
    figure(
        "lost_history",
        objects=2 * n,
        changed=2 * q,
        deleted_clusters=2 * q,
        deleted_workers=q,
        created_while_frozen=2 * q,
        frozen_s=round(resumed_at - frozen_at, 1),
        compacted_revision=compacted,
        watches_expired_410=expired_after - expired_before,
        final_state_after_resume_s=round(took, 1),
    )


# =========================================================================== 3. silent stream
def test_silent_stream_detected_and_healthz_reflects_a_stuck_watch(
    raw_crds: ControlPlane, ops: list[OperatorProcess]
) -> None:
    plane = raw_crds
    ns = ns_for(plane, "rel-silent")
    client = driver(plane)
    stall = 15.0
    op = start_op(
        plane,
        "--watch-inactivity-timeout",
        "5s",
        "--informer-stall-timeout",
        f"{stall:.0f}s",
        name="rel-silent",
        namespaces=[ns],
        started=ops,
    )
    wait_until("operator ready", op.ready, 60)
    nats = {"type": "nats", "url": "nats://n:4222"}  # rolls in place (lite servers use Recreate)
    client.create(OJSCLUSTERS, cluster_body("before", ns, backend=nats), ns)
    wait_converged(client, ns, 1, 90)
    # Quiet watches on a plane without bookmarks time out every 5 s. That is not a failed attempt: the
    # stream is reopened at once, logged at debug (a growing backoff would delay events and, past the
    # stall timeout, fail /healthz).
    idle_until = time.monotonic() + 3 * 5 + 1
    while time.monotonic() < idle_until:
        status, body = op.get(op.health_port, "/healthz?verbose")
        assert status == 200, body
        time.sleep(1)
    quiet = [r for r in log_records(op) if r.get("event") == "watch inactive; reopening"]
    assert quiet and all(r.get("level") == "debug" for r in quiet), quiet[:3]

    errors_before = metric_sum(op, "ojsctrl_informer_watch_restarts_total", {"cause": "error"})
    apiserver = plane.processes["kube-apiserver"]
    apiserver.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    frozen_wall = time.time()
    body = ""
    try:
        first_failure: float | None = None

        def unhealthy() -> bool:
            nonlocal body, first_failure
            status, body = op.get(op.health_port, "/healthz?verbose")
            if status == 500 and first_failure is None:
                first_failure = time.monotonic() - frozen
            return status == 500 and "ojsclusters.ojs.openjobspec.dev" in body

        wait_until("/healthz fails naming the stuck informer", unhealthy, stall + 40, 0.5)
        detected = time.monotonic() - frozen
        assert "[-]informers failed" in body and "ojsclusters.ojs.openjobspec.dev" in body, body
        assert "no progress" in body
        assert op.proc.poll() is None, "an unreachable API server must not end the process"
        frozen_for = time.monotonic() - frozen
    finally:
        apiserver.signal(signal.SIGCONT)
    resumed = time.monotonic()
    resumed_wall = time.time()
    wait_until("/healthz ok again", lambda: op.get(op.health_port, "/healthz")[0] == 200, 90, 0.5)
    healthy_after = time.monotonic() - resumed
    client.patch(OJSCLUSTERS, "before", {"spec": {"image": "example.invalid/ojs-server:v3"}}, ns)
    client.create(OJSCLUSTERS, cluster_body("after", ns), ns)
    took = wait_until(
        "changes after the freeze reconciled",
        lambda: (
            client.get(DEPLOYMENTS, "before-server", ns)["spec"]["template"]["spec"]["containers"][0]["image"]
            == "example.invalid/ojs-server:v3"
            and not not_converged(client, ns)
            and len(client.list(OJSCLUSTERS, ns)[0]) == 2
        ),
        90,
        0.5,
    )
    errors_after = metric_sum(op, "ojsctrl_informer_watch_restarts_total", {"cause": "error"})
    assert errors_after > errors_before
    # Detected: streams that went silent while the server was frozen ended by the inactivity timeout.
    silent = [
        r
        for r in log_records(op)
        if r.get("event") == "list/watch failed; retrying"
        and frozen_wall <= ts(r["timestamp"]) <= resumed_wall + 1
        and "timed out" in str(r.get("error"))
    ]
    assert silent, "no watch noticed the frozen server"
    assert unexpected_failures(op) == []
    figure(
        "silent_stream",
        inactivity_timeout_s=5,
        stall_timeout_s=stall,
        healthz_500_after_freeze_s=round(first_failure or detected, 1),
        healthz_names_cluster_informer_after_s=round(detected, 1),
        frozen_s=round(frozen_for, 1),
        healthz_200_after_resume_s=round(healthy_after, 1),
        change_after_resume_reconciled_s=round(took, 1),
        watch_error_restarts=errors_after - errors_before,
        streams_timed_out_while_frozen=len(silent),
    )
