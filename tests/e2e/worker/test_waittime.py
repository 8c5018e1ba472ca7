"""Wait-time autoscaling, pause annotations and the fallback after failed polls, through the real control
plane and the OJS test double (design.md §stabilisation, §autoscaling-annotations; issue 13)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ojsctrl.api.worker import AUTOSCALING_PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION
from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import DEPLOYMENTS, Client
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import (
    driver,
    events_of,
    get,
    namespace,
    ojs_cluster,
    ojs_worker,
    replicas,
    wait_until,
    wcond,
    wstatus,
)
from tests.harness.ojs import keyed_ojs_server
from tests.harness.operator import OperatorProcess, start_ojsctrl
from tests.ojsserver.kubeworld import PodWatcher, WorldDriver, api_client, kwok_annotations
from tests.ojsserver.server import OJSTestServer
from tests.ojsserver.world import Trace, World, fixed

OJS_URL = "/{namespace}/{name}"


@pytest.fixture(scope="module")
def ojs_server(crds: ControlPlane) -> Iterator[OJSTestServer]:
    server = keyed_ojs_server(driver(crds))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    op = start_ojsctrl(crds, ojs_server.base_url + OJS_URL, "--sync-period", "10h", name="ojsctrl-waittime")
    yield op
    op.stop()


def under_autoscaler(client: Client, ns: str, dep: str) -> bool:
    annotations = (get(client, DEPLOYMENTS, ns, dep) or {}).get("metadata", {}).get("annotations", {})
    return annotations.get("ojs.openjobspec.dev/autoscaler") == "true"


def make_worker(
    client: Client, ns: str, name: str, queue: str, autoscaling: dict[str, Any], **spec: Any
) -> None:
    client.create(OJSCLUSTERS, ojs_cluster(ns, "jobs", {"backend": {"type": "lite"}}), ns)
    body = {
        "clusterRef": "jobs",
        "jobTypes": ["t.run"],
        "queues": [queue],
        "image": "example.invalid/w:1",
        "replicas": 1,
        "autoScaling": {"enabled": True, "pollingInterval": "1s", **autoscaling},
        **spec,
    }
    client.create(OJSWORKERS, ojs_worker(ns, name, body), ns)
    wait_until("autoscaler holds replicas", lambda: under_autoscaler(client, ns, f"{name}-worker"), 60)


def annotate(client: Client, ns: str, name: str, annotations: dict[str, str | None]) -> None:
    client.patch(OJSWORKERS, name, {"metadata": {"annotations": annotations}}, ns)


def autoscaling_reason(client: Client, ns: str, name: str) -> str | None:
    return wcond(client, ns, name, "Autoscaling").get("reason")


def completing(server: OJSTestServer, queue: str) -> threading.Event:
    """Count 10 completions a second on ``queue`` until the returned event is set. The count follows the
    clock, not the loop, so a late thread on a loaded machine does not dent the rate."""
    stop = threading.Event()

    def complete() -> None:
        start = time.monotonic()
        while not stop.wait(0.2):
            server.set_queue(queue, completed=int(10 * (time.monotonic() - start)))

    threading.Thread(target=complete, daemon=True).start()
    return stop


def test_wait_time_scales_up_on_a_backlog_and_explains_itself(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "waittime")
    q = f"wt-{ns}"
    # A steady flow: 6 jobs running, 10 completing a second (service time 0.6 s), nothing waiting.
    ojs_server.set_queue(q, available=0, active=6, completed=0)
    stop = completing(ojs_server, q)
    try:
        make_worker(
            client,
            ns,
            "wt",
            q,
            {"metric": "waitTime", "targetWaitTime": "20s", "minReplicas": 1, "maxReplicas": 12},
            concurrency=5,
        )

        def measured() -> bool:
            inputs = (wstatus(client, ns, "wt").get("autoscaling") or {}).get("inputs") or {}
            return "serviceTime" in inputs and "throughput" in inputs

        wait_until("service time measured", measured, 60)
        # 6 busy slots at 5 per pod: 2 pods keep up. Not a round 10 slots: the rates are measured, and a
        # reading a little high on a loaded machine must not tip 2.0 pods to 3 (held for scaleDownDelay).
        wait_until("2 pods for the steady flow", lambda: replicas(client, ns, "wt-worker") == 2, 30)

        # A backlog of 400 jobs (4 minutes at one pod) must drain within the target: more pods, at once.
        ojs_server.set_queue(q, available=400)
        wait_until("scaled up for the backlog", lambda: (replicas(client, ns, "wt-worker") or 0) >= 4, 30)

        def explained() -> bool:
            # The start-up latency is measured once a scale-up's pods are Ready, and polled inputs reach
            # status at most every --status-min-interval: wait for both rather than read a first write.
            inputs = (wstatus(client, ns, "wt").get("autoscaling") or {}).get("inputs") or {}
            return inputs.get("depth") == 400 and "startupLatency" in inputs

        wait_until("status.autoscaling shows the backlog and the start-up latency", explained, 60)
        block = wstatus(client, ns, "wt")["autoscaling"]
        assert block["metric"] == "waitTime"
        assert block["desiredReplicas"] >= 4 and block["recommendation"] >= 4
        assert block["inputs"]["active"] == 6
        assert block["inputs"]["serviceTime"].endswith("s")
        for key in ("arrivalRate", "throughput", "estimatedWait", "startupLatency"):
            assert key in block["inputs"], key
        assert block["reason"] and block["message"]
        # One event per change of reason, not one per poll.
        reasons = [
            e for e in events_of(client, ns, "OJSWorker", "wt") if e["reason"].startswith("Autoscaling")
        ]
        assert reasons
        assert all(int(e.get("count") or 1) <= 3 for e in reasons), reasons
    finally:
        stop.set()


def test_a_pool_raised_before_any_completion_comes_down_once_measured(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    """Before ten jobs have completed the pool is sized one slot per job; once the service time is measured
    the pool comes down to what it asks for at once, not after scaleDownDelay (10m here)."""
    client = driver(crds)
    ns = namespace(crds, "waittime-cold")
    q = f"wc-{ns}"
    ojs_server.set_queue(q, available=40, active=0, completed=0)
    auto = {
        "metric": "waitTime",
        "targetWaitTime": "30s",
        "minReplicas": 1,
        "maxReplicas": 20,
        "scaleDownDelay": "10m",
    }
    make_worker(client, ns, "wc", q, auto, concurrency=4)
    wait_until("one slot per job: 40 jobs, 10 pods", lambda: replicas(client, ns, "wc-worker") == 10, 30)
    # The backlog is taken: 4 running, 10 completing a second (service time 0.4 s, one pod keeps up).
    ojs_server.set_queue(q, available=0, active=4)
    stop = completing(ojs_server, q)
    try:
        wait_until(
            "down from the provisional 10 long before scaleDownDelay",
            lambda: (replicas(client, ns, "wc-worker") or 0) <= 2,
            60,
        )

        def scaled() -> list[str]:
            return [e["message"] for e in events_of(client, ns, "OJSWorker", "wc") if e["reason"] == "Scaled"]

        # Events go out in the background: wait for the scale-down's.
        wait_until("the scale-down event", lambda: any("from 10 to" in m for m in scaled()), 30)
        assert any("not measured yet" in m for m in scaled()), scaled()  # up on the provisional count
        assert any("from 10 to" in m and "service time" in m for m in scaled()), scaled()  # measured rates
    finally:
        stop.set()


def test_pause_annotations_hold_set_and_release_the_replicas(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "pause")
    q = f"pause-{ns}"
    ojs_server.set_queue(q, available=0, active=0)
    make_worker(
        client,
        ns,
        "pz",
        q,
        {"minReplicas": 1, "maxReplicas": 20, "targetJobsPerWorker": 10, "scaleDownDelay": "30s"},
    )
    wait_until("1 replica", lambda: replicas(client, ns, "pz-worker") == 1, 30)

    annotate(client, ns, "pz", {AUTOSCALING_PAUSED_ANNOTATION: "true"})
    wait_until("Paused", lambda: autoscaling_reason(client, ns, "pz") == "Paused", 30)
    assert wcond(client, ns, "pz", "Autoscaling")["status"] == "False"
    ojs_server.set_queue(q, available=50)
    time.sleep(3)
    assert replicas(client, ns, "pz-worker") == 1, "scaled while paused"
    assert (wstatus(client, ns, "pz").get("autoscaling") or {}).get("reason") == "Paused"

    annotate(client, ns, "pz", {PAUSED_REPLICAS_ANNOTATION: "3"})
    wait_until("paused-replicas sets 3", lambda: replicas(client, ns, "pz-worker") == 3, 30)

    annotate(client, ns, "pz", {AUTOSCALING_PAUSED_ANNOTATION: None, PAUSED_REPLICAS_ANNOTATION: None})
    wait_until("resumed: 5 for 50 jobs", lambda: replicas(client, ns, "pz-worker") == 5, 30)
    # The status follows the replicas' write.
    wait_until(
        "Autoscaling True again", lambda: wcond(client, ns, "pz", "Autoscaling").get("status") == "True", 30
    )

    # An unreadable value is named in the condition; autoscaling goes on.
    annotate(client, ns, "pz", {AUTOSCALING_PAUSED_ANNOTATION: "soon"})
    ojs_server.set_queue(q, available=70)
    wait_until("not paused by a bad value", lambda: replicas(client, ns, "pz-worker") == 7, 30)
    wait_until(
        "the condition names the annotation",
        lambda: AUTOSCALING_PAUSED_ANNOTATION in str(wcond(client, ns, "pz", "Autoscaling").get("message")),
        30,
    )

    # A pause until a time a few seconds ahead holds, then ends by itself (no other change wakes it).
    until = datetime.now(UTC) + timedelta(seconds=8)
    annotate(client, ns, "pz", {AUTOSCALING_PAUSED_ANNOTATION: until.strftime("%Y-%m-%dT%H:%M:%SZ")})
    wait_until("PausedUntil", lambda: autoscaling_reason(client, ns, "pz") == "PausedUntil", 30)
    ojs_server.set_queue(q, available=90)
    time.sleep(2)
    if datetime.now(UTC) < until - timedelta(seconds=1):
        assert replicas(client, ns, "pz-worker") == 7, "scaled during a timed pause"
    wait_until("resumed after the pause: 9", lambda: replicas(client, ns, "pz-worker") == 9, 30)
    assert datetime.now(UTC) >= until - timedelta(seconds=1)
    wait_until("PauseExpired", lambda: autoscaling_reason(client, ns, "pz") == "PauseExpired", 30)

    # A time already past pauses nothing.
    past = datetime.now(UTC) - timedelta(minutes=1)
    annotate(client, ns, "pz", {AUTOSCALING_PAUSED_ANNOTATION: past.strftime("%Y-%m-%dT%H:%M:%SZ")})
    ojs_server.set_queue(q, available=120)
    wait_until("scaled with a past pause time", lambda: replicas(client, ns, "pz-worker") == 12, 30)


def test_fallback_replicas_after_failed_polls(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "fallback")
    q = f"fb-{ns}"
    ojs_server.set_queue(q, available=10, active=0)
    make_worker(
        client,
        ns,
        "fb",
        q,
        {
            "minReplicas": 1,
            "maxReplicas": 10,
            "targetJobsPerWorker": 10,
            "fallback": {"failureThreshold": 3, "replicas": 4, "behavior": "static"},
        },
    )
    wait_until("1 replica", lambda: replicas(client, ns, "fb-worker") == 1, 30)
    # Only this namespace's cluster fails: the path prefix names it.
    ojs_server.fail.paths = (f"/{ns}/",)
    ojs_server.fail.status_500 = True
    try:
        started = time.monotonic()
        wait_until("fallback to 4", lambda: replicas(client, ns, "fb-worker") == 4, 30)
        # KEDA counts as the CRD says: the fallback starts with the failure after failureThreshold.
        assert time.monotonic() - started >= 3.0, "fell back before failureThreshold polls failed"
        wait_until("the Fallback reason", lambda: autoscaling_reason(client, ns, "fb") == "Fallback", 30)
        assert wcond(client, ns, "fb", "Autoscaling")["status"] == "False"
        assert (wstatus(client, ns, "fb").get("autoscaling") or {}).get("reason") == "Fallback"
        wait_until(
            "a Warning event for the fallback",
            lambda: any(
                e["reason"] == "AutoscalingFallback" and e["type"] == "Warning"
                for e in events_of(client, ns, "OJSWorker", "fb")
            ),
            30,
        )
    finally:
        ojs_server.fail.status_500 = False
        ojs_server.fail.paths = ()
    # Stats back: the queue's 10 jobs want 1 pod, after the scale-down delay of good data.
    wait_until(
        "Autoscaling True again", lambda: wcond(client, ns, "fb", "Autoscaling").get("status") == "True", 30
    )


def test_wait_time_in_the_simulated_world_bounds_waits_and_scales_to_zero_and_back(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    """The closed loop at a reduced size: jobs arrive by a trace, Ready kwok pods of the worker's own
    Deployment process them, the operator sizes the pool on wait time. Behaviour only, never timings: waits
    stay bounded, no job is interrupted (grace above the job length), the pool goes to zero when idle and
    comes back for the next burst."""
    client = driver(crds)
    ns = namespace(crds, "wtworld")
    q = f"world-{ns}"
    startup = 3.0
    # Two bursts of 1 s jobs at 2/s, 50 s of quiet between them.
    trace = Trace("bursts", 80.0, lambda t: 2.0 if t < 15 or 65 <= t < 75 else 0.0, 2.0, fixed(1.0), seed=7)
    api = api_client(crds.kubeconfig)
    selector = (
        "app.kubernetes.io/component=worker,app.kubernetes.io/instance=sim,app.kubernetes.io/name=ojs-worker"
    )
    watcher = PodWatcher(api, ns, selector).start()
    world_driver: WorldDriver | None = None
    try:
        # The queue exists and is empty before the worker does; the trace's clock starts once the operator
        # holds the replicas, so the time the cluster and worker take to set up on a busy machine does not
        # eat into the trace (it did: the quiet stretch then ended before the pool reached zero).
        ojs_server.set_queue(q, available=0, active=0, completed=0)
        make_worker(
            client,
            ns,
            "sim",
            q,
            {
                "metric": "waitTime",
                "targetWaitTime": "10s",
                "minReplicas": 0,
                "maxReplicas": 6,
                "scaleDownDelay": "5s",
            },
            concurrency=2,
            replicas=0,
            podAnnotations=kwok_annotations(startup),
            gracefulShutdown={"timeoutSeconds": 5, "drainBeforeShutdown": True},
        )
        world = World(trace, jobs_per_pod=2, start=time.time(), server=ojs_server, queue=q)
        world_driver = WorldDriver(world, watcher, tick=0.25).start()
        wait_until("the trace played out", lambda: world.clock - world.start >= trace.duration, 120)
        wait_until("every job done", lambda: world.summary()["completed"] == len(world.jobs), 60)
    finally:
        if world_driver is not None:
            world_driver.stop()
        watcher.stop()
        api.close()
    summary = world.summary()
    assert summary["jobs"] == len(world.jobs) > 0
    assert summary["interrupted"] == 0
    # Bounded: the target plus start-up from zero and the polling, with room for a busy machine.
    assert summary["wait_p95"] < 40.0, summary
    pods = [(p.t - world.start, p.pods) for p in world.history]
    # The pod count at each change, to read a failure by.
    changes = [(round(t, 1), n) for i, (t, n) in enumerate(pods) if i == 0 or pods[i - 1][1] != n]
    first_burst = [j for j in world.jobs if j.arrived - world.start < 15]
    first_burst_done = max(j.completed or 0.0 for j in first_burst) - world.start
    assert any(n > 0 for t, n in pods if t < 20), ("never scaled up for the first burst", changes)
    assert any(n == 0 for t, n in pods if first_burst_done < t < 65), (
        f"did not scale to zero while idle (first burst done at {first_burst_done:.1f} s)",
        changes,
    )
    assert any(n > 0 for t, n in pods if t >= 65), ("did not come back for the second burst", changes)
    assert len(summary["first_ready_from_zero"]) >= 2, summary["first_ready_from_zero"]
