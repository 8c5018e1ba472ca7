"""The informer's list/watch loop against a loopback HTTP server that misbehaves the way API servers
and proxies do: watches closed at once, ERROR events, "too large resource version", silent streams.
The real Client and Informer run; only the server side is scripted."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from ojsctrl.runtime.client import Client, ClientOptions, Resource
from ojsctrl.runtime.informer import (
    MIN_WATCH_DURATION,
    Backoff,
    BackoffManager,
    Informer,
    InformerFactory,
    too_large_resource_version,
)
from ojsctrl.runtime.metrics import REGISTRY

pytestmark = pytest.mark.timeout(30)

JSON = dict[str, Any]
PODS = Resource("", "v1", "pods", "Pod")


class ScriptedServer:
    """Lists answer with one pod at resourceVersion 5; each watch does what `watch_mode` says."""

    def __init__(self) -> None:
        self.watch_mode = "close"  # close | error | too_large | silent | once_then_close
        self.lists: list[dict[str, str]] = []
        self.watches: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                if query.get("watch") != "true":
                    with owner.lock:
                        owner.lists.append(query)
                    body = json.dumps(
                        {
                            "kind": "PodList",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": "5"},
                            "items": [{"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "5"}}],
                        }
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                with owner.lock:
                    owner.watches.append(query)
                    mode = owner.watch_mode
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                if mode == "error":
                    status = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}
                    self._chunk(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                elif mode == "too_large":
                    status = {
                        "kind": "Status",
                        "code": 504,
                        "reason": "Timeout",
                        "message": "Too large resource version: 99, current: 5",
                        "details": {
                            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large"}]
                        },
                    }
                    self._chunk(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                elif mode == "silent":
                    owner.release.wait(10)
                    self.close_connection = True
                    return
                self._chunk(b"")  # the last chunk: the watch ends at once

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self) -> Client:
        from kubernetes import client as k8s

        cfg = k8s.Configuration()
        cfg.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return Client(cfg, ClientOptions(qps=1000, burst=1000))

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.lists), len(self.watches)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


_ids = itertools.count()


def run_informer(server: ScriptedServer, seconds: float, **kwargs: Any) -> Informer:
    # A selector of its own gives each test its own metric series.
    inf = Informer(server.client(), PODS, resync_period=0, label_selector=f"t={next(_ids)}", **kwargs)
    inf.start()
    try:
        time.sleep(seconds)
    finally:
        inf.stop()
    return inf


def restarts(inf: Informer, cause: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "ojsctrl_informer_watch_restarts_total", {"resource": inf.name, "cause": cause}
        )
        or 0.0
    )


def test_a_server_closing_every_watch_at_once_is_backed_off(server: ScriptedServer) -> None:
    seconds = 3.0
    inf = run_informer(server, seconds)
    _, watches = server.counts()
    # 0.8 s doubling (+-20 %): about 3 watches in 3 s; without backoff it is thousands.
    assert 2 <= watches <= 5, f"{watches} watches in {seconds}s"
    assert inf.has_synced()


def test_a_watch_error_event_backs_off_and_relists_from_the_last_version(server: ScriptedServer) -> None:
    server.watch_mode = "error"
    run_informer(server, 2.6)
    lists, watches = server.counts()
    assert lists >= 2, "no relist after an ERROR event"
    assert watches <= 4, f"{watches} watches in 2.6s: no backoff"
    # The relist never goes back in time: it reads from the version the informer had reached.
    assert server.lists[0].get("resourceVersion") == "0"
    assert server.lists[1].get("resourceVersion") == "5"


def test_too_large_resource_version_relists_consistently(server: ScriptedServer) -> None:
    server.watch_mode = "too_large"
    inf = run_informer(server, 1.5)
    lists, _ = server.counts()
    assert lists >= 2
    assert "resourceVersion" not in server.lists[1], "the relist after 'too large' must be consistent"
    assert restarts(inf, "too_large") >= 1


def test_an_inactive_watch_is_reopened_at_once_and_is_no_failure(server: ScriptedServer) -> None:
    server.watch_mode = "silent"
    inf = run_informer(server, 2.0, inactivity_timeout=0.4)
    _, watches = server.counts()
    assert watches >= 3, "an inactive watch must be reopened without backoff"
    assert restarts(inf, "inactive") >= 2
    assert restarts(inf, "error") == 0


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(0.8, 30.0)
    delays = [b.next() for _ in range(10)]
    assert 0.64 <= delays[0] <= 0.96
    assert 1.28 <= delays[1] <= 1.92
    assert all(d <= 36.0 for d in delays)
    assert delays[-1] >= 24.0
    b.reset()
    assert b.next() <= 0.96


def test_backoff_manager_resets_only_after_a_healthy_watch() -> None:
    manager = BackoffManager(Backoff(0.8, 30.0))
    # A list that failed before any watch: the backoff grows.
    manager.attempt_started()
    first = manager.next_delay()
    manager.attempt_started()
    second = manager.next_delay()
    assert first <= 0.96 and second >= 1.28 and manager.failures == 2
    # A watch that ended at once without an event is no progress: still growing.
    manager.attempt_started()
    manager.watch_started()
    assert not manager.watch_was_healthy()
    assert manager.next_delay() >= 2.56
    # A watch that delivered an event was healthy: its failure starts again from the first step.
    manager.attempt_started()
    manager.watch_started()
    manager.event()
    assert manager.watch_was_healthy()
    assert manager.next_delay() <= 0.96 and manager.failures == 1


def test_backoff_manager_counts_a_long_watch_as_healthy() -> None:
    manager = BackoffManager()
    manager.watch_started()
    time.sleep(MIN_WATCH_DURATION + 0.05)
    assert manager.watch_was_healthy()


def test_factory_shares_an_informer_only_for_the_same_transform(server: ScriptedServer) -> None:
    factory = InformerFactory(server.client())

    def drop_status(obj: JSON) -> JSON:
        obj.pop("status", None)
        return obj

    plain = factory.informer(PODS)
    assert factory.informer(PODS) is plain
    shaped = factory.informer(PODS, transform=drop_status)
    assert shaped is not plain, "a transform must not silently share the untransformed cache"
    assert factory.informer(PODS, transform=drop_status) is shaped
    assert len(factory.all()) == 2


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"details": {"causes": [{"reason": "ResourceVersionTooLarge"}]}}, True),
        ({"details": {"causes": [{"type": "ResourceVersionTooLarge"}]}}, True),
        ({"message": "Too large resource version: 10, current: 4"}, True),
        ({"code": 500, "message": "boom"}, False),
        ({}, False),
    ],
)
def test_too_large_resource_version(status: JSON, expected: bool) -> None:
    assert too_large_resource_version(status) is expected
