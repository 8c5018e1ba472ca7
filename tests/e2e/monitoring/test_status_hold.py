"""Lean at scale against the real API server: the status writer holds writes of polled numbers alone for
its minimum interval, and writes a change of phase or replicas at once."""

from __future__ import annotations

import time
from typing import Any

from ojsctrl.controllers.common import OJSWORKERS, StatusWriter, condition
from ojsctrl.runtime.client import EVENTS
from ojsctrl.runtime.events import EventRecorder
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import driver, namespace, ojs_worker

SPEC = {"clusterRef": "jobs", "jobTypes": ["t.run"], "queues": ["q"], "image": "example.invalid/w:1"}


def test_polled_numbers_wait_for_the_minimum_interval_and_replicas_do_not(crds: ControlPlane) -> None:
    # No operator runs here: this test is the only writer of the worker's status.
    client = driver(crds)
    ns = namespace(crds, "hold")
    client.create(OJSWORKERS, ojs_worker(ns, "w", SPEC), ns)
    writer = StatusWriter(
        client, OJSWORKERS, EventRecorder(client, "ojsctrl-test"), grace=0, min_interval=3.0
    )

    def write(**fields: Any) -> float | None:
        obj = client.get(OJSWORKERS, "w", ns)
        conds = [condition("Ready", True, "Running", f"{fields.get('queueDepth')} waiting", generation=1)]
        return writer.write(obj, str(fields.pop("phase", "Running")), conds, fields)

    def live() -> dict[str, Any]:
        return dict(client.get(OJSWORKERS, "w", ns).get("status") or {})

    assert write(replicas=1, queueDepth=5) is None  # the first status: at once
    assert live()["queueDepth"] == 5
    written = time.monotonic()

    held = write(replicas=1, queueDepth=7)  # only the number (and Ready's message) moved: held
    assert held is not None and 0 < held <= 3.0
    assert live()["queueDepth"] == 5

    assert write(replicas=2, queueDepth=8) is None  # replicas changed: at once, with the latest number
    assert (live()["replicas"], live()["queueDepth"]) == (2, 8)
    written = time.monotonic()

    assert write(replicas=2, queueDepth=9) is not None
    assert write(phase="Scaling", replicas=2, queueDepth=9) is None  # a phase change: at once
    assert (live()["phase"], live()["queueDepth"]) == ("Scaling", 9)
    written = time.monotonic()

    held = write(phase="Scaling", replicas=2, queueDepth=10)
    assert held is not None
    time.sleep(max(0.0, written + 3.0 - time.monotonic()) + 0.1)
    assert write(phase="Scaling", replicas=2, queueDepth=10) is None  # due: flushed
    assert live()["queueDepth"] == 10


def test_a_rollout_ending_is_no_event_and_pods_lost_is_one(crds: ControlPlane) -> None:
    """Pending -> Running (a new object whose first status outlasted the grace, pods that came back) is
    the normal end of a rollout: no event. Running -> Pending is news: one Normal event."""
    client = driver(crds)
    ns = namespace(crds, "arrival")
    client.create(OJSWORKERS, ojs_worker(ns, "w", SPEC), ns)
    # Events sent inline (the recorder is not started), so they are there when write() returns.
    writer = StatusWriter(client, OJSWORKERS, EventRecorder(client, "ojsctrl-test"), grace=0)

    def write(phase: str) -> None:
        obj = client.get(OJSWORKERS, "w", ns)
        ready = phase == "Running"
        conds = [condition("Ready", ready, phase, f"phase {phase}", generation=1)]
        assert writer.write(obj, phase, conds, {"replicas": 1, "readyReplicas": int(ready)}) is None
        assert client.get(OJSWORKERS, "w", ns)["status"]["phase"] == phase

    def reasons() -> list[str]:
        items, _ = client.list(EVENTS, ns)
        return [e["reason"] for e in items if e["involvedObject"]["name"] == "w"]

    write("Pending")
    write("Running")
    assert reasons() == []
    write("Pending")
    assert reasons() == ["Pending"]
    write("Running")
    assert reasons() == ["Pending"]
