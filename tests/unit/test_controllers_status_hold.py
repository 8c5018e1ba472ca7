"""Which status writes wait for --status-min-interval and for spare tokens: only those that change polled
numbers alone."""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ojsctrl.cli import build_parser
from ojsctrl.controllers.common import OJSWORKERS, StatusWriter, only_polled_numbers_changed
from ojsctrl.runtime.client import Client, ClientOptions
from ojsctrl.runtime.events import EventRecorder

JSON = dict[str, Any]


def live() -> JSON:
    return {
        "phase": "Running",
        "observedGeneration": 3,
        "replicas": 2,
        "readyReplicas": 2,
        "desiredReplicas": 2,
        "queueDepth": 15,
        "activeJobs": 4,
        "queues": [{"name": "q", "available": 15, "active": 4}],
        "autoscaling": {
            "metric": "waitTime",
            "recommendation": 2,
            "desiredReplicas": 2,
            "reason": "Stable",
            "message": "wait 3.1s within 30s",
            "inputs": {"depth": 15, "active": 4, "arrivalRate": "1.20"},
        },
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "2/2",
                "observedGeneration": 3,
            },
            {
                "type": "Autoscaling",
                "status": "True",
                "reason": "Stable",
                "message": "15 jobs waiting",
                "observedGeneration": 3,
            },
        ],
    }


def with_(**changes: Any) -> JSON:
    out = live()
    out.update(changes)
    return out


def with_condition(index: int, **changes: Any) -> JSON:
    out = live()
    out["conditions"] = [dict(c) for c in out["conditions"]]
    out["conditions"][index].update(changes)
    return out


@pytest.mark.parametrize(
    ("what", "desired", "held"),
    [
        ("nothing changed", live(), False),
        ("queueDepth", with_(queueDepth=16), True),
        (
            "activeJobs and queues",
            with_(activeJobs=5, queues=[{"name": "q", "available": 15, "active": 5}]),
            True,
        ),
        ("a condition's message", with_condition(1, message="16 jobs waiting"), True),
        ("numbers and a message", {**with_condition(1, message="30 waiting"), "queueDepth": 30}, True),
        ("phase", with_(phase="Scaling"), False),
        ("replicas", with_(replicas=3, queueDepth=40), False),
        ("desiredReplicas", with_(desiredReplicas=4, queueDepth=40), False),
        ("readyReplicas", with_(readyReplicas=1), False),
        ("observedGeneration", with_(observedGeneration=4), False),
        ("a condition's status", with_condition(0, status="False"), False),
        ("a condition's reason", with_condition(1, reason="Paused"), False),
        ("a condition's generation", with_condition(1, observedGeneration=4), False),
        (
            "a new condition",
            {**live(), "conditions": [*live()["conditions"], {"type": "X", "status": "True"}]},
            False,
        ),
        ("another field", with_(endpoint="http://x:8080"), False),
        (
            "autoscaling inputs, recommendation and message",
            with_(
                autoscaling={
                    **live()["autoscaling"],
                    "recommendation": 3,
                    "message": "wait 4.0s within 30s",
                    "inputs": {"depth": 20, "active": 4, "arrivalRate": "1.40"},
                }
            ),
            True,
        ),
        # Stable -> ScaleDownStabilizing with the same desiredReplicas: the autoscaler's routine, held.
        (
            "autoscaling reason, routine to routine",
            with_(autoscaling={**live()["autoscaling"], "reason": "ScaleDownStabilizing"}),
            True,
        ),
        (
            "autoscaling reason, to a fallback",
            with_(autoscaling={**live()["autoscaling"], "reason": "Fallback"}),
            False,
        ),
        (
            "Autoscaling condition reason, routine to routine",
            {
                **live(),
                "conditions": [
                    {**c, "reason": "ScaleDownStabilizing"} if c["type"] == "Autoscaling" else c
                    for c in live()["conditions"]
                ],
            },
            True,
        ),
        (
            "Autoscaling condition reason, to stats unavailable",
            {
                **live(),
                "conditions": [
                    {**c, "status": "False", "reason": "StatsUnavailable"}
                    if c["type"] == "Autoscaling"
                    else c
                    for c in live()["conditions"]
                ],
            },
            False,
        ),
        (
            "autoscaling desiredReplicas",
            with_(autoscaling={**live()["autoscaling"], "desiredReplicas": 3}),
            False,
        ),
        ("autoscaling removed", {k: v for k, v in live().items() if k != "autoscaling"}, False),
    ],
)
def test_only_polled_numbers_are_held(what: str, desired: JSON, held: bool) -> None:
    assert only_polled_numbers_changed(desired, live()) is held, what


def test_a_first_status_is_never_held() -> None:
    assert only_polled_numbers_changed({"queueDepth": 1}, None) is True  # but the writer has no last write
    assert only_polled_numbers_changed({"phase": "Pending", "queueDepth": 1}, None) is False


def test_status_min_interval_flag() -> None:
    assert build_parser().parse_args([]).status_min_interval == 30.0
    assert build_parser().parse_args(["--status-min-interval", "1m"]).status_min_interval == 60.0
    assert build_parser().parse_args(["--status-min-interval", "0"]).status_min_interval == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--status-min-interval", "-1s"])
    assert isinstance(build_parser().parse_args([]), argparse.Namespace)


@pytest.fixture
def api() -> Iterator[tuple[str, list[str]]]:
    """A loopback endpoint that answers every PATCH and POST with an empty object and records its method
    and path (enough for a status apply and an event)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"{self.command} {self.path.split('?')[0]}")
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PATCH

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def worker_obj(status: JSON) -> JSON:
    return {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSWorker",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "generation": 3},
        "status": status,
    }


def test_due_polled_numbers_wait_for_spare_tokens_and_decisions_do_not(
    api: tuple[str, list[str]],
) -> None:
    """Under load the polled numbers use only the tokens the other writes leave: with the client's rate
    limiter below half its burst, a due write of numbers alone is put off (no request), a change of
    replicas goes at once, and the numbers go once the tokens are back."""
    from kubernetes import client as k8s

    url, seen = api
    cfg = k8s.Configuration()
    cfg.host = url
    client = Client(cfg, ClientOptions(qps=20.0, burst=10, max_retries=0))
    writer = StatusWriter(client, OJSWORKERS, EventRecorder(client, "test"), grace=0, min_interval=30.0)
    now = live()
    conds = now["conditions"]
    extra = {k: v for k, v in now.items() if k not in ("phase", "observedGeneration", "conditions")}
    numbers = {**extra, "queueDepth": 16}
    for _ in range(10):
        client._bucket.reserve()  # other writes took the burst
    left = writer.write(worker_obj(live()), "Running", conds, numbers)
    assert left is not None and left >= 1.0
    assert seen == []
    assert writer.write(worker_obj(live()), "Running", conds, {**numbers, "replicas": 3}) is None
    assert seen == ["PATCH /apis/ojs.openjobspec.dev/v1alpha1/namespaces/ns/ojsworkers/w/status"]
    time.sleep(0.5)  # 10 tokens at 20/s: half the burst is back
    writer._written_at.clear()  # as on a restart: due at once
    assert writer.write(worker_obj(live()), "Running", conds, numbers) is None
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("quiet", "before", "after", "event"),
    [
        ((), "Running", "Scaling", True),
        ((frozenset(("Running", "Scaling")),), "Running", "Scaling", False),
        ((frozenset(("Running", "Scaling")),), "Scaling", "Running", False),
        ((frozenset(("Running", "Scaling")),), "Running", "Draining", True),
    ],
)
def test_a_quiet_transition_writes_the_phase_without_an_event(
    api: tuple[str, list[str]], quiet: tuple[frozenset[str], ...], before: str, after: str, event: bool
) -> None:
    from kubernetes import client as k8s

    url, seen = api
    cfg = k8s.Configuration()
    cfg.host = url
    client = Client(cfg, ClientOptions(max_retries=0))
    writer = StatusWriter(client, OJSWORKERS, EventRecorder(client, "test"), grace=0, quiet_transitions=quiet)
    was = with_(phase=before)
    assert writer.write(worker_obj(was), after, was["conditions"], {"replicas": 2}) is None
    status = "PATCH /apis/ojs.openjobspec.dev/v1alpha1/namespaces/ns/ojsworkers/w/status"
    assert seen == [status, "POST /api/v1/namespaces/ns/events"] if event else seen == [status]


def test_a_held_first_status_says_when_it_is_due(api: tuple[str, list[str]]) -> None:
    """A new, healthy object's first Pending status is held; held_for tells a watch how long, so a
    rollout step in between comes with the held write instead of a reconcile of its own."""
    from kubernetes import client as k8s

    url, seen = api
    cfg = k8s.Configuration()
    cfg.host = url
    client = Client(cfg, ClientOptions(qps=20.0, burst=10, max_retries=0))
    writer = StatusWriter(client, OJSWORKERS, EventRecorder(client, "test"), grace=10.0)
    pending = [{"type": "Ready", "status": "False", "reason": "Pending", "message": "rolling out"}]
    assert writer.held_for("ns/w") == 0.0
    left = writer.write(worker_obj({}), "Pending", pending, {"replicas": 1})
    assert left is not None and 9.0 < left <= 10.0
    assert 9.0 < writer.held_for("ns/w") <= 10.0
    assert writer.held_for("ns/other") == 0.0
    assert seen == []
    # Running writes at once, and nothing is held any more.
    assert writer.write(worker_obj({}), "Running", [], {"replicas": 1}) is None
    assert seen[0] == "PATCH /apis/ojs.openjobspec.dev/v1alpha1/namespaces/ns/ojsworkers/w/status"
    assert writer.held_for("ns/w") == 0.0


def test_expiring_times_are_forgotten_once_past_their_ttl() -> None:
    import time as _time

    from ojsctrl.controllers.common import Expiring

    times = Expiring(ttl=60.0)
    now = _time.monotonic()
    times.set("old", now - 61.0)
    times.set("fresh", now)
    assert times.get("old") is None  # past its ttl: as absent, and swept at the next write
    assert times.get("fresh") == now
    assert len(times) == 1
    assert times.setdefault("fresh", now + 5.0) == now  # kept: the first time stands
    assert times.setdefault("new", now + 1.0) == now + 1.0
    assert times.pop("new") == now + 1.0 and times.pop("new") is None


@pytest.mark.parametrize("interval", [30.0, 0.0])
def test_the_owners_first_status_waits_for_the_status_min_interval(
    api: tuple[str, list[str]], interval: float
) -> None:
    """The reconcilers' status writers hold a healthy new object's first Pending status for
    --status-min-interval (routine news, like the polled numbers); 0 writes it at once."""
    from kubernetes import client as k8s

    from ojsctrl.controllers.owner import OwnerStatus
    from ojsctrl.runtime.client import DEPLOYMENTS
    from ojsctrl.runtime.informer import Informer

    url, seen = api
    cfg = k8s.Configuration()
    cfg.host = url
    client = Client(cfg, ClientOptions(qps=20.0, burst=10, max_retries=0))
    status = OwnerStatus(
        client,
        OJSWORKERS,
        EventRecorder(client, "test"),
        Informer(client, DEPLOYMENTS),
        lambda name: f"{name}-worker",
        min_interval=interval,
    )
    pending = [{"type": "Ready", "status": "False", "reason": "Pending", "message": "rolling out"}]
    left = status.writer.write(worker_obj({}), "Pending", pending, {"replicas": 1})
    if interval:
        assert left is not None and interval - 1.0 < left <= interval
        assert seen == []
    else:
        assert left is None
        assert seen == ["PATCH /apis/ojs.openjobspec.dev/v1alpha1/namespaces/ns/ojsworkers/w/status"]
