"""The series the shipped alerts added (ojsctrl.controllers.metrics): one phase series per object, the
autoscaler's ceiling and backlog, the time of the last successful queue read, all gone with the object."""

from __future__ import annotations

import time

from ojsctrl.controllers import metrics
from ojsctrl.runtime.metrics import REGISTRY


def _series(name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in REGISTRY.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_a_phase_change_replaces_the_series() -> None:
    metrics.cluster_phase("al-a", "c", "Pending")
    metrics.cluster_phase("al-a", "c", "Degraded")
    metrics.cluster_phase("al-a", "other", "Running")
    assert _series("ojs_cluster_phase", namespace="al-a", cluster="c") == {
        (("cluster", "c"), ("namespace", "al-a"), ("phase", "Degraded")): 1.0
    }
    metrics.cluster_phase("al-a", "c", "Degraded")  # unchanged: still one series
    assert len(_series("ojs_cluster_phase", namespace="al-a", cluster="c")) == 1
    metrics.worker_phase("al-a", "w", "Draining")
    metrics.worker_phase("al-a", "w", "Running")
    assert list(_series("ojs_worker_phase", namespace="al-a", worker="w")) == [
        (("namespace", "al-a"), ("phase", "Running"), ("worker", "w"))
    ]
    # Another object in the namespace keeps its own.
    assert len(_series("ojs_cluster_phase", namespace="al-a", cluster="other")) == 1


def test_worker_scaling_and_forget() -> None:
    metrics.worker_scaling("al-b", "w", backlog=95, max_replicas=3)
    metrics.worker_phase("al-b", "w", "Scaling")
    assert _series("ojs_worker_queue_backlog", namespace="al-b", worker="w") == {
        (("namespace", "al-b"), ("worker", "w")): 95.0
    }
    assert list(_series("ojs_worker_max_replicas", namespace="al-b", worker="w").values()) == [3.0]
    metrics.forget_worker("al-b", "w")
    for name in ("ojs_worker_queue_backlog", "ojs_worker_max_replicas", "ojs_worker_phase"):
        assert not _series(name, namespace="al-b", worker="w"), name


def test_a_successful_read_stamps_the_cluster_and_forget_removes_it() -> None:
    before = time.time()
    metrics.publish_queues("al-c", "c", [{"name": "q", "available": 1, "active": 0}])
    (stamp,) = _series(
        "ojs_queue_stats_last_success_timestamp_seconds", namespace="al-c", cluster="c"
    ).values()
    assert before <= stamp <= time.time()
    metrics.cluster_phase("al-c", "c", "Running")
    metrics.forget_cluster("al-c", "c")
    assert not _series("ojs_queue_stats_last_success_timestamp_seconds", namespace="al-c", cluster="c")
    assert not _series("ojs_cluster_phase", namespace="al-c", cluster="c")
