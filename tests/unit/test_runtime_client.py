"""Unit tests for ojsctrl.runtime.client: paths, keys, error mapping, rate limiting, and retries against a
loopback server."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import orjson
import pytest

from ojsctrl.runtime.client import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    LEASES,
    NAMESPACES,
    PODS,
    AlreadyExistsError,
    ApiError,
    Client,
    ClientOptions,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    Resource,
    TokenBucket,
    _error_from,
    _parse_retry_after,
    object_key,
)

OJS = Resource("ojs.openjobspec.dev", "v1alpha1", "ojsclusters", "OJSCluster")


# --------------------------------------------------------------------------- Resource
@pytest.mark.parametrize(
    ("resource", "args", "expected"),
    [
        (PODS, (), "/api/v1/pods"),
        (PODS, ("ns",), "/api/v1/namespaces/ns/pods"),
        (PODS, ("ns", "p"), "/api/v1/namespaces/ns/pods/p"),
        (PODS, ("ns", "p", "status"), "/api/v1/namespaces/ns/pods/p/status"),
        (PODS, ("ns", None, "status"), "/api/v1/namespaces/ns/pods"),
        (CONFIGMAPS, (None, "c"), "/api/v1/configmaps/c"),
        (DEPLOYMENTS, (), "/apis/apps/v1/deployments"),
        (DEPLOYMENTS, ("ns", "d", "scale"), "/apis/apps/v1/namespaces/ns/deployments/d/scale"),
        (LEASES, ("kube-system", "l"), "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"),
        (
            OJS,
            ("team-a", "c1", "status"),
            "/apis/ojs.openjobspec.dev/v1alpha1/namespaces/team-a/ojsclusters/c1/status",
        ),
        # Cluster-scoped: a namespace, if given, is not part of the path.
        (NAMESPACES, (), "/api/v1/namespaces"),
        (NAMESPACES, ("ignored", "kube-system"), "/api/v1/namespaces/kube-system"),
        (
            CRDS,
            (None, "x.example.com"),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.example.com",
        ),
        # Names and namespaces are quoted as one path segment each.
        (PODS, ("a b", "x/y?z"), "/api/v1/namespaces/a%20b/pods/x%2Fy%3Fz"),
        (PODS, ("ns", "%"), "/api/v1/namespaces/ns/pods/%25"),
    ],
)
def test_resource_path(resource: Resource, args: tuple[str | None, ...], expected: str) -> None:
    assert resource.path(*args) == expected


def test_resource_api_version_and_str() -> None:
    assert PODS.api_version == "v1"
    assert str(PODS) == "pods"
    assert DEPLOYMENTS.api_version == "apps/v1"
    assert str(DEPLOYMENTS) == "deployments.apps"
    assert OJS.api_version == "ojs.openjobspec.dev/v1alpha1"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"metadata": {"namespace": "ns", "name": "a"}}, "ns/a"),
        ({"metadata": {"name": "node-1"}}, "node-1"),
        ({"metadata": {"namespace": "", "name": "node-1"}}, "node-1"),
        ({"metadata": {"namespace": None, "name": "x"}}, "x"),
    ],
)
def test_object_key(obj: dict[str, object], expected: str) -> None:
    assert object_key(obj) == expected


# --------------------------------------------------------------------------- errors
def status_body(code: int, reason: str, message: str, **details: object) -> bytes:
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if details:
        body["details"] = details
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("status", "reason", "cls"),
    [
        (403, "Forbidden", ForbiddenError),
        (404, "NotFound", NotFoundError),
        (409, "AlreadyExists", AlreadyExistsError),
        (409, "Conflict", ConflictError),
        (410, "Expired", GoneError),
        (422, "Invalid", InvalidError),
        (500, "InternalError", ApiError),
        (429, "TooManyRequests", ApiError),
    ],
)
def test_error_from_maps_status_to_type(status: int, reason: str, cls: type[ApiError]) -> None:
    err = _error_from(status, status_body(status, reason, "some message"), "PUT", "pods ns/a", None)
    assert type(err) is cls
    assert err.status == status
    assert err.reason == reason
    assert err.message == "some message"
    text = str(err)
    for part in ("PUT", "pods ns/a", str(status), reason, "some message"):
        assert part in text


def test_already_exists_is_a_conflict_but_conflict_is_not_already_exists() -> None:
    exists = _error_from(409, status_body(409, "AlreadyExists", "m"), "POST", "t", None)
    conflict = _error_from(409, status_body(409, "Conflict", "m"), "PUT", "t", None)
    assert isinstance(exists, ConflictError)
    assert not isinstance(conflict, AlreadyExistsError)


def test_invalid_carries_causes() -> None:
    causes = [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.replicas"},
        {"reason": "FieldValueInvalid", "message": "bad", "field": "metadata.name"},
    ]
    data = status_body(422, "Invalid", 'OJSCluster.ojs "x" is invalid', causes=causes, name="x")
    err = _error_from(422, data, "PATCH", "ojsclusters ns/x", None)
    assert isinstance(err, InvalidError)
    assert err.causes == causes
    assert err.details["name"] == "x"
    assert "ojsclusters ns/x" in str(err)


def test_invalid_without_details_has_no_causes() -> None:
    err = _error_from(422, status_body(422, "Invalid", "m"), "PATCH", "t", None)
    assert isinstance(err, InvalidError)
    assert err.causes == []


@pytest.mark.parametrize(
    "data", [b"<html>bad gateway</html>", b"not json at all", b"[1, 2, 3]", b'"just a string"']
)
def test_error_from_non_status_body(data: bytes) -> None:
    err = _error_from(502, data, "GET", "/api/v1/pods", 1.5)
    assert type(err) is ApiError
    assert err.status == 502
    assert err.reason == "HTTP502"
    assert err.message == data.decode()
    assert err.retry_after == 1.5
    assert err.body == {}
    text = str(err)
    assert "GET" in text
    assert "/api/v1/pods" in text
    assert "502" in text
    assert "HTTP502" in text


def test_error_from_empty_and_undecodable_body() -> None:
    err = _error_from(404, b"", "GET", "pods ns/a", None)
    assert isinstance(err, NotFoundError)
    assert err.reason == "HTTP404"
    assert "pods ns/a" in str(err)
    err = _error_from(500, b"\xff\xfe" + b"x" * 1000, "GET", "t", None)
    assert err.reason == "HTTP500"
    assert len(err.message) <= 300


# --------------------------------------------------------------------------- TokenBucket
def test_token_bucket_burst_then_spacing() -> None:
    bucket = TokenBucket(qps=10.0, burst=3)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    w4 = bucket.reserve()
    w5 = bucket.reserve()
    w6 = bucket.reserve()
    # Each reservation beyond the burst waits one more 1/qps; only microseconds have passed meanwhile.
    assert 0.05 < w4 <= 0.1
    assert 0.15 < w5 <= 0.2
    assert 0.25 < w6 <= 0.3


def test_token_bucket_refills_over_time() -> None:
    bucket = TokenBucket(qps=1000.0, burst=1)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() > 0.0
    # After well over the debt plus one token's worth of time, the next reservation is free again.
    time.sleep(0.05)
    assert bucket.reserve() == 0.0


@pytest.mark.parametrize("qps", [0.0, -1.0])
def test_token_bucket_disabled(qps: float) -> None:
    bucket = TokenBucket(qps=qps, burst=1)
    assert all(bucket.reserve() == 0.0 for _ in range(1000))


def test_token_bucket_burst_at_least_one() -> None:
    bucket = TokenBucket(qps=10.0, burst=0)
    assert bucket.burst == 1
    assert bucket.reserve() == 0.0
    assert bucket.reserve() > 0.0


# --------------------------------------------------------------------------- Retry-After
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert _parse_retry_after(value) == expected


# ------------------------------------------------------------------- retries, against a loopback server
class _Unavailable(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]] = []
    retry_after: ClassVar[str | None] = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        type(self).seen.append(self.command)
        body = b'{"kind":"Status","code":503,"reason":"ServiceUnavailable","message":"busy"}'
        self.send_response(503)
        if type(self).retry_after is not None:
            self.send_header("Retry-After", type(self).retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer


@pytest.fixture
def unavailable() -> Iterator[tuple[Client, type[_Unavailable]]]:
    from kubernetes import client as k8s

    handler = type("Handler", (_Unavailable,), {"seen": [], "retry_after": None})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = k8s.Configuration()
    cfg.host = f"http://127.0.0.1:{srv.server_address[1]}"
    yield Client(cfg, ClientOptions(max_retries=2)), handler
    srv.shutdown()
    srv.server_close()


def test_post_is_not_repeated_on_503_without_retry_after(
    unavailable: tuple[Client, type[_Unavailable]],
) -> None:
    client, handler = unavailable
    with pytest.raises(ApiError) as e:
        client.create(CONFIGMAPS, {"metadata": {"name": "x"}}, "ns")
    assert e.value.status == 503
    assert handler.seen == ["POST"], "a POST may have created the object: it must not be sent twice"


def test_get_and_put_are_repeated_on_503(unavailable: tuple[Client, type[_Unavailable]]) -> None:
    client, handler = unavailable
    with pytest.raises(ApiError):
        client.get(CONFIGMAPS, "x", "ns")
    with pytest.raises(ApiError):
        client.replace(CONFIGMAPS, {"metadata": {"name": "x", "resourceVersion": "1"}}, "ns")
    assert handler.seen == ["GET"] * 3 + ["PUT"] * 3


def test_post_is_repeated_when_the_server_says_when(unavailable: tuple[Client, type[_Unavailable]]) -> None:
    client, handler = unavailable
    handler.retry_after = "0"
    with pytest.raises(ApiError):
        client.create(CONFIGMAPS, {"metadata": {"name": "x"}}, "ns")
    assert handler.seen == ["POST"] * 3


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    paths: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        host = self.headers.get("Host")
        body = orjson.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}, "host": host})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("prefix", ["", "/under/a/proxy"])
def test_requests_reach_the_servers_path_with_the_query_and_reuse_one_connection(prefix: str) -> None:
    """The API server's pool is held directly (no pool manager per request): the host's path prefix and
    the query string still reach the server, and requests share the pooled connection."""
    from kubernetes import client as k8s

    handler = type("Handler", (_Echo,), {"paths": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = k8s.Configuration()
        cfg.host = f"http://127.0.0.1:{srv.server_address[1]}{prefix}"
        client = Client(cfg, ClientOptions(max_retries=0))
        got = client.get(CONFIGMAPS, "x", "ns", resource_version="0")
        client.get(CONFIGMAPS, "x", "ns")
        assert got["host"] == f"127.0.0.1:{srv.server_address[1]}"
        assert handler.paths == [
            f"{prefix}/api/v1/namespaces/ns/configmaps/x?resourceVersion=0",
            f"{prefix}/api/v1/namespaces/ns/configmaps/x",
        ]
        assert client._direct is not None and client._direct.num_connections == 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_derive_shares_the_server_and_credentials_but_not_the_pool_or_options() -> None:
    from kubernetes import client as k8s

    cfg = k8s.Configuration()
    cfg.host = "https://127.0.0.1:6443"
    cfg.api_key = {"BearerToken": "Bearer secret"}
    shared = Client(cfg, ClientOptions(max_retries=5, timeout=30))
    own = shared.derive(ClientOptions(max_retries=0, timeout=2, user_agent="x/leader-election"))
    assert own.host == shared.host
    assert own._headers(None, "application/json")["Authorization"] == "Bearer secret"
    assert own._pool is not shared._pool and own._bucket is not shared._bucket
    assert (own.options.max_retries, own.options.timeout) == (0, 2)
    assert shared.options.max_retries == 5


def test_token_bucket_wait_for_reports_without_taking() -> None:
    clock = [100.0]
    bucket = TokenBucket(qps=10.0, burst=10, now=lambda: clock[0])
    assert bucket.wait_for(5) == 0.0
    assert bucket.wait_for(5) == 0.0  # asking took nothing
    for _ in range(10):
        bucket.reserve()
    # Empty: five tokens are half a second away at 10/s; more than the burst is capped at the burst.
    assert bucket.wait_for(5) == pytest.approx(0.5)
    assert bucket.wait_for(50) == pytest.approx(1.0)
    clock[0] += 0.3
    assert bucket.wait_for(5) == pytest.approx(0.2)
    clock[0] += 0.2
    assert bucket.wait_for(5) == 0.0
    # A debt (reservations beyond the burst) is paid before the tokens count.
    for _ in range(10):
        bucket.reserve()
    assert bucket.wait_for(5) == pytest.approx(1.0)


def test_token_bucket_wait_for_unlimited() -> None:
    bucket = TokenBucket(qps=0.0, burst=1)
    bucket.reserve()
    assert bucket.wait_for(1) == 0.0
