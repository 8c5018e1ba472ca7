"""Pure status logic and the stats poller's scheduling, without a cluster."""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any

import pytest

from ojsctrl.controllers.cluster_status import (
    deployment_state,
    highest,
    owned_replica_counts,
    workload_phase,
)
from ojsctrl.controllers.common import merge_conditions, status_unchanged
from ojsctrl.controllers.stats import PollResult, StatsPoller, top_queues


def dep(
    replicas: int = 2,
    *,
    gen: int = 1,
    observed: int = 1,
    ready: int = 2,
    updated: int = 2,
    total: int = 2,
    available: str | None = "True",
    progressing: str | None = "True",
    reason: str = "NewReplicaSetAvailable",
) -> dict[str, Any]:
    conds = []
    if available is not None:
        conds.append({"type": "Available", "status": available})
    if progressing is not None:
        conds.append({"type": "Progressing", "status": progressing, "reason": reason, "message": "m"})
    return {
        "metadata": {"generation": gen},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "replicas": total,
            "conditions": conds,
        },
    }


@pytest.mark.parametrize(
    ("obj", "phase"),
    [
        (None, "Pending"),
        (dep(), "Running"),
        (dep(observed=0, gen=2), "Pending"),  # spec change not yet seen by the deployment controller
        (dep(ready=0, available="False"), "Pending"),
        (dep(replicas=4, ready=2, updated=2, total=2), "Scaling"),  # scaling up
        (dep(replicas=1, ready=2, updated=2, total=2), "Scaling"),  # scaling down
        (dep(available="False", progressing="False", reason="ProgressDeadlineExceeded"), "Degraded"),
        (dep(replicas=0, ready=0, updated=0, total=0, available="True"), "Running"),
        (dep(updated=1, ready=2, total=3, replicas=2), "Pending"),  # rollout in progress
    ],
)
def test_workload_phase(obj: dict[str, Any] | None, phase: str) -> None:
    assert workload_phase(deployment_state(obj)) == phase


def test_phase_precedence() -> None:
    assert highest("Running", "Pending") == "Pending"
    assert highest("Scaling", "Degraded", "Error") == "Error"
    assert highest("Draining", "Scaling") == "Draining"
    assert highest() == "Pending"


def test_condition_transition_time_is_kept_when_status_unchanged() -> None:
    old = [{"type": "Ready", "status": "True", "reason": "Running", "lastTransitionTime": "T0"}]
    same = merge_conditions(
        old, [{"type": "Ready", "status": "True", "reason": "Running", "message": ""}], "T1"
    )
    assert same[0]["lastTransitionTime"] == "T0"
    flipped = merge_conditions(
        old, [{"type": "Ready", "status": "False", "reason": "X", "message": ""}], "T1"
    )
    assert flipped[0]["lastTransitionTime"] == "T1"


def test_status_unchanged_detects_added_and_removed_fields() -> None:
    assert status_unchanged({"phase": "Running", "replicas": 1}, {"phase": "Running", "replicas": 1})
    assert not status_unchanged({"phase": "Running"}, {"phase": "Pending"})
    assert not status_unchanged({"phase": "Running", "queueDepth": 3}, {"phase": "Running"})
    assert not status_unchanged({"phase": "Running"}, None)


def test_top_queues_is_bounded_and_ordered_by_load() -> None:
    queues = {f"q{i:02d}": (i, 1) for i in range(30)}
    top = top_queues(queues, limit=20)
    assert len(top) == 20
    assert top[0] == {"name": "q29", "available": 29, "active": 1}
    assert [q["name"] for q in top] == [f"q{i:02d}" for i in range(29, 9, -1)]


def test_poller_polls_once_per_interval_for_all_requesters_and_reports_changes() -> None:
    calls: list[str] = []
    answer = {"n": 1}

    def fetch(url: str, key: str | None) -> dict[str, tuple[int, int]]:
        calls.append(url)
        if answer["n"] < 0:
            raise RuntimeError("server down")
        return {"default": (answer["n"], 0)}

    poller = StatsPoller(fetch, workers=2)
    changes: list[str] = []
    seen = threading.Event()
    poller.subscribe(lambda k: (changes.append(k), seen.set()))
    poller.start()
    try:
        for requester in ("cluster", "worker:a", "worker:b"):
            poller.register("ns/c", "http://x", "k", 0.3, requester=requester)
        assert seen.wait(5)
        time.sleep(1.0)
        # Three requesters, one target: about one poll per 0.3 s, not three.
        assert 2 <= len(calls) <= 6, calls
        assert changes == ["ns/c"]  # unchanged answers are not reported again
        result = poller.result("ns/c")
        assert result is not None and result.ok and result.queues == {"default": (1, 0)}
        answer["n"] = -1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (poller.result("ns/c") or result).ok:
            time.sleep(0.05)
        failed = poller.result("ns/c")
        assert failed is not None and not failed.ok and "server down" in (failed.error or "")
        # Subscribers are told right after the result is stored: wait for the second notice.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(changes) < 2:
            time.sleep(0.02)
        assert changes == ["ns/c", "ns/c"]
        poller.unregister("ns/c")
        n = len(calls)
        time.sleep(0.8)
        assert len(calls) <= n + 1
    finally:
        poller.stop()


def test_poller_dates_each_queues_counts_from_the_poll_that_first_showed_them() -> None:
    """A decision's latency runs from the counts that called for it, not from the later poll that a
    lagging reconcile happened to read: each queue's counts carry the time they were first seen."""
    clock = {"t": 100.0}
    answers = [
        {"a": (5, 0), "b": (1, 0)},
        {"a": (5, 0), "b": (2, 0)},
        {"a": (5, 0), "b": (2, 0), "c": (0, 0)},
        RuntimeError("server down"),
        {"a": (5, 0), "b": (2, 0)},
    ]
    results: list[PollResult] = []

    def fetch(url: str, key: str | None) -> dict[str, tuple[int, int]]:
        answer = answers[len(results)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    poller = StatsPoller(fetch, workers=1, clock=lambda: clock["t"])
    poller.subscribe_outcomes(lambda key, prev, result: results.append(result))
    poller.start()
    try:
        poller.register("ns/c", "http://x", None, 3600, requester="cluster")
        for i in range(len(answers)):
            deadline = time.monotonic() + 5
            while len(results) <= i and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(results) == i + 1
            if i + 1 < len(answers):
                clock["t"] += 10
                poller.register("ns/c", "http://y" + str(i), None, 3600, requester="cluster")  # poll now
    finally:
        poller.stop()
    first, second, third, failed, after = results
    assert first.seen_since == {"a": 100.0, "b": 100.0}
    # "a" held: still dated from the first poll; "b" moved: dated from this one.
    assert second.seen_since == {"a": 100.0, "b": 110.0}
    assert third.seen_since == {"a": 100.0, "b": 110.0, "c": 120.0}
    assert third.counts_since(["a"]) == 100.0 and third.counts_since(["a", "b"]) == 110.0
    assert third.counts_since(["not-listed"]) == third.at == 120.0
    assert failed.seen_since == {}
    # After a failure nothing says the counts held meanwhile: the run starts afresh.
    assert after.seen_since == {"a": 140.0, "b": 140.0}


def test_poller_counts_failed_polls_so_a_missed_outage_shows() -> None:
    """design.md §stabilisation: a reconcile that reads a good result after an outage it never saw still
    learns of it from the grown failure count (the autoscaler then records a hold sample)."""
    state = {"fail": 0}

    def fetch(url: str, key: str | None) -> dict[str, tuple[int, int]]:
        if state["fail"] > 0:
            state["fail"] -= 1
            raise RuntimeError("server down")
        return {"default": (1, 0)}

    poller = StatsPoller(fetch, workers=1)
    poller.start()
    try:
        poller.register("ns/c", "http://x", "k", 0.05, requester="cluster")

        def wait(pred: Any) -> Any:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                r = poller.result("ns/c")
                if r is not None and pred(r):
                    return r
                time.sleep(0.01)
            raise AssertionError(f"not reached: {poller.result('ns/c')}")

        first = wait(lambda r: r.ok)
        assert first.failures == 0
        state["fail"] = 2
        back = wait(lambda r: r.ok and r.failures == 2)
        assert back.queues == {"default": (1, 0)}
        time.sleep(0.2)
        assert poller.result("ns/c").failures == 2  # type: ignore[union-attr]
        poller.unregister("ns/c")
        poller.register("ns/c", "http://x", "k", 0.05, requester="cluster")
        assert wait(lambda r: r.ok).failures == 0  # a new registration starts counting again
    finally:
        poller.stop()


def test_poller_keeps_one_schedule_per_cluster_whatever_re_registers_it() -> None:
    """Every way a reconciler can re-register a cluster that is already scheduled (the same settings again,
    a shorter interval from another requester, a new URL or API key, a shorter interval then released,
    unregister and register) leaves it one schedule: afterwards, over any window, it is polled at most once
    per interval. Two schedule entries would each poll every interval, about twice that."""
    interval = 0.1
    polls: dict[str, int] = {}
    urls: dict[str, str] = {}
    lock = threading.Lock()

    def fetch(url: str, api_key: str | None) -> dict[str, tuple[int, int]]:
        cluster = str(urllib.parse.urlsplit(url).hostname).split(".", 1)[0]
        with lock:
            polls[cluster] = polls.get(cluster, 0) + 1
            urls[cluster] = url
        return {"default": (0, 0)}

    def url(cluster: str, version: int = 1) -> str:
        return f"http://{cluster}.example/v{version}"

    def counts() -> dict[str, int]:
        with lock:
            return dict(polls)

    clusters = ("same", "shorter", "flapped", "moved", "rekeyed", "readded")
    final = {c: (url(c, 2 if c == "moved" else 1), "k2" if c == "rekeyed" else "k") for c in clusters}
    poller = StatsPoller(fetch, workers=4)
    poller.start()
    try:
        for c in clusters:
            poller.register(f"ns/{c}", url(c), "k", 0.4 if c == "shorter" else interval, requester="cluster")
        # Re-register after the first polls, at times that fall between scheduled polls.
        for _ in range(3):
            time.sleep(0.035)
            poller.register("ns/same", url("same"), "k", interval, requester="cluster")
        poller.register("ns/shorter", url("shorter"), "k", interval, requester="worker:a")
        time.sleep(0.035)
        poller.register("ns/flapped", url("flapped"), "k", interval / 2, requester="worker:a")
        poller.release("ns/flapped", "worker:a")
        poller.register("ns/moved", url("moved", 2), "k", interval, requester="cluster")
        time.sleep(0.035)
        poller.register("ns/rekeyed", url("rekeyed"), "k2", interval, requester="cluster")
        poller.unregister("ns/readded")
        poller.register("ns/readded", url("readded"), "k", interval, requester="cluster")
        time.sleep(0.3)

        # The window: reconciles keep registering the same settings, which must change nothing.
        before, start = counts(), time.monotonic()
        while time.monotonic() - start < 1.0:
            for c in clusters:
                requesters = ("cluster", "worker:a") if c == "shorter" else ("cluster",)
                for r in requesters:
                    poller.register(f"ns/{c}", *final[c], interval, requester=r)
            time.sleep(0.02)
        after, window = counts(), time.monotonic() - start
    finally:
        poller.stop()

    # One schedule: consecutive polls start at least `interval` apart (the next is due `interval` after the
    # previous one finished), so a window holds at most window/interval + 1 of them; a slow machine only
    # makes fewer.
    most = int(window / interval) + 1
    per_cluster = {c: after.get(c, 0) - before.get(c, 0) for c in clusters}
    assert all(2 <= n <= most for n in per_cluster.values()), (per_cluster, f"at most {most}")
    assert urls["moved"] == url("moved", 2)


def test_poller_threads_keep_every_cluster_on_time_while_one_server_hangs() -> None:
    """A hanging server holds one poll thread, not the others' polls: eight clusters answering in 50 ms,
    polled every 0.2 s, need two of the three threads that the hanging server leaves free, and each keeps
    its interval."""
    interval, answer = 0.2, 0.05
    polls: dict[str, int] = {}
    lock = threading.Lock()
    hang = threading.Event()
    hung = threading.Event()

    def fetch(url: str, key: str | None) -> dict[str, tuple[int, int]]:
        name = url.rsplit("/", 1)[1]
        with lock:
            polls[name] = polls.get(name, 0) + 1
        if name == "hung":
            hung.set()
            hang.wait(10)
        else:
            time.sleep(answer)
        return {"default": (0, 0)}

    poller = StatsPoller(fetch, workers=4)
    names = [f"c{i}" for i in range(8)]
    poller.start()
    try:
        poller.register("ns/hung", "http://x/hung", None, interval, requester="cluster")
        assert hung.wait(5)
        for name in names:
            poller.register(f"ns/{name}", f"http://x/{name}", None, interval, requester="cluster")
        time.sleep(0.6)
        with lock:
            start = time.monotonic()
            before = {n: polls.get(n, 0) for n in names}
        time.sleep(2.0)
        with lock:
            window = time.monotonic() - start
            during = {n: polls.get(n, 0) - before[n] for n in names}
        assert polls["hung"] == 1  # still in its first poll
    finally:
        hang.set()
        poller.stop()
    # A poll is due `interval` after the previous one ended: one per interval + answer at best. One thread
    # doing all the polling (the others left waiting) manages about 60 % of that; ask for 80 %.
    best = window / (interval + answer)
    assert all(0.8 * best <= n <= best + 1 for n in during.values()), (during, best)


def test_poller_asks_the_new_address_when_a_cluster_moves_mid_poll() -> None:
    started = threading.Event()
    release = threading.Event()
    urls: list[str] = []

    def fetch(url: str, key: str | None) -> dict[str, tuple[int, int]]:
        urls.append(url)
        if url == "http://old":
            started.set()
            release.wait(5)
            return {"q": (1, 0)}
        return {"q": (2, 0)}

    poller = StatsPoller(fetch, workers=2)
    poller.start()
    try:
        poller.register("ns/c", "http://old", "k", 60.0, requester="cluster")
        assert started.wait(5)
        poller.register("ns/c", "http://new", "k", 60.0, requester="cluster")  # its poll is in flight
        release.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (poller.result("ns/c") is None or "http://new" not in urls):
            time.sleep(0.02)
        result = poller.result("ns/c")
        # The old address's answer is dropped and the new one asked at once, not an interval later.
        assert result is not None and result.queues == {"q": (2, 0)}, (urls, result)
    finally:
        poller.stop()


def test_workload_conditions_name_the_first_problem_and_conflicts() -> None:
    from ojsctrl.controllers.cluster_status import workload_conditions

    state = deployment_state(dep())
    ok = {c["type"]: c for c in workload_conditions("Running", state, what="server", generation=3)}
    assert ok["Ready"]["status"] == "True" and ok["Ready"]["reason"] == "Running"
    assert ok["Available"]["message"] == "2/2 server replicas ready"
    assert ok["Progressing"]["reason"] == "RolloutComplete" and ok["Degraded"]["reason"] == "AsExpected"
    assert all(c["observedGeneration"] == 3 for c in ok.values())
    bad = {
        c["type"]: c
        for c in workload_conditions(
            "Error",
            state,
            what="worker",
            problems=[("InvalidSpec", "Deployment x: refused"), ("Other", "y")],
            conflicts=["Service s exists and is not owned by this resource"],
            generation=3,
        )
    }
    assert bad["Ready"]["status"] == "False" and bad["Ready"]["reason"] == "InvalidSpec"
    assert bad["Ready"]["message"] == (
        "Deployment x: refused; y; Service s exists and is not owned by this resource"
    )
    assert bad["Degraded"]["status"] == "True" and bad["Degraded"]["reason"] == "NameConflict"


def test_rollout_settled() -> None:
    from ojsctrl.controllers.cluster_status import rollout_settled

    assert rollout_settled(dep())
    assert not rollout_settled(dep(ready=1, available="False"))
    assert not rollout_settled(dep(observed=0, gen=2))
    assert not rollout_settled(dep(replicas=4, ready=2, updated=2, total=2))
    assert rollout_settled(dep(replicas=0, ready=0, updated=0, total=0, available="False"))


def test_owned_replica_counts_come_from_the_deployment_the_owner_controls() -> None:
    def dep(uid: str, controller: bool = True) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "w-worker",
                "generation": 3,
                "ownerReferences": [
                    {"apiVersion": "ojs.openjobspec.dev/v1alpha1", "kind": "OJSWorker", "name": "w",
                     "uid": uid, "controller": controller}
                ],
            },
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 3, "replicas": 3, "readyReplicas": 2},
        }  # fmt: skip

    assert owned_replica_counts(dep("u1"), "u1") == {"replicas": 3, "readyReplicas": 2}
    # Someone else's Deployment of that name, or one this owner does not control, says nothing about it.
    assert owned_replica_counts(dep("other"), "u1") == {}
    assert owned_replica_counts(dep("u1", controller=False), "u1") == {}
    assert owned_replica_counts(None, "u1") == {}
    fresh = dep("u1")
    del fresh["status"]
    assert owned_replica_counts(fresh, "u1") == {"replicas": 0, "readyReplicas": 0}


# --------------------------------------------------------------------------- whole statuses, as tables
from dataclasses import replace  # noqa: E402

from ojsctrl.controllers.cluster_status import (  # noqa: E402
    ClusterStatusInputs,
    cluster_autoscaling_condition,
    cluster_status,
)
from ojsctrl.controllers.common import condition  # noqa: E402
from ojsctrl.controllers.worker_status import WorkerStatusInputs, worker_status  # noqa: E402

MANAGED = condition("ReplicasManaged", True, "Managed", "ojsctrl sets the replicas", generation=3)


def _conds(result: Any) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in result.conditions}


WORKER = WorkerStatusInputs(
    cluster_name="jobs",
    generation=3,
    previous={},
    deployment=dep(),
    deployment_name="w-worker",
    selector="app=w",
    autoscaling_enabled=False,
    metric="queueDepth",
    cpu_utilization=None,
    spec_replicas=2,
    spec_sets_replicas=True,
    replicas_managed=MANAGED,
)
SCALING = condition("Autoscaling", True, "QueueDepth", "3 jobs", generation=3)


@pytest.mark.parametrize(
    ("changes", "phase", "ready", "autoscaling_reason", "fields"),
    [
        ({}, "Running", "True", "Disabled", {"desiredReplicas": 2, "replicas": 2, "readyReplicas": 2}),
        ({"deployment": None}, "Pending", "False", "Disabled", {"replicas": 0}),
        # A replica change written by this reconcile, not yet observed: the serving workers are Scaling.
        (
            {"deployment": dep(replicas=4, observed=0, gen=2), "scaled": True},
            "Scaling",
            "True",
            "Disabled",
            {},
        ),
        ({"draining": True}, "Draining", "True", "Disabled", {}),
        ({"conflicts": ("HPA w-worker is not ours",)}, "Degraded", "False", "Disabled", {}),
        (
            {"problems": (("InvalidSpec", "refused"),), "conflicts": ("x",)},
            "Error",
            "False",
            "Disabled",
            {},
        ),
        ({"autoscaling_enabled": True}, "Running", "True", "WaitingForStats", {}),
        (
            {"autoscaling_enabled": True, "metric": "cpu", "cpu_utilization": 70},
            "Running",
            "True",
            "HorizontalPodAutoscaler",
            {},
        ),
        (
            {"autoscaling_enabled": True, "scaling": SCALING, "desired": 5, "queue_load": (30, 2)},
            "Running",
            "True",
            "QueueDepth",
            {"desiredReplicas": 5, "queueDepth": 30, "activeJobs": 2},
        ),
        # No poll this time: the last counts and decision stay as they were.
        (
            {
                "autoscaling_enabled": True,
                "previous": {"desiredReplicas": 4, "queueDepth": 9, "activeJobs": 1},
            },
            "Running",
            "True",
            "WaitingForStats",
            {"desiredReplicas": 4, "queueDepth": 9, "activeJobs": 1},
        ),
        (
            {"last_scale": "2026-01-01T00:00:00Z"},
            "Running",
            "True",
            "Disabled",
            {"lastScaleTime": "2026-01-01T00:00:00Z"},
        ),
    ],
)
def test_worker_status_table(
    changes: dict[str, Any], phase: str, ready: str, autoscaling_reason: str, fields: dict[str, Any]
) -> None:
    result = worker_status(replace(WORKER, **changes))
    conds = _conds(result)
    assert result.phase == phase
    assert conds["Ready"]["status"] == ready
    assert conds["Autoscaling"]["reason"] == autoscaling_reason
    assert conds["ClusterFound"]["message"] == "OJSCluster jobs"
    assert conds["ReplicasManaged"] == MANAGED
    assert result.fields["selector"] == "app=w"
    for key, value in fields.items():
        assert result.fields[key] == value, key


def test_worker_status_says_spec_replicas_is_ignored_while_autoscaling() -> None:
    result = worker_status(replace(WORKER, autoscaling_enabled=True, scaling=SCALING, spec_replicas=7))
    assert "spec.replicas 7 is ignored" in _conds(result)["Autoscaling"]["message"]
    quiet = worker_status(
        replace(WORKER, autoscaling_enabled=True, scaling=SCALING, spec_sets_replicas=False)
    )
    assert "ignored" not in _conds(quiet)["Autoscaling"]["message"]


def test_worker_status_shows_workers_matched_only_when_given() -> None:
    matched = condition("WorkersMatched", True, "WorkersMatched", "2 of 2", generation=3)
    assert "WorkersMatched" not in _conds(worker_status(WORKER))
    assert _conds(worker_status(replace(WORKER, matching=matched)))["WorkersMatched"] == matched


CLUSTER = ClusterStatusInputs(
    name="jobs",
    generation=3,
    previous={},
    server_deployment=dep(),
    server_name="jobs-server",
    embedded_redis=False,
    redis_deployment=None,
    redis_name="jobs-redis",
    claim=None,
    backend_ok=True,
    autoscaling=cluster_autoscaling_condition(
        enabled=False,
        replicas=None,
        effective_replicas=2,
        target_queue_depth=100,
        min_replicas=1,
        max_replicas=3,
        generation=3,
    ),
    replicas_managed=MANAGED,
    selector="app=s",
    endpoint="http://jobs-server.ns.svc.cluster.local:8080",
    image="img:1",
    stats=None,
    last_scale=None,
)
POLLED = PollResult(at=0.0, queues={"a": (5, 1), "b": (2, 0)})
FAILED = PollResult(at=0.0, error="connection refused", reason="Timeout")
REFUSED = PollResult(at=0.0, error="401", reason="Unauthorized")


@pytest.mark.parametrize(
    ("changes", "phase", "ready_reason", "backend", "stats_reason"),
    [
        ({}, "Running", "Running", "True", "NotPolledYet"),
        ({"stats": POLLED}, "Running", "Running", "True", "Polled"),
        ({"stats": FAILED}, "Running", "Running", "True", "ServerUnreachable"),
        ({"stats": REFUSED}, "Running", "Running", "True", "APIKeyRejected"),
        (
            {
                "stats": FAILED,
                "conflicts": ("Service jobs-server is not ours",),
                "left_alone": ("queue-stats polling",),
            },
            "Degraded",
            "NameConflict",
            "True",
            "NameConflict",
        ),
        ({"server_deployment": None}, "Pending", "Pending", "True", "NotPolledYet"),
        # The embedded Redis not up yet holds the cluster at Pending and says why.
        (
            {"embedded_redis": True, "redis_deployment": dep(ready=0, available="False")},
            "Pending",
            "Pending",
            "False",
            "NotPolledYet",
        ),
        ({"embedded_redis": True, "redis_deployment": dep()}, "Running", "Running", "True", "NotPolledYet"),
        (
            {
                "embedded_redis": True,
                "redis_deployment": dep(
                    available="False", progressing="False", reason="ProgressDeadlineExceeded"
                ),
            },
            "Degraded",
            "Degraded",
            "False",
            "NotPolledYet",
        ),
        (
            {"conflicts": ("Service jobs-server is not ours",)},
            "Degraded",
            "NameConflict",
            "True",
            "NotPolledYet",
        ),
        (
            {"degraded": (("StorageChangeRefused", "no shrink"),)},
            "Degraded",
            "StorageChangeRefused",
            "True",
            "NotPolledYet",
        ),
        (
            {"problems": (("SecretNotFound", "Secret s key k not found"),), "backend_ok": False},
            "Error",
            "SecretNotFound",
            "False",
            "NotPolledYet",
        ),
    ],
)
def test_cluster_status_table(
    changes: dict[str, Any], phase: str, ready_reason: str, backend: str, stats_reason: str
) -> None:
    result = cluster_status(replace(CLUSTER, **changes))
    conds = _conds(result)
    assert result.phase == phase
    assert conds["Ready"]["reason"] == ready_reason
    assert conds["BackendReady"]["status"] == backend
    assert conds["QueueStatsAvailable"]["reason"] == stats_reason
    assert result.conditions[-1] == MANAGED
    assert result.fields["endpoint"] == CLUSTER.endpoint and result.fields["image"] == "img:1"


def test_cluster_status_fields_from_a_poll_and_kept_without_one() -> None:
    polled = cluster_status(replace(CLUSTER, stats=POLLED, last_scale="2026-01-01T00:00:00Z"))
    assert polled.fields["queueDepth"] == 7 and polled.fields["activeJobs"] == 1
    assert [q["name"] for q in polled.fields["queues"]] == ["a", "b"]
    assert polled.fields["lastScaleTime"] == "2026-01-01T00:00:00Z"
    previous = {"queueDepth": 7, "activeJobs": 1, "queues": polled.fields["queues"], "phase": "Running"}
    failed = cluster_status(replace(CLUSTER, stats=FAILED, previous=previous))
    assert failed.fields["queueDepth"] == 7 and failed.fields["queues"] == polled.fields["queues"]
    assert "lastScaleTime" not in failed.fields


@pytest.mark.parametrize("stats", [POLLED, FAILED, REFUSED])
def test_a_restart_keeps_what_the_last_poll_found_until_its_own_first_poll(stats: PollResult) -> None:
    before = cluster_status(replace(CLUSTER, stats=stats))
    previous = {"conditions": before.conditions, **before.fields}
    restarted = cluster_status(replace(CLUSTER, stats=None, previous=previous))
    assert _conds(restarted)["QueueStatsAvailable"] == _conds(before)["QueueStatsAvailable"]
    assert restarted.fields == before.fields  # nothing to write
    # A generation later, the finding is the same but observed at the new generation.
    later = cluster_status(replace(CLUSTER, generation=4, stats=None, previous=previous))
    assert _conds(later)["QueueStatsAvailable"]["observedGeneration"] == 4
    assert _conds(later)["QueueStatsAvailable"]["reason"] == _conds(before)["QueueStatsAvailable"]["reason"]


def test_without_any_poll_on_record_the_cluster_waits_for_the_first() -> None:
    conflict = cluster_status(replace(CLUSTER, left_alone=("queue-stats polling",)))
    previous = {"conditions": conflict.conditions}
    # A conflict's finding is not a poll's: once the name is free again, the cluster waits for a poll.
    assert _conds(cluster_status(replace(CLUSTER, previous=previous)))["QueueStatsAvailable"]["reason"] == (
        "NotPolledYet"
    )


def test_cluster_status_keeps_the_extra_conditions_in_order() -> None:
    monitoring = condition("MonitoringReady", True, "NotRequested", generation=3)
    result = cluster_status(replace(CLUSTER, extra_conditions=(monitoring,)))
    assert [c["type"] for c in result.conditions][-2:] == ["MonitoringReady", "ReplicasManaged"]


def test_cluster_autoscaling_condition_says_spec_replicas_is_ignored() -> None:
    on = cluster_autoscaling_condition(
        enabled=True,
        replicas=4,
        effective_replicas=4,
        target_queue_depth=100,
        min_replicas=1,
        max_replicas=3,
        generation=3,
    )
    assert on["reason"] == "QueueDepth" and "spec.replicas 4 is ignored" in on["message"]
    assert "1-3 servers" in on["message"]


def test_a_failed_redis_rollout_degrades_even_while_an_old_pod_serves() -> None:
    failing = dep(progressing="False", reason="ProgressDeadlineExceeded")  # still Available
    result = cluster_status(replace(CLUSTER, embedded_redis=True, redis_deployment=failing))
    assert result.phase == "Degraded"
    assert _conds(result)["BackendReady"]["status"] == "True"


def test_an_unbound_claim_is_named_while_redis_waits() -> None:
    claim = {"metadata": {"name": "jobs-redis"}, "status": {"phase": "Pending"}}
    waiting = replace(CLUSTER, embedded_redis=True, redis_deployment=None, claim=claim)
    message = _conds(cluster_status(waiting))["BackendReady"]["message"]
    assert message.startswith("embedded Redis Deployment jobs-redis not available yet (0 of 1 ready)")


@pytest.mark.parametrize(
    "conditions",
    [
        [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
        [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
        ],
        [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"},
        ],
    ],
)
def test_a_compact_cached_deployment_reads_as_the_full_one(conditions: list[dict[str, Any]]) -> None:
    # The Deployments' cache keeps of each condition only what deployment_state reads: the state (phase,
    # failure message included) of the cached copy is that of the full object.
    import copy

    from ojsctrl.controllers.common import compact_deployment

    full = dep()
    full["spec"]["template"] = {"spec": {"containers": [{"name": "worker", "image": "ojs:1"}]}}
    full["status"]["conditions"] = [
        {
            **c,
            "message": f"the {c['type']} message",
            "lastUpdateTime": "2026-12-06T10:00:00Z",
            "lastTransitionTime": "2026-12-06T09:00:00Z",
        }
        for c in conditions
    ]
    cached = compact_deployment(copy.deepcopy(full))
    assert deployment_state(cached) == deployment_state(full)
    for c in cached["status"]["conditions"]:
        assert "lastUpdateTime" not in c and "lastTransitionTime" not in c
        failing = (c["type"], c["status"]) in (("Progressing", "False"), ("ReplicaFailure", "True"))
        assert ("message" in c) == failing
