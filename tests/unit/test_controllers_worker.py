"""Worker-controller text a user relies on, checked without a cluster (the drain itself runs in e2e)."""

from __future__ import annotations

from ojsctrl.controllers.stats import PollResult
from ojsctrl.controllers.worker import UNMATCHED_REASON, autoscales_on_polls, poll_is_news, unmatched_message


def test_unmatched_message_names_the_sdk_conventions() -> None:
    msg = unmatched_message(40)
    for needed in (
        "plain",
        "graceful shutdown",
        "worker_<pod name>_",
        "Go SDK",
        "hostname",
        "metadata.kubernetes_pod",
        "Python",
        "JS",
        "25s",
        "terminationGracePeriodSeconds is 40s",
        "SIGTERM",
    ):
        assert needed in msg, needed
    assert "OJS_WORKER_ID" not in msg
    assert "(0 live workers reported by the server)" in unmatched_message(40, 0)
    assert UNMATCHED_REASON == "WorkerIdsUnmatched"


def test_only_workers_scaled_on_the_counts_care_about_a_failed_poll() -> None:
    def worker(auto: object) -> dict[str, object]:
        return {"spec": {"clusterRef": "c", "autoScaling": auto} if auto is not None else {"clusterRef": "c"}}

    assert autoscales_on_polls(worker({"enabled": True}))  # queueDepth is the default metric
    assert autoscales_on_polls(worker({"enabled": True, "metric": "waitTime"}))
    assert not autoscales_on_polls(worker({"enabled": True, "metric": "cpu"}))  # the HPA decides
    assert not autoscales_on_polls(worker({"enabled": False}))
    assert not autoscales_on_polls(worker({"metric": "queueDepth"}))  # disabled by default
    assert not autoscales_on_polls(worker(None))


def _w(queues: list[str] | None, auto: dict[str, object] | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"clusterRef": "c"}
    if queues is not None:
        spec["queues"] = queues
    if auto is not None:
        spec["autoScaling"] = auto
    return {"spec": spec}


def _ok(completed: dict[str, int] | None = None, **queues: tuple[int, int]) -> PollResult:
    return PollResult(1.0, dict(queues), dict(completed or {}))


FAILED = PollResult(1.0, error="server down", reason="Unreachable")
SCALED = {"enabled": True}


def test_a_poll_wakes_a_worker_only_when_its_own_queues_moved() -> None:
    before = _ok(a=(0, 0), b=(0, 0))
    after = _ok(a=(15, 0), b=(0, 0))  # one queue of the cluster got busy
    for auto in (None, SCALED):
        assert poll_is_news(_w(["a"], auto), before, after)
        assert not poll_is_news(_w(["b"], auto), before, after)
        assert poll_is_news(_w(["b", "a"], auto), before, after)
    # No queues in the spec: the API model's default queue.
    assert not poll_is_news(_w(None), before, after)
    assert poll_is_news(_w(None), _ok(default=(1, 0)), _ok(default=(2, 0)))
    # A queue that appears or goes is a change of its numbers.
    assert poll_is_news(_w(["b"], SCALED), _ok(a=(1, 0)), _ok(a=(1, 0), b=(0, 0)))


def test_success_and_failure_matter_to_autoscaled_workers_only() -> None:
    good = _ok(a=(3, 1))
    for autoscaled, wakes_on_failure in ((_w(["a"], SCALED), True), (_w(["a"]), False)):
        assert poll_is_news(autoscaled, good, FAILED) is wakes_on_failure
        assert poll_is_news(autoscaled, None, FAILED) is wakes_on_failure
        # Back from a failure: the numbers may differ from what the status kept.
        assert poll_is_news(autoscaled, FAILED, good)
        assert poll_is_news(autoscaled, None, good)
    # CPU-mode autoscaling is the HPA's: the counts are shown, not acted on.
    assert not poll_is_news(_w(["a"], {"enabled": True, "metric": "cpu"}), good, FAILED)
    # A different failure is news to the autoscaler (its reason shows in the status).
    other = PollResult(1.0, error="401", reason="Unauthorized")
    assert poll_is_news(_w(["a"], SCALED), FAILED, other)


def test_completed_counters_of_its_queues_wake_an_autoscaled_worker() -> None:
    before = _ok({"a": 10, "b": 5}, a=(2, 1), b=(0, 0))
    assert poll_is_news(_w(["a"], SCALED), before, _ok({"a": 11, "b": 5}, a=(2, 1), b=(0, 0)))
    assert not poll_is_news(_w(["a"], SCALED), before, _ok({"a": 10, "b": 9}, a=(2, 1), b=(0, 0)))
    assert not poll_is_news(_w(["a"]), before, _ok({"a": 11, "b": 5}, a=(2, 1), b=(0, 0)))
