"""OJSClient and StatsCache against the test OJS server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ojsctrl.ojs.client import (
    DEFAULT_URL_TEMPLATE,
    MAX_COUNT,
    OJSClient,
    OJSError,
    StatsCache,
    _as_count,
    _Page,
    _parse_admin_queue,
    _parse_worker,
    url_for,
    validate_url_template,
)
from ojsctrl.ojs.model import QueueCounts, QueueStats, WorkerInfo
from tests.ojsserver import FailMode, OJSTestServer

KEY = "s3cr3t-api-key-value"


@pytest.fixture
def server() -> Iterator[OJSTestServer]:
    with OJSTestServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[OJSClient]:
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
    page = _Page(items=[{"name": "a"}], total=5, has_more=None)
    with pytest.raises(OJSError, match="pagination not honoured"):
        OJSClient._last_page(page, collected=1, new=0, page_size=1, url="u")
    assert OJSClient._last_page(_Page([{"name": "a"}], None, None), collected=1, new=0, page_size=1, url="u")
    assert OJSClient._last_page(_Page([{"name": "a"}], None, False), collected=1, new=1, page_size=1, url="u")
    assert not OJSClient._last_page(_Page([{"name": "a"}], 2, None), collected=1, new=1, page_size=1, url="u")


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
def test_fault_is_bounded_ojs_error(server: OJSTestServer, client: OJSClient, fault: str, call: str) -> None:
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


def test_unreachable_server(client: OJSClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OJSError) as exc:
        client.queue_stats(f"http://user:pw@127.0.0.1:{port}", KEY)
    assert exc.value.reason == "Unreachable"
    assert "pw" not in str(exc.value)
    _assert_clean(exc.value)


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
    server.set_worker("pod-b", active_jobs=3)
    server.set_worker("pod-a")
    server.set_worker("pod-c", active_jobs=1, state="quiet")
    workers = client.workers(server.base_url, KEY)
    assert workers == [
        WorkerInfo("pod-a", 0, "running"),
        WorkerInfo("pod-b", 3, "running"),
        WorkerInfo("pod-c", 1, "quiet"),
    ]
    assert _pages(server, "/ojs/v1/admin/workers") == ["1", "2"]
    client.quiet_worker(server.base_url, KEY, "pod-a")
    assert server.worker_state("pod-a") == "quiet"
    assert server.quiet_requests == ["pod-a"]


def test_workers_without_admin_api(server: OJSTestServer, client: OJSClient) -> None:
    server.fail.admin_404 = True
    with pytest.raises(OJSError) as exc:
        client.workers(server.base_url, KEY)
    assert exc.value.reason == "AdminAPIUnavailable"


def test_health(server: OJSTestServer, client: OJSClient) -> None:
    ok = client.health(server.base_url)
    assert (ok.healthy, ok.status, ok.http_status) == (True, "ok", 200)
    server.set_healthy(False)
    down = client.health(server.base_url)
    assert (down.healthy, down.status, down.http_status) == (False, "degraded", 503)
    server.fail = FailMode(malformed_json=True)
    with pytest.raises(OJSError) as exc:
        server.set_healthy(True)
        client.health(server.base_url)
    assert exc.value.reason == "InvalidResponse"


# ---- strict parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [True, False, None, "3", 1.5, float("nan"), float("inf"), -1, MAX_COUNT + 1, [], {}]
)
def test_counts_reject_garbage(value: Any) -> None:
    with pytest.raises(OJSError):
        _as_count(value, "count", "u")


def test_counts_accept_whole_numbers() -> None:
    assert _as_count(3, "c", "u") == 3
    assert _as_count(3.0, "c", "u") == 3
    assert _as_count(0, "c", "u") == 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
_queue_items = st.fixed_dictionaries(
    {"name": _json | st.text(min_size=1, max_size=5)},
    optional={"counts": _json | st.fixed_dictionaries({"available": _json, "active": _json})},
)


@given(item=_json | _queue_items)
def test_queue_item_parser_never_crashes(item: Any) -> None:
    try:
        q = _parse_admin_queue(item, "u")
    except OJSError:
        return
    assert isinstance(q.name, str) and q.name
    assert 0 <= q.available <= MAX_COUNT and 0 <= q.active <= MAX_COUNT
    assert type(q.available) is int and type(q.active) is int


@given(item=_json | st.fixed_dictionaries({"id": _json, "active_jobs": _json}, optional={"state": _json}))
def test_worker_parser_never_crashes(item: Any) -> None:
    try:
        w = _parse_worker(item, "u")
    except OJSError:
        return
    assert type(w.active_jobs) is int and 0 <= w.active_jobs <= MAX_COUNT


# ---- StatsCache ------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stats(n: int) -> QueueStats:
    return QueueStats((QueueCounts("default", n, 0),))


def test_cache_polls_once_per_max_age() -> None:
    clock = FakeClock()
    calls: list[str] = []

    def fetch(url: str, key: str | None) -> QueueStats:
        calls.append(url)
        return _stats(len(calls))

    cache = StatsCache(fetch, clock=clock)
    for _ in range(5):
        assert cache.get("ns/c", "http://c", KEY, max_age=30).available() == 1
    clock.now += 29
    assert cache.get("ns/c", "http://c", KEY, max_age=30).available() == 1
    # A worker with a shorter interval refreshes for everyone: min(pollingInterval) per cluster.
    assert cache.get("ns/c", "http://c", KEY, max_age=10).available() == 2
    assert cache.get("ns/c", "http://c", KEY, max_age=30).available() == 2
    clock.now += 31
    assert cache.get("ns/c", "http://c", KEY, max_age=30).available() == 3
    assert cache.polls == 3
    assert cache.get("ns/other", "http://o", KEY, max_age=30).available() == 4


def test_cache_keeps_errors_briefly() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def fetch(url: str, key: str | None) -> QueueStats:
        calls.append(1)
        if len(calls) <= 2:
            raise OJSError("boom", reason="Unreachable")
        return _stats(7)

    cache = StatsCache(fetch, error_ttl=5, clock=clock)
    for _ in range(3):
        with pytest.raises(OJSError, match="boom"):
            cache.get("k", "u", None, max_age=30)
    assert len(calls) == 1
    clock.now += 5
    with pytest.raises(OJSError):
        cache.get("k", "u", None, max_age=30)
    assert len(calls) == 2
    clock.now += 1
    with pytest.raises(OJSError):
        cache.get("k", "u", None, max_age=1.5)
    assert len(calls) == 2
    clock.now += 1  # a max_age below error_ttl bounds the error's life too
    assert cache.get("k", "u", None, max_age=1.5).available() == 7
    assert len(calls) == 3
    peeked = cache.peek("k")
    assert peeked is not None and peeked[1] == _stats(7) and peeked[2] is None
    cache.invalidate("k")
    assert cache.peek("k") is None


def test_cache_single_flight_and_independent_keys() -> None:
    release = threading.Event()
    calls: list[str] = []

    def fetch(url: str, key: str | None) -> QueueStats:
        calls.append(url)
        if url == "slow":
            release.wait(5)
            return _stats(1)
        return _stats(2)

    cache = StatsCache(fetch)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("a", "slow", None, 30).available()))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    # Another cluster is not held up by the slow one.
    assert cache.get("b", "fast", None, 30).available() == 2
    release.set()
    for t in threads:
        t.join(5)
    assert results == [1] * 10
    assert calls == ["slow", "fast"]


def test_cache_with_real_server(server: OJSTestServer, client: OJSClient) -> None:
    server.set_queue("default", available=5)
    cache = StatsCache(client.queue_stats)
    for _ in range(10):
        assert cache.get("ns/c", server.base_url, KEY, max_age=60).available() == 5
    assert len(server.requests) == 1


# ---- URL template ----------------------------------------------------------------------------------------


def test_url_for_default_and_custom() -> None:
    assert url_for(DEFAULT_URL_TEMPLATE, "c1", "ns") == "http://c1-server.ns.svc:8080"
    assert url_for("http://127.0.0.1:{port}/", "c1", "ns", port=9000) == "http://127.0.0.1:9000"
    assert (
        url_for("https://{name}.{namespace}.example/ojs-{service}", "c", "n")
        == "https://c.n.example/ojs-c-server"
    )


@pytest.mark.parametrize(
    "template",
    [
        "http://{svc}.{namespace}",
        "http://{name.__class__}",
        "http://{port:>6}",
        "http://{name!r}",
        "ftp://{service}",
        "{service}",
        "http://{",
    ],
)
def test_url_template_rejects(template: str) -> None:
    with pytest.raises(ValueError, match="--ojs-url-template"):
        validate_url_template(template)


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
