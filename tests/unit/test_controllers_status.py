"""Pure status logic and the stats poller's scheduling, without a cluster."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ojsctrl.controllers.cluster_status import deployment_state, highest, workload_phase
from ojsctrl.controllers.common import merge_conditions, status_unchanged
from ojsctrl.controllers.stats import StatsPoller, top_queues


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
        (dep(progressing="False", reason="ProgressDeadlineExceeded"), "Degraded"),
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
