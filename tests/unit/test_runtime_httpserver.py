"""Unit tests for ojsctrl.runtime.httpserver: a real EndpointServer on loopback, probed with urllib."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from ojsctrl.runtime.httpserver import Checks, EndpointServer, parse_bind_address

pytestmark = pytest.mark.timeout(30)


class Switch:
    """A check whose answer the test controls; it can also be made to raise."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.raises = False

    def __call__(self) -> str | None:
        if self.raises:
            raise RuntimeError("kaboom")
        return self.reason


class Served:
    def __init__(self, server: EndpointServer, informers: Switch, cache: Switch) -> None:
        self.server = server
        self.informers = informers
        self.cache = cache

    def get(self, path: str) -> tuple[int, str, str]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read().decode(), e.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
def server_and_switches() -> Iterator[Served]:
    # One server for the module: stopping one takes up to its 0.5 s poll interval.
    informers, cache = Switch(), Switch()
    healthz = Checks()
    healthz.add("ping", lambda: None)
    healthz.add("informers", informers)
    readyz = Checks()
    readyz.add("cache-sync", cache)
    readyz.add("webhook", lambda: None)
    registry = CollectorRegistry()
    counter = Counter("ojsctrl_test_requests", "A test counter.", ["kind"], registry=registry)
    counter.labels("x").inc(3)
    server = EndpointServer(("127.0.0.1", 0), healthz=healthz, readyz=readyz, registry=registry)
    server.start()
    try:
        yield Served(server, informers, cache)
    finally:
        server.stop()


@pytest.fixture
def served(server_and_switches: Served) -> Iterator[Served]:
    yield server_and_switches
    for switch in (server_and_switches.informers, server_and_switches.cache):
        switch.reason = None
        switch.raises = False


def test_healthz_ok(served: Served) -> None:
    status, body, ctype = served.get("/healthz")
    assert (status, body) == (200, "ok")
    assert ctype.startswith("text/plain")


def test_trailing_slash_is_the_same_endpoint(served: Served) -> None:
    assert served.get("/healthz/")[:2] == (200, "ok")


def test_failing_check_is_500_and_named(served: Served) -> None:
    served.informers.reason = "watch for pods silent for 90s"
    status, body, _ = served.get("/healthz")
    assert status == 500
    assert "[-]informers failed: watch for pods silent for 90s" in body
    assert "healthz check failed" in body
    # Recovery is seen on the next probe.
    served.informers.reason = None
    assert served.get("/healthz")[:2] == (200, "ok")


def test_verbose_lists_every_check(served: Served) -> None:
    status, body, _ = served.get("/healthz?verbose")
    assert status == 200
    assert body.splitlines() == ["[+]ping ok", "[+]informers ok", "healthz check passed"]
    served.informers.reason = "stuck"
    status, body, _ = served.get("/healthz?verbose=1")
    assert status == 500
    assert body.splitlines() == ["[+]ping ok", "[-]informers failed: stuck", "healthz check failed"]


def test_readyz_is_separate_from_healthz(served: Served) -> None:
    served.cache.reason = "not synced: pods"
    status, body, _ = served.get("/readyz")
    assert status == 500
    assert "[-]cache-sync failed: not synced: pods" in body
    assert "readyz check failed" in body
    assert served.get("/healthz")[:2] == (200, "ok")


def test_single_check(served: Served) -> None:
    served.informers.reason = "down"
    assert served.get("/healthz/ping")[:2] == (200, "ok")
    status, body, _ = served.get("/healthz/informers")
    assert status == 500
    assert "[-]informers failed: down" in body
    assert "ping" not in body
    assert served.get("/readyz/webhook")[:2] == (200, "ok")


def test_unknown_single_check_is_404(served: Served) -> None:
    status, body, _ = served.get("/healthz/nope")
    assert status == 404
    assert "nope" in body


def test_raising_check_counts_as_failed(served: Served) -> None:
    served.informers.raises = True
    status, body, _ = served.get("/healthz")
    assert status == 500
    assert "[-]informers failed:" in body
    assert "RuntimeError" in body
    assert "kaboom" in body
    assert served.get("/healthz/ping")[:2] == (200, "ok")


def test_metrics(served: Served) -> None:
    status, body, ctype = served.get("/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert "# HELP ojsctrl_test_requests_total A test counter." in body
    assert 'ojsctrl_test_requests_total{kind="x"} 3.0' in body


@pytest.mark.parametrize("path", ["/", "/nope", "/healthzfoo", "/metricsx", "/readyzz/x"])
def test_unknown_path_404(served: Served, path: str) -> None:
    assert served.get(path)[0] == 404


def test_server_without_metrics_or_readyz_404s_them_and_stop_closes_it() -> None:
    server = EndpointServer(("127.0.0.1", 0), healthz=Checks())
    server.start()
    try:
        s = Served(server, Switch(), Switch())
        assert s.get("/healthz")[:2] == (200, "ok")
        assert s.get("/metrics")[0] == 404
        assert s.get("/readyz")[0] == 404
    finally:
        port = server.port
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("0", None),
        ("", None),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_bind_address(address: str, expected: tuple[str, int] | None) -> None:
    assert parse_bind_address(address) == expected


def test_parse_bind_address_rejects_bad_port() -> None:
    with pytest.raises(ValueError):
        parse_bind_address(":http")


def test_idle_connections_neither_pile_up_threads_nor_lock_out_probes() -> None:
    n = 400 if os.environ.get("OJSCTRL_FULL") == "1" else 120
    healthz = Checks()
    healthz.add("ping", lambda: None)
    server = EndpointServer(("127.0.0.1", 0), healthz=healthz, name="health-test")
    server.start()
    idle: list[socket.socket] = []
    try:
        before = threading.active_count()
        for _ in range(n):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)
        grown = threading.active_count() - before
        assert grown <= 40, f"{n} idle connections made {grown} threads"
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
                assert r.status == 200 and r.read() == b"ok"
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_a_request_trickled_byte_by_byte_meets_the_header_deadline() -> None:
    server = EndpointServer(("127.0.0.1", 0), healthz=Checks(), header_timeout=1.0, idle_timeout=5.0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            started = time.monotonic()
            closed = False
            for ch in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx":
                try:
                    s.sendall(bytes([ch]))
                    s.settimeout(0.2)
                    if s.recv(10) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                except OSError:
                    closed = True
                    break
                if time.monotonic() - started > 4:
                    break
            assert closed, "a trickling client kept its connection past the header deadline"
            assert time.monotonic() - started < 3
    finally:
        server.stop()
