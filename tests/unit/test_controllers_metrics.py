"""Bounded label sets (design.md §bounded-labels): a tenant's queue names cannot grow /metrics without end."""

from __future__ import annotations

from prometheus_client import generate_latest

from ojsctrl.controllers import metrics
from ojsctrl.runtime.metrics import REGISTRY


def _series(name: str, **labels: str) -> list[dict[str, str]]:
    out = []
    for fam in REGISTRY.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(dict(s.labels))
    return out


def _queues(prefix: str, n: int, long: bool = False) -> list[dict[str, object]]:
    pad = "x" * 1000 if long else ""
    return [{"name": f"{prefix}{i}{pad}", "available": n - i, "active": 1} for i in range(n)]


def test_new_queue_names_every_poll_keep_at_most_twenty_series_per_cluster() -> None:
    for poll in range(50):
        # 20 new 1000-character names per poll, as the attack in the hardening review did.
        metrics.publish_queues("ns-a", "c", _queues(f"p{poll}-", 20, long=True))
    depth = _series("ojs_cluster_queue_depth", namespace="ns-a", cluster="c")
    assert len(depth) == 20
    assert all(len(s["queue"]) <= metrics.MAX_LABEL_LENGTH for s in depth)
    assert {s["queue"][:4] for s in depth} == {"p49-"}
    assert len(_series("ojs_cluster_active_jobs", namespace="ns-a", cluster="c")) == 20


def test_more_than_twenty_queues_publish_the_first_twenty() -> None:
    metrics.publish_queues("ns-b", "c", _queues("q", 45))
    names = {s["queue"] for s in _series("ojs_cluster_queue_depth", namespace="ns-b", cluster="c")}
    assert names == {f"q{i}" for i in range(20)}


def test_long_names_that_share_a_prefix_stay_apart() -> None:
    a, b = "z" * 100 + "a", "z" * 100 + "b"
    assert metrics.queue_label(a) != metrics.queue_label(b)
    assert len(metrics.queue_label(a)) == metrics.MAX_LABEL_LENGTH
    assert metrics.queue_label("short") == "short"


def test_deleted_objects_lose_every_series() -> None:
    metrics.publish_queues("ns-c", "gone", _queues("q", 3))
    metrics.scaled("ns-c", "OJSCluster", "gone", "up")
    metrics.WORKER_DESIRED.labels("ns-c", "w").set(3)
    metrics.scaled("ns-c", "OJSWorker", "w", "down")
    metrics.forget_cluster("ns-c", "gone")
    metrics.forget_worker("ns-c", "w")
    text = generate_latest(REGISTRY).decode()
    assert 'namespace="ns-c"' not in text


def test_no_created_series_and_process_metrics_present() -> None:
    metrics.scaled("ns-d", "OJSWorker", "w", "up")
    text = generate_latest(REGISTRY).decode()
    assert "_created" not in text
    assert "process_resident_memory_bytes" in text
    assert "python_info" in text
    assert 'ojs_autoscaler_scale_total{direction="up",kind="OJSWorker",name="w",namespace="ns-d"}' in text


def test_forgetting_one_object_keeps_the_others_series() -> None:
    metrics.publish_queues("ns-e", "gone", _queues("q", 2))
    metrics.publish_queues("ns-e", "kept", _queues("q", 2))
    metrics.WORKER_DESIRED.labels("ns-e", "gone").set(2)
    metrics.WORKER_DESIRED.labels("ns-e", "kept").set(4)
    metrics.scaled("ns-e", "OJSCluster", "kept", "up")
    metrics.forget_cluster("ns-e", "gone")
    metrics.forget_worker("ns-e", "gone")
    assert _series("ojs_cluster_queue_depth", namespace="ns-e", cluster="gone") == []
    assert len(_series("ojs_cluster_queue_depth", namespace="ns-e", cluster="kept")) == 2
    assert _series("ojs_worker_desired_replicas", namespace="ns-e", worker="gone") == []
    assert len(_series("ojs_worker_desired_replicas", namespace="ns-e", worker="kept")) == 1
    scales = [s for s in _series("ojs_autoscaler_scale_total", namespace="ns-e") if s["name"] == "kept"]
    assert len(scales) == 1


def test_decision_latency_is_the_time_since_the_poll() -> None:
    def count_and_sum() -> tuple[float, float]:
        labels = {"kind": "TestKind"}
        count = REGISTRY.get_sample_value("ojs_autoscaler_decision_latency_seconds_count", labels) or 0.0
        total = REGISTRY.get_sample_value("ojs_autoscaler_decision_latency_seconds_sum", labels) or 0.0
        return count, total

    before = count_and_sum()
    metrics.decision_written("TestKind", polled_at=100.0, now=103.5)
    metrics.decision_written("TestKind", polled_at=100.0, now=99.0)  # a clock step back counts as 0
    after = count_and_sum()
    assert after[0] - before[0] == 2
    assert after[1] - before[1] == 3.5
    le_5 = REGISTRY.get_sample_value(
        "ojs_autoscaler_decision_latency_seconds_bucket", {"kind": "TestKind", "le": "5.0"}
    )
    le_2 = REGISTRY.get_sample_value(
        "ojs_autoscaler_decision_latency_seconds_bucket", {"kind": "TestKind", "le": "2.0"}
    )
    assert (le_5 or 0) - (le_2 or 0) == 1


def test_failed_polls_are_the_pollers_count_per_cluster() -> None:
    # The counter is read from the poller at scrape time: a cluster the poller dropped has no series, nor
    # one with no failed poll.
    counts = [("ns-f/broken", 3), ("ns-f/fine", 0)]
    metrics.count_failed_polls(lambda: list(counts))
    try:
        text = generate_latest(REGISTRY).decode()
        assert 'ojs_queue_stats_errors_total{cluster="broken",namespace="ns-f"} 3.0' in text
        assert 'cluster="fine"' not in text
        counts.pop(0)
        assert 'cluster="broken"' not in generate_latest(REGISTRY).decode()
    finally:
        metrics.count_failed_polls(lambda: [])
