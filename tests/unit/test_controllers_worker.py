"""Worker-controller text a user relies on, checked without a cluster (the drain itself runs in e2e)."""

from __future__ import annotations

from ojsctrl.controllers.worker import UNMATCHED_REASON, unmatched_message


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
