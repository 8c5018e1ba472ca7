"""OJSClient against the test OJS server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from ojsctrl.ojs.client import OJSClient, OJSError
from ojsctrl.ojs.model import QueueCounts, QueueStats, WorkerInfo
from ojsctrl.ojs.quiet import QuietSender
from ojsctrl.ojs.wire import Page, parse_worker
from tests.ojsserver import FailMode, OJSTestServer

KEY = "s3cr3t-api-key-value"


@pytest.fixture
def server() -> Iterator[OJSTestServer]:
    with OJSTestServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[OJSClient]:
    # Patient: on a busy machine a short read timeout retries a page, and the tests that assert the exact
    # requests a call makes would then fail on correct behaviour. The fault tests use ``quick``.
    c = OJSClient(connect_timeout=2.0, read_timeout=5.0, total_timeout=20.0, retries=2, backoff=0.01)
    yield c
    c.close()


@pytest.fixture
def quick() -> Iterator[OJSClient]:
    # Short timeouts: a slow or hanging server must become a Timeout within the test's bound.
    c = OJSClient(connect_timeout=0.5, read_timeout=0.2, total_timeout=2.0, retries=2, backoff=0.01)
    yield c
    c.close()


def _pages(srv: OJSTestServer, path: str) -> list[str]:
    return [r.query.get("page", ["-"])[0] for r in srv.requests if r.path == path]


def _assert_clean(err: OJSError) -> None:
    for text in (str(err), repr(err), err.url):
        assert KEY not in text


# ---- queue stats -----------------------------------------------------------------------------------------


def test_queue_stats_follows_admin_pagination(server: OJSTestServer, client: OJSClient) -> None:
    for i in range(250):
        server.set_queue(f"q{i:03d}", available=i, active=i % 3)
    stats = client.queue_stats(server.base_url, KEY)
    assert stats.source == "admin"
    assert len(stats.queues) == 250
    assert stats.available() == sum(range(250))
    assert stats.active() == sum(i % 3 for i in range(250))
    assert stats.get("q007") == QueueCounts("q007", 7, 1)
    assert _pages(server, "/ojs/v1/admin/queues") == ["1", "2", "3"]
    assert all(r.authorized for r in server.requests)
    assert all("authorization" not in r.headers for r in server.requests)


def test_server_ignoring_pagination_is_read_once(server: OJSTestServer, client: OJSClient) -> None:
    for i in range(150):
        server.set_queue(f"q{i:03d}", available=1)
    server.fail.ignore_pagination = True
    assert client.queue_stats(server.base_url, KEY).available() == 150
    assert _pages(server, "/ojs/v1/admin/queues") == ["1"]


def test_page_cap_is_an_error(server: OJSTestServer) -> None:
    for i in range(30):
        server.set_queue(f"q{i:02d}", available=1)
    capped = OJSClient(per_page=10, max_pages=2)
    with pytest.raises(OJSError) as exc:
        capped.queue_stats(server.base_url, KEY)
    assert exc.value.reason == "TooManyItems"
    assert len(server.requests) == 2


def test_repeated_page_while_claiming_more_is_an_error() -> None:
    page = Page(items=[{"name": "a"}], total=5, has_more=None)
    with pytest.raises(OJSError, match="pagination not honoured"):
        OJSClient._last_page(page, collected=1, new=0, page_size=1, url="u")
    assert OJSClient._last_page(Page([{"name": "a"}], None, None), collected=1, new=0, page_size=1, url="u")
    assert OJSClient._last_page(Page([{"name": "a"}], None, False), collected=1, new=1, page_size=1, url="u")
    assert not OJSClient._last_page(Page([{"name": "a"}], 2, None), collected=1, new=1, page_size=1, url="u")


def test_admin_404_falls_back_to_queue_endpoints(server: OJSTestServer, client: OJSClient) -> None:
    for i in range(5):
        server.set_queue(f"q{i}", available=10 * i, active=i)
    admin = client.queue_stats(server.base_url, KEY)
    server.fail.admin_404 = True
    server.clear_requests()
    fallback = client.queue_stats(server.base_url, KEY)
    assert fallback.source == "queues"
    assert fallback.queues == admin.queues
    paths = [r.path for r in server.requests]
    assert paths[0] == "/ojs/v1/admin/queues"
    assert paths[1] == "/ojs/v1/queues"
    assert sorted(paths[2:]) == [f"/ojs/v1/queues/q{i}/stats" for i in range(5)]
    # The missing admin API is remembered: the next poll goes straight to the fallback.
    server.clear_requests()
    client.queue_stats(server.base_url, KEY)
    assert "/ojs/v1/admin/queues" not in [r.path for r in server.requests]


def test_fallback_reads_queue_names_that_need_quoting(server: OJSTestServer, client: OJSClient) -> None:
    server.set_queue("a b/c", available=4)
    server.fail.admin_404 = True
    assert client.queue_stats(server.base_url, KEY).get("a b/c") == QueueCounts("a b/c", 4, 0)


# ---- faults: every one is a bounded-time OJSError without the key ------------------------------------------

FAULTS: dict[str, tuple[FailMode, str]] = {
    "status_500": (FailMode(status_500=True), "ServerError"),
    "slow": (FailMode(slow=1.0), "Timeout"),
    "hang": (FailMode(hang=True), "Timeout"),
    "malformed_json": (FailMode(malformed_json=True), "InvalidResponse"),
    "huge_json": (FailMode(huge_json=True), "ResponseTooLarge"),
    "wrong_types": (FailMode(wrong_types=True), "InvalidResponse"),
    "negative_counts": (FailMode(negative_counts=True), "InvalidResponse"),
}


@pytest.mark.parametrize("call", ["queue_stats", "workers"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_bounded_ojs_error(server: OJSTestServer, quick: OJSClient, fault: str, call: str) -> None:
    client = quick
    server.set_queue("default", available=3, active=1)
    server.set_worker("pod-1", active_jobs=2)
    server.fail, reason = FAULTS[fault]
    method: Callable[[str, str], Any] = getattr(client, call)
    start = time.monotonic()
    with pytest.raises(OJSError) as exc:
        method(server.base_url, KEY)
    elapsed = time.monotonic() - start
    assert exc.value.reason == reason, str(exc.value)
    assert elapsed < client.total_timeout + client.read_timeout + 0.5
    _assert_clean(exc.value)


def test_unreachable_server(quick: OJSClient) -> None:
    client = quick
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OJSError) as exc:
        client.queue_stats(f"http://user:pw@127.0.0.1:{port}", KEY)
    assert exc.value.reason == "Unreachable"
    assert "pw" not in str(exc.value)
    _assert_clean(exc.value)


def test_a_refused_connection_is_not_retried_within_the_call() -> None:
    # Nothing listens: a retry would find nothing either, and the next poll looks again. The pool's own
    # request method is wrapped to count the connection attempts the call makes.
    c = OJSClient(connect_timeout=0.5, read_timeout=0.5, total_timeout=5.0, retries=2, backoff=0.01)
    pool = c._http._pool
    real = pool.request
    attempts = 0

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return real(*args, **kwargs)

    pool.request = counted  # type: ignore[method-assign]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        with pytest.raises(OJSError) as exc:
            c.queue_stats(f"http://127.0.0.1:{port}", KEY)
    finally:
        c.close()
    assert exc.value.reason == "Unreachable"
    assert attempts == 1


def test_a_connection_lost_mid_call_is_retried(client: OJSClient) -> None:
    # A listener that accepts and hangs up at once: the connection opened, so the GET is tried again.
    accepted = 0
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(5.0)
        port = listener.getsockname()[1]

        def serve() -> None:
            nonlocal accepted
            for _ in range(1 + client.retries):
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted += 1
                conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with pytest.raises(OJSError) as exc:
            client.queue_stats(f"http://127.0.0.1:{port}", KEY)
        t.join(5.0)
    assert exc.value.reason == "Unreachable"
    assert accepted == 1 + client.retries


def test_get_is_retried_and_recovers(server: OJSTestServer, client: OJSClient) -> None:
    server.set_queue("default", available=2)
    server.fail = FailMode(status_500=True, times=1)
    assert client.queue_stats(server.base_url, KEY).available() == 2
    assert _pages(server, "/ojs/v1/admin/queues") == ["1", "1"]


def test_retries_are_bounded(server: OJSTestServer, client: OJSClient) -> None:
    server.fail = FailMode(status_500=True)
    with pytest.raises(OJSError):
        client.queue_stats(server.base_url, KEY)
    assert len(server.requests) == 1 + client.retries


def test_post_is_not_retried(server: OJSTestServer, client: OJSClient) -> None:
    server.set_worker("pod-1")
    server.fail = FailMode(status_500=True)
    with pytest.raises(OJSError) as exc:
        client.quiet_worker(server.base_url, KEY, "pod-1")
    assert exc.value.reason == "ServerError" and exc.value.status == 500
    assert len(server.requests) == 1


def test_content_length_over_cap_is_refused_unread(server: OJSTestServer) -> None:
    for i in range(50):
        server.set_queue(f"q{i:02d}", available=1)
    small = OJSClient(max_response_bytes=1000)
    with pytest.raises(OJSError) as exc:
        small.queue_stats(server.base_url, KEY)
    assert exc.value.reason == "ResponseTooLarge"


# ---- auth ------------------------------------------------------------------------------------------------


def test_bearer_key_is_sent(server: OJSTestServer, client: OJSClient) -> None:
    client.queue_stats(server.base_url, KEY)
    assert server.requests[0].authorized is True


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_rejected_key(server: OJSTestServer, client: OJSClient, key: str | None) -> None:
    with pytest.raises(OJSError) as exc:
        client.queue_stats(server.base_url, key)
    # Servers answer 401 without a key and 403 for a wrong one (KeyAuth in ojs-backend-redis).
    assert exc.value.reason == "Unauthorized" and exc.value.status == (401 if key is None else 403)
    assert "wrong-key" not in str(exc.value)
    _assert_clean(exc.value)


def test_key_with_header_breaking_characters(server: OJSTestServer, client: OJSClient) -> None:
    bad = KEY + "\r\nX-Evil: 1"
    with pytest.raises(OJSError) as exc:
        client.queue_stats(server.base_url, bad)
    assert exc.value.reason == "InvalidRequest"
    assert KEY not in str(exc.value)
    assert server.requests == []


def test_invalid_base_url(client: OJSClient) -> None:
    with pytest.raises(OJSError) as exc:
        client.queue_stats("ftp://somewhere", KEY)
    assert exc.value.reason == "InvalidRequest"


# ---- workers, quiet, health ------------------------------------------------------------------------------


def test_workers_and_quiet(server: OJSTestServer) -> None:
    client = OJSClient(per_page=2)
    server.set_worker("worker_pod-b_1_1", active_jobs=3)
    server.set_worker("worker_pod-a_1_1")
    server.set_worker("worker_pod-c_1_1", active_jobs=1, state="quiet")
    workers = client.workers(server.base_url, KEY)
    assert [(w.id, w.active_jobs, w.state) for w in workers] == [
        ("worker_pod-a_1_1", 0, "running"),
        ("worker_pod-b_1_1", 3, "running"),
        ("worker_pod-c_1_1", 1, "quiet"),
    ]
    assert [w.quiet for w in workers] == [False, False, True]
    assert _pages(server, "/ojs/v1/admin/workers") == ["1", "2"]
    client.quiet_worker(server.base_url, KEY, "worker_pod-a_1_1")
    quiet = [r for r in server.requests if r.method == "POST"]
    assert [r.path for r in quiet] == ["/ojs/v1/admin/workers/worker_pod-a_1_1/quiet"]
    assert quiet[0].authorized


def test_workers_read_every_page(server: OJSTestServer, client: OJSClient) -> None:
    for i in range(250):
        server.set_worker(f"worker_w-{i:03d}_1_1", active_jobs=i % 4)
    workers = client.workers(server.base_url, KEY)
    assert len(workers) == 250 and sum(w.active_jobs for w in workers) == sum(i % 4 for i in range(250))
    assert [w.id for w in workers] == sorted(w.id for w in workers)
    reqs = [r for r in server.requests if r.path == "/ojs/v1/admin/workers"]
    assert [r.query["page"][0] for r in reqs] == ["1", "2", "3"]
    assert {r.query["per_page"][0] for r in reqs} == {"100"}


def test_workers_never_ask_more_than_100_per_page(server: OJSTestServer) -> None:
    # The reference servers answer per_page > 100 with their default page of 50.
    for i in range(120):
        server.set_worker(f"worker_w-{i:03d}_1_1")
    assert len(OJSClient(per_page=500).workers(server.base_url, KEY)) == 120
    assert {r.query["per_page"][0] for r in server.requests} == {"100"}


def test_workers_beyond_the_page_bound_are_a_clear_error(server: OJSTestServer) -> None:
    for i in range(7):
        server.set_worker(f"worker_w-{i}_1_1")
    with pytest.raises(OJSError) as exc:
        OJSClient(per_page=2, max_pages=3).workers(server.base_url, KEY)
    assert exc.value.reason == "TooManyItems"
    assert "/ojs/v1/admin/workers has more than 3 pages of 2" in str(exc.value)
    assert "at most 6 items" in str(exc.value)
    _assert_clean(exc.value)


def test_workers_from_a_server_ignoring_pagination(server: OJSTestServer, client: OJSClient) -> None:
    for i in range(150):
        server.set_worker(f"worker_w-{i:03d}_1_1")
    server.fail.ignore_pagination = True
    assert len(client.workers(server.base_url, KEY)) == 150
    assert _pages(server, "/ojs/v1/admin/workers") == ["1"]


# A tiny server of our own for shapes the shared double does not produce: real servers' quirks and the
# spec's optional fields.

Answer = Callable[[str, dict[str, list[str]]], tuple[int, Any]]


@pytest.fixture
def json_server() -> Iterator[Callable[[Answer], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                status, body = answer(parts.path, urllib.parse.parse_qs(parts.query))
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def redis_like(items: list[dict[str, Any]], asked: list[tuple[int, int]]) -> Answer:
    """Pagination as ojs-backend-redis handler_admin.go (commit 5b459da) does it: per_page 1..100 else 50,
    {"items", "summary", "pagination": {"total", "page", "per_page"}}, no has_more."""

    def answer(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        assert path == "/ojs/v1/admin/workers"
        page = max(1, int(query.get("page", ["1"])[0]))
        per_page = int(query.get("per_page", ["0"])[0])
        if not 1 <= per_page <= 100:
            per_page = 50
        asked.append((page, per_page))
        start = (page - 1) * per_page
        return 200, {
            "items": items[start : start + per_page],
            "summary": {"total": len(items)},
            "pagination": {"total": len(items), "page": page, "per_page": per_page},
        }

    return answer


def test_workers_in_the_shapes_servers_and_spec_use(json_server: Callable[[Answer], str]) -> None:
    items: list[dict[str, Any]] = [
        # ojs-backend-redis admin_list.go: id, state, directive, active_jobs (int), last_heartbeat
        {
            "id": "worker_web-1_7_1733000000000000000",
            "state": "running",
            "directive": "continue",
            "active_jobs": 2,
            "last_heartbeat": "2026-12-05T10:00:00.000Z",
        },
        {"id": "worker_web-2_7_1", "state": "quiet", "directive": "quiet", "active_jobs": 0},
        {"id": "worker_web-3_7_1", "state": "stale", "directive": "continue", "active_jobs": 4},
        # active_jobs as the list of job ids servers accept in a heartbeat
        {"id": "worker_00000000000000ab", "state": "running", "active_jobs": ["j1", "j2", "j3"]},
        # the admin API spec §9.1: hostname, metadata.kubernetes_pod and more
        {
            "id": "worker_1b4e28ba-2fa1-41d2-883f-0016d3cca427",
            "state": "running",
            "active_jobs": 1,
            "hostname": "web-5",
            "queues": ["default"],
            "concurrency": 10,
            "metadata": {"kubernetes_pod": "web-5", "node": "n1"},
        },
        # only what is required
        {"id": "worker_minimal", "active_jobs": 0},
        {"id": "worker_nulls", "active_jobs": 0, "state": None, "hostname": None, "metadata": None},
    ]
    asked: list[tuple[int, int]] = []
    url = json_server(redis_like(items, asked))
    workers = {w.id: w for w in OJSClient(per_page=3).workers(url, None)}
    assert asked == [(1, 3), (2, 3), (3, 3)]
    web1 = workers["worker_web-1_7_1733000000000000000"]
    assert web1.last_heartbeat is not None  # the server's RFC 3339 time, read
    assert dataclasses.replace(web1, last_heartbeat=None) == WorkerInfo(
        "worker_web-1_7_1733000000000000000", 2, "running", directive="continue"
    )
    assert workers["worker_web-2_7_1"].quiet
    assert workers["worker_web-3_7_1"].stale and not workers["worker_web-1_7_1733000000000000000"].stale
    assert workers["worker_00000000000000ab"].active_jobs == 3
    spec = workers["worker_1b4e28ba-2fa1-41d2-883f-0016d3cca427"]
    assert (spec.hostname, spec.pod, spec.active_jobs) == ("web-5", "web-5", 1)
    assert workers["worker_minimal"] == WorkerInfo("worker_minimal", 0)
    assert workers["worker_nulls"] == WorkerInfo("worker_nulls", 0)


def test_workers_follow_the_page_size_the_server_used(json_server: Callable[[Answer], str]) -> None:
    """A server that pages by its own size and says so in pagination.per_page (no total, no has_more)."""
    items = [{"id": f"worker_w-{i:03d}_1_1", "active_jobs": 0} for i in range(120)]

    def answer(_path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        page = int(query["page"][0])
        return 200, {
            "items": items[(page - 1) * 50 : page * 50],
            "pagination": {"page": page, "per_page": 50},
        }

    assert len(OJSClient().workers(json_server(answer), None)) == 120


def test_workers_from_a_server_without_pagination(json_server: Callable[[Answer], str]) -> None:
    """Everything at once and no pagination block: a repeated page ends the list."""
    items = [{"id": f"worker_w-{i:03d}_1_1", "active_jobs": 1} for i in range(130)]
    calls: list[str] = []

    def answer(_path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        calls.append(query["page"][0])
        return 200, {"items": items}

    workers = OJSClient().workers(json_server(answer), None)
    assert len(workers) == 130 and calls == ["1", "2"]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"id": "w", "active_jobs": "3"}, "active_jobs of worker 'w' must be a number or an array"),
        ({"id": "w", "active_jobs": True}, "active_jobs of worker 'w'"),
        ({"id": "w", "active_jobs": {"n": 1}}, "active_jobs of worker 'w'"),
        ({"id": "w", "active_jobs": -1}, "active_jobs of worker 'w' must not be negative"),
        ({"id": "w"}, "active_jobs of worker 'w'"),
        ({"id": "w", "active_jobs": 0, "state": 3}, "state of worker 'w' must be a string"),
        ({"id": "w", "active_jobs": 0, "directive": ["quiet"]}, "directive of worker 'w'"),
        ({"id": "w", "active_jobs": 0, "hostname": 1}, "hostname of worker 'w' must be a string"),
        ({"id": "w", "active_jobs": 0, "metadata": "pod"}, "metadata of worker 'w' must be an object"),
        (
            {"id": "w", "active_jobs": 0, "metadata": {"kubernetes_pod": 5}},
            "metadata.kubernetes_pod of worker 'w' must be a string",
        ),
        ({"id": 7, "active_jobs": 0}, "items[].id"),
    ],
)
def test_worker_fields_of_the_wrong_type_name_the_field(item: dict[str, Any], field: str) -> None:
    with pytest.raises(OJSError, match="invalid response from u: ") as exc:
        parse_worker(item, "u")
    assert field in str(exc.value) and exc.value.reason == "InvalidResponse"


# ---- quiet calls in the background -----------------------------------------------------------------------


def test_quiet_sender_never_waits_on_a_hanging_server(server: OJSTestServer) -> None:
    server.fail = FailMode(hang=True, paths=("/ojs/v1/admin/workers",))
    sender = QuietSender(OJSClient(connect_timeout=0.3, read_timeout=0.3, total_timeout=0.5, retries=0))
    ids = ["worker_a_1_1", "worker_b_1_1", "worker_c_1_1"]
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            assert sender.send(server.base_url, KEY, ids) == ids
            assert time.monotonic() - started < 0.1, "send() waited on the network"
            # Asked again while pending: nothing new is queued.
            assert sender.send(server.base_url, KEY, ids) == []
            assert sender.wait_idle(5.0)
        assert (sender.sent, sender.failed) == (0, 3)
        failures = [e for e in logs if e["event"] == "could not quiet worker"]
        assert sorted(e["worker"] for e in failures) == ids
        assert all(KEY not in str(e) for e in logs)
        # The server is back: the next drain step's call goes through, and is not repeated soon after.
        server.release()
        assert sender.send(server.base_url, KEY, ids[:1]) == ids[:1]
        assert sender.wait_idle(5.0)
        assert sender.sent == 1
        assert sender.send(server.base_url, KEY, ids[:1]) == []
        posts = [r.path for r in server.requests if r.method == "POST"]
        assert posts.count("/ojs/v1/admin/workers/worker_a_1_1/quiet") == 2
    finally:
        server.release()
        sender.close()


def test_quiet_sender_is_bounded() -> None:
    gate = threading.Event()
    calls: list[str] = []

    class Blocking:
        def quiet_worker(self, base_url: str, api_key: str | None, worker_id: str) -> None:
            calls.append(worker_id)
            gate.wait(5)

    sender = QuietSender(Blocking(), threads=1, max_pending=2)
    try:
        assert sender.send("http://x", None, ["w1", "w2", "w3", "w4"]) == ["w1", "w2"]
        assert sender.dropped == 2 and sender.pending() == 2
        gate.set()
        assert sender.wait_idle(5.0)
        assert sorted(calls) == ["w1", "w2"] and sender.sent == 2
        sender.close()
        assert sender.send("http://x", None, ["w5"]) == []
    finally:
        gate.set()
        sender.close()


def test_workers_without_admin_api(server: OJSTestServer, client: OJSClient) -> None:
    server.fail.admin_404 = True
    with pytest.raises(OJSError) as exc:
        client.workers(server.base_url, KEY)
    assert exc.value.reason == "AdminAPIUnavailable"


# ---- QueueStats helpers ----------------------------------------------------------------------------------


def test_queue_stats_helpers() -> None:
    stats = QueueStats((QueueCounts("b", 5, 1), QueueCounts("a", 2, 7), QueueCounts("c", 0, 0)))
    assert [q.name for q in stats.queues] == ["a", "b", "c"]
    assert stats.available(["a", "a", "zzz"]) == 2
    assert stats.active(["a", "b"]) == 8
    assert stats.load(["b"]) == 6 and stats.load() == 15
    assert [q.name for q in stats.busiest(2)] == ["a", "b"]
    with pytest.raises(ValueError):
        QueueStats((QueueCounts("a"), QueueCounts("a")))
    assert WorkerInfo("w", 0, "quiet").quiet and WorkerInfo("w", 0).idle
