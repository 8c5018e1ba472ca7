"""Worker-controller text a user relies on, checked without a cluster (the drain itself runs in e2e)."""

from __future__ import annotations

from ojsctrl.controllers.worker import UNMATCHED_REASON, autoscales_on_polls, unmatched_message


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
