"""The HTTPS admission server: AdmissionReview over TLS, limits, timeouts, certificate reload, readiness."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ojsctrl.runtime.certs import CertConfig, Pair, issue
from ojsctrl.runtime.tls import tls_server_context
from ojsctrl.runtime.webhook import (
    REQUESTS,
    AdmissionResponse,
    WebhookOptions,
    WebhookServer,
)

CFG = CertConfig(namespace="n", secret_name="s", dns_names=("localhost",), validity=dt.timedelta(hours=1))


def review(uid: str = "u-1", **request: Any) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": "CREATE", "object": {}, **request},
        }
    ).encode()


def write_pair(directory: Path, pair: Pair) -> None:
    (directory / "tls.key").write_bytes(pair.key_pem)
    (directory / "tls.crt").write_bytes(pair.cert_pem)


class Env:
    def __init__(self, tmp: Path, options: WebhookOptions | None = None, write: bool = True) -> None:
        self.dir = tmp
        self.ca, self.pair = issue(CFG, dt.datetime.now(dt.UTC))
        if write:
            write_pair(tmp, self.pair)
        self.seen: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.release.set()

        def echo(req: dict[str, Any]) -> AdmissionResponse:
            self.seen.append(req)
            self.release.wait(5)
            return AdmissionResponse.allow(["careful"])

        def boom(req: dict[str, Any]) -> AdmissionResponse:
            raise RuntimeError("handler bug")

        self.server = WebhookServer(
            "127.0.0.1",
            0,
            cert_file=str(tmp / "tls.crt"),
            key_file=str(tmp / "tls.key"),
            handlers={"/echo": echo, "/boom": boom},
            options=options or WebhookOptions(reload_check_interval=0.0),
        )
        self.server.start()

    def context(self, ca: x509.Certificate | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cadata=(ca or self.ca).public_bytes(serialization.Encoding.PEM).decode()
        )
        return ctx

    def conn(self, ca: x509.Certificate | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.server.port, context=self.context(ca), timeout=5)

    def post(
        self, path: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        c = self.conn()
        c.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = c.getresponse()
        data = resp.read()
        c.close()
        return resp.status, data, resp


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.server.stop()


def served_fingerprint(port: int) -> bytes:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())


def test_admission_review_round_trip(env: Env) -> None:
    status, data, resp = env.post("/echo", review("abc", namespace="ns"))
    assert status == 200 and resp.getheader("Content-Type") == "application/json"
    body = json.loads(data)
    assert body == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "abc", "allowed": True, "warnings": ["careful"]},
    }
    assert env.seen[0]["namespace"] == "ns"


def test_keep_alive_serves_several_reviews_on_one_connection(env: Env) -> None:
    c = env.conn()
    for i in range(3):
        c.request("POST", "/echo", body=review(f"u{i}"), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert json.loads(r.read())["response"]["uid"] == f"u{i}"
    c.close()


def test_a_failing_handler_denies_with_500(env: Env) -> None:
    status, data, _ = env.post("/boom", review())
    assert status == 200
    response = json.loads(data)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 500
    assert (
        "RuntimeError" in response["status"]["message"] and "handler bug" not in response["status"]["message"]
    )


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/nowhere", review(), "application/json", 404),
        ("/echo", b"{not json", "application/json", 400),
        ("/echo", b"[]", "application/json", 400),
        (
            "/echo",
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(),
            "application/json",
            400,
        ),
        (
            "/echo",
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}
            ).encode(),
            "application/json",
            400,
        ),
        ("/echo", review(), "text/plain", 415),
    ],
)
def test_malformed_requests_are_refused(
    env: Env, path: str, body: bytes, content_type: str, status: int
) -> None:
    before = REQUESTS.labels("/echo" if path == "/echo" else "<unknown>", str(status))._value.get()
    got, _, _ = env.post(path, body, content_type)
    assert got == status
    assert (
        REQUESTS.labels("/echo" if path == "/echo" else "<unknown>", str(status))._value.get() == before + 1
    )
    assert env.seen == []


def test_get_is_not_allowed(env: Env) -> None:
    c = env.conn()
    c.request("GET", "/echo")
    assert c.getresponse().status == 405


def test_request_body_is_bounded(tmp_path: Path) -> None:
    e = Env(tmp_path, WebhookOptions(max_request_bytes=1000))
    try:
        status, _, _ = e.post("/echo", review(pad="x" * 2000))
        assert status == 413 and e.seen == []
        assert e.post("/echo", review())[0] == 200
    finally:
        e.server.stop()


def _raw_tls(env: Env) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", env.server.port), timeout=5)
    return env.context().wrap_socket(raw, server_hostname="localhost")


def test_chunked_bodies_and_missing_length_are_refused(env: Env) -> None:
    for headers in ("Transfer-Encoding: chunked\r\n", ""):
        with _raw_tls(env) as s:
            s.sendall(
                f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n".encode()
            )
            assert s.recv(100).startswith(b"HTTP/1.1 411")


def test_a_slow_body_times_out(tmp_path: Path) -> None:
    e = Env(tmp_path, WebhookOptions(request_timeout=0.5))
    try:
        with _raw_tls(e) as s:
            head = (
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            )
            s.sendall(head + b"\r\n{")
            started = time.monotonic()
            answer = s.recv(100)
            assert time.monotonic() - started < 3
            assert answer.startswith(b"HTTP/1.1 408")
    finally:
        e.server.stop()


def test_idle_and_handshake_timeouts_close_the_connection(tmp_path: Path) -> None:
    e = Env(tmp_path, WebhookOptions(idle_timeout=0.5, handshake_timeout=0.5))
    try:
        with _raw_tls(e) as s:
            s.settimeout(5)
            started = time.monotonic()
            assert s.recv(10) == b""
            assert time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", e.server.port), timeout=5) as plain:
            started = time.monotonic()
            assert plain.recv(10) == b""  # never started TLS: dropped after the handshake timeout
            assert time.monotonic() - started < 3
    finally:
        e.server.stop()


def test_connections_are_bounded_and_idle_ones_make_room(tmp_path: Path) -> None:
    e = Env(tmp_path, WebhookOptions(max_connections=2))
    try:
        # One connection busy with a review whose handler blocks, one idle after its handshake.
        e.release.clear()
        busy: list[int] = []

        def post_busy() -> None:
            # A long client timeout: on a loaded machine the steps below (two TLS handshakes, an eviction)
            # can take longer than the helper's 5 s while this request waits in its handler.
            c = http.client.HTTPSConnection("localhost", e.server.port, context=e.context(None), timeout=60)
            c.request("POST", "/echo", body=review("busy"), headers={"Content-Type": "application/json"})
            busy.append(c.getresponse().status)
            c.close()

        t = threading.Thread(target=post_busy)
        t.start()
        assert wait_for(lambda: len(e.seen) == 1)
        held = _raw_tls(e)
        held.settimeout(5)
        # A third client is served: the idle connection gives up its slot, the busy one keeps it.
        assert e.post("/echo", review("third"))[0] == 200
        assert held.recv(10) == b""
        e.release.set()
        t.join(60)
        assert busy == [200]
    finally:
        e.release.set()
        e.server.stop()


def _slow_client(port: int, ctx: ssl.SSLContext, opened: list[socket.socket]) -> None:
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        opened.append(raw)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        opened.append(s)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the headers
    except (OSError, ssl.SSLError):
        pass


def test_slow_header_connections_do_not_lock_out_a_real_review(tmp_path: Path) -> None:
    limit = 128 if os.environ.get("OJSCTRL_FULL") == "1" else 16
    e = Env(tmp_path, WebhookOptions(max_connections=limit))
    opened: list[socket.socket] = []
    try:
        attackers = [
            threading.Thread(target=_slow_client, args=(e.server.port, e.context(), opened))
            for _ in range(2 * limit)
        ]
        for t in attackers:
            t.start()
        for t in attackers:
            t.join(10)
        for i in range(3):
            started = time.monotonic()
            status, body, _ = e.post("/echo", review(f"real-{i}"))
            assert status == 200 and json.loads(body)["response"]["uid"] == f"real-{i}"
            assert time.monotonic() - started < 3
    finally:
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.close()
        e.server.stop()


def test_headers_trickled_slowly_meet_the_header_deadline(tmp_path: Path) -> None:
    e = Env(tmp_path, WebhookOptions(header_timeout=1.0, idle_timeout=5.0))
    try:
        with _raw_tls(e) as s:
            started = time.monotonic()
            closed = False
            for ch in b"POST /echo HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx":
                try:
                    s.sendall(bytes([ch]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
                if time.monotonic() - started > 4:
                    break
            if not closed:
                s.settimeout(1)
                try:
                    closed = s.recv(10) == b""
                except TimeoutError:
                    closed = False
                except OSError:
                    closed = True  # reset
            assert closed, "a trickling client kept its connection past the header deadline"
            assert time.monotonic() - started < 3
    finally:
        e.server.stop()


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def test_tls_12_is_the_minimum(env: Env) -> None:
    ctx = tls_server_context(str(env.dir / "tls.crt"), str(env.dir / "tls.key"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    client = env.context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", env.server.port), timeout=5) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        assert s.version() == "TLSv1.2"
        assert s.selected_alpn_protocol() in (None, "http/1.1")


def test_certificate_files_are_reloaded_when_they_change(env: Env) -> None:
    first = served_fingerprint(env.server.port)
    assert first == env.pair.cert.fingerprint(hashes.SHA256())
    ca2, pair2 = issue(CFG, dt.datetime.now(dt.UTC))
    # A certificate without its key yet (half-way through a rotation): the old pair keeps being served.
    (env.dir / "tls.crt").write_bytes(pair2.cert_pem)
    assert served_fingerprint(env.server.port) == first
    (env.dir / "tls.key").write_bytes(pair2.key_pem)
    os.utime(env.dir / "tls.key")
    assert served_fingerprint(env.server.port) == pair2.cert.fingerprint(hashes.SHA256())
    # Clients trusting the new CA are served.
    c = env.conn(ca2)
    c.request("POST", "/echo", body=review(), headers={"Content-Type": "application/json"})
    assert c.getresponse().status == 200


def test_readiness_follows_the_certificate(tmp_path: Path) -> None:
    e = Env(tmp_path, write=False)
    try:
        reason = e.server.ready()
        assert reason is not None and "no serving certificate" in reason
        # Connections before a certificate exists are closed, not hung.
        with socket.create_connection(("127.0.0.1", e.server.port), timeout=5) as raw:
            assert raw.recv(10) == b""
        write_pair(tmp_path, e.pair)
        assert e.server.ready() is None
    finally:
        e.server.stop()
    assert e.server.ready() == "webhook server not started"


def test_stop_lets_in_flight_reviews_finish_and_closes_idle_connections(tmp_path: Path) -> None:
    e = Env(tmp_path)
    idle = e.conn()
    idle.request("POST", "/echo", body=review(), headers={"Content-Type": "application/json"})
    idle.getresponse().read()
    e.release.clear()
    answers: list[int] = []

    def slow() -> None:
        answers.append(e.post("/echo", review("slow"))[0])

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 5
    while len(e.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.3, e.release.set).start()
    started = time.monotonic()
    e.server.stop()
    t.join(5)
    assert answers == [200]
    assert time.monotonic() - started < 5
    with pytest.raises((OSError, http.client.HTTPException)):
        idle.request("POST", "/echo", body=review(), headers={"Content-Type": "application/json"})
        idle.getresponse()


def test_port_in_use_raises(env: Env, tmp_path: Path) -> None:
    other = WebhookServer(
        "127.0.0.1", env.server.port, cert_file=str(tmp_path / "x"), key_file=str(tmp_path / "y"), handlers={}
    )
    with pytest.raises(OSError):
        other.start()
