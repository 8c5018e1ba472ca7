"""The pieces the worker reconciler's wait-time, fallback and pause wiring is built from: queue counts
with ``completed``, the poller's consecutive failures, per-worker memory, status.autoscaling in the pure
status and the autoscaling input series."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import generate_latest

from ojsctrl.controllers import metrics
from ojsctrl.controllers.common import condition
from ojsctrl.controllers.memory import ObjectMemory
from ojsctrl.controllers.stats import StatsPoller, split_counts
from ojsctrl.controllers.worker_status import WorkerStatusInputs, worker_status
from ojsctrl.ojs.errors import OJSError
from ojsctrl.ojs.waittime import Estimator, Sample, StartupTracker
from ojsctrl.ojs.wire import parse_admin_queue, parse_queue_stats
from ojsctrl.runtime.metrics import REGISTRY


@pytest.mark.parametrize(
    "body",
    [
        {"queue": {"name": "q", "available": 3, "active": 1, "completed": 40}},
        {"queue": "q", "stats": {"available": 3, "active": 1, "completed": 40}},
    ],
)
def test_queue_stats_carry_completed_in_both_shapes(body: dict[str, Any]) -> None:
    counts = parse_queue_stats("q", body, "u")
    assert (counts.available, counts.active, counts.completed) == (3, 1, 40)


def test_admin_queue_carries_completed_and_a_missing_one_is_zero() -> None:
    item = {"name": "q", "counts": {"available": 2, "active": 0, "completed": 7}}
    assert parse_admin_queue(item, "u").completed == 7
    assert parse_admin_queue({"name": "q", "counts": {"available": 2, "active": 0}}, "u").completed == 0
    assert (
        parse_admin_queue(
            {"name": "q", "counts": {"available": 2, "active": 0, "completed": None}}, "u"
        ).completed
        == 0
    )


def test_a_bad_completed_count_names_the_field() -> None:
    with pytest.raises(OJSError, match=r"counts\.completed of queue 'q'"):
        parse_admin_queue({"name": "q", "counts": {"available": 2, "active": 0, "completed": -1}}, "u")
    with pytest.raises(OJSError, match="completed of queue 'q'"):
        parse_queue_stats("q", {"queue": {"available": 1, "active": 0, "completed": "x"}}, "u")


def test_split_counts_takes_both_tuple_sizes() -> None:
    queues, completed = split_counts({"a": (1, 2, 30), "b": (4, 5)})
    assert queues == {"a": (1, 2), "b": (4, 5)}
    assert completed == {"a": 30}


def test_poller_counts_consecutive_failures_and_resets_them_on_a_good_poll() -> None:
    state = {"fail": True, "completed": 0}

    def fetch(url: str, key: str | None) -> dict[str, tuple[int, int, int]]:
        if state["fail"]:
            raise RuntimeError("server down")
        return {"default": (1, 0, state["completed"])}

    poller = StatsPoller(fetch, workers=1)
    changes: list[str] = []
    poller.subscribe(changes.append)
    poller.start()
    try:
        poller.register("ns/c", "http://x", None, 0.05)

        def wait(check: Any) -> Any:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                r = poller.result("ns/c")
                if r is not None and check(r):
                    return r
                time.sleep(0.01)
            raise AssertionError(poller.result("ns/c"))

        failed = wait(lambda r: r.consecutive_failures >= 3)
        assert not failed.ok and failed.failures >= 3
        state["fail"] = False
        good = wait(lambda r: r.ok)
        assert good.consecutive_failures == 0 and good.failures >= 3
        assert good.completed == {"default": 0}
        # A moving completed counter is a change subscribers hear of, though the depths hold.
        before = len(changes)
        state["completed"] = 5
        wait(lambda r: r.completed == {"default": 5})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(changes) == before:
            time.sleep(0.01)
        assert len(changes) > before
        state["fail"] = True
        again = wait(lambda r: not r.ok)
        assert again.consecutive_failures == 1
    finally:
        poller.stop()


def test_memory_keeps_wait_state_per_worker_and_forgets_it() -> None:
    memory = ObjectMemory()
    est = Estimator().observe(Sample(0.0, 1, 1, 0))
    tracker = StartupTracker().scaled_up(0.0, 3)
    memory.set_wait_state("ns/a", est, tracker)
    assert memory.wait_state("ns/a") == (est, tracker)
    assert memory.wait_state("ns/b") == (None, None)
    memory.set_wait_state("ns/a", None, None)
    assert memory.wait_state("ns/a") == (None, None)
    memory.set_wait_state("ns/a", est, tracker)
    memory.forget("ns/a")
    assert memory.wait_state("ns/a") == (None, None)


def test_memory_returns_the_reason_before() -> None:
    memory = ObjectMemory()
    assert memory.note_reason("ns/a", "ScaledUp") is None
    assert memory.note_reason("ns/a", "ScaledUp") == "ScaledUp"
    assert memory.note_reason("ns/a", "Paused") == "ScaledUp"
    assert memory.note_reason("ns/b", "Fallback") is None


MANAGED = condition("ReplicasManaged", True, "Managed", "", generation=1)
BLOCK = {
    "metric": "waitTime",
    "recommendation": 3,
    "desiredReplicas": 3,
    "reason": "ScaledUp",
    "message": "m",
}
INPUTS = WorkerStatusInputs(
    cluster_name="jobs",
    generation=1,
    previous={"autoscaling": {"metric": "waitTime", "reason": "Stable"}},
    deployment=None,
    deployment_name="w-worker",
    selector="app=w",
    autoscaling_enabled=True,
    metric="waitTime",
    cpu_utilization=None,
    spec_replicas=1,
    spec_sets_replicas=False,
    replicas_managed=MANAGED,
)


def test_status_autoscaling_written_kept_or_dropped() -> None:
    assert worker_status(replace(INPUTS, autoscaling=BLOCK)).fields["autoscaling"] == BLOCK
    # Not decided this reconcile: the last decision stays while the operator autoscales.
    assert worker_status(INPUTS).fields["autoscaling"] == {"metric": "waitTime", "reason": "Stable"}
    assert worker_status(replace(INPUTS, metric="queueDepth")).fields["autoscaling"]["reason"] == "Stable"
    # With cpu (an HPA decides) or autoscaling off it no longer explains the replicas.
    assert "autoscaling" not in worker_status(replace(INPUTS, metric="cpu")).fields
    assert "autoscaling" not in worker_status(replace(INPUTS, autoscaling_enabled=False)).fields


def _inputs(namespace: str, worker: str) -> dict[str, float]:
    out = {}
    for fam in REGISTRY.collect():
        for s in fam.samples:
            if (
                s.name == "ojs_worker_autoscaling_input"
                and s.labels["namespace"] == namespace
                and s.labels["worker"] == worker
            ):
                out[s.labels["input"]] = s.value
    return out


def test_autoscaling_input_series_are_bounded_replaced_and_forgotten() -> None:
    metrics.worker_autoscaling_inputs(
        "ns-in", "w", {"depth": 4, "active": 2, "service_time": 1.5, "arrival_rate": None, "other": 9}
    )
    assert _inputs("ns-in", "w") == {"depth": 4, "active": 2, "service_time": 1.5}
    # An input that is no longer measured loses its series.
    metrics.worker_autoscaling_inputs("ns-in", "w", {"depth": 5})
    assert _inputs("ns-in", "w") == {"depth": 5}
    metrics.worker_autoscaling_inputs("ns-in", "keep", {"depth": 1})
    metrics.forget_worker("ns-in", "w")
    assert _inputs("ns-in", "w") == {}
    assert _inputs("ns-in", "keep") == {"depth": 1}
    metrics.forget_worker("ns-in", "keep")
    assert 'namespace="ns-in"' not in generate_latest(REGISTRY).decode()


def test_estimator_fed_from_the_same_poll_twice_is_one_sample() -> None:
    # The reconciler may read one poll result in several reconciles; its time makes the repeats harmless.
    est = Estimator().observe(Sample(10.0, 5, 2, 100)).observe(Sample(11.0, 5, 2, 110))
    assert est.observe(Sample(11.0, 5, 2, 110)) == replace(est, last=Sample(11.0, 5, 2, 110))
