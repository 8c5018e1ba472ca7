"""The test OJS server as a model of the real servers, its SDK worker simulation, and the replay evaluator.

Each behaviour asserted here is one the real servers show (sources in tests/ojsserver/server.py and
tests/ojsserver/README.md); the conformance replay itself is tests/unit/test_ojs_conformance.py.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import urllib3

from tests.ojsserver import PERSONALITIES, FailMode, OJSTestServer, uuid7
from tests.ojsserver.replay import MISSING, match, resolve
from tests.ojsserver.sdk import SimulatedWorker, sdk_worker_id

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
KEY = "k1"


@pytest.fixture(scope="module")
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager()


def _req(
    http: urllib3.PoolManager,
    method: str,
    url: str,
    body: Any = None,
    key: str | None = KEY,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    resp = http.request(method, url, body=data, headers=h, timeout=5.0, retries=False)
    try:
        return resp.status, json.loads(resp.data) if resp.data else None
    except ValueError:
        return resp.status, resp.data.decode()


def _get(http: urllib3.PoolManager, url: str, key: str | None = KEY) -> tuple[int, Any]:
    return _req(http, "GET", url, key=key)


def _beat(http: urllib3.PoolManager, srv: OJSTestServer, body: dict[str, Any]) -> tuple[int, Any]:
    return _req(http, "POST", srv.base_url + "/ojs/v1/workers/heartbeat", body)


def _workers(http: urllib3.PoolManager, srv: OJSTestServer, query: str = "") -> dict[str, Any]:
    status, body = _get(http, srv.base_url + "/ojs/v1/admin/workers" + query)
    assert status == 200, body
    return dict(body)


# ---- the evaluator must fail when it should (otherwise the replay proves nothing) -------------------------


@pytest.mark.parametrize(
    ("matcher", "actual"),
    [
        ({"$type": "array"}, {"a": 1}),
        ({"$type": "number"}, "5"),
        ({"$type": "number"}, True),
        ({"$type": "string"}, MISSING),
        ({"$gte": 1}, 0),
        ({"$gte": 1}, "2"),
        ({"$in": ["ok", "healthy"]}, "down"),
        ({"$in": [200, 503]}, 500),
        ({"$match": "^a+$"}, "ab"),
        ({"$exists": True}, MISSING),
        ({"$exists": True}, None),
        ({"$exists": True, "$type": "string"}, 5),
        ({"$size": {"$gte": 1}}, []),
        ({"$size": 2}, [1]),
        ("string:uuidv7", "0190a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b"),
        ("number:positive", 0),
        ("number:positive", "3"),
        ("available", "active"),
        (0, False),
        (1, "1"),
        (True, 1),
    ],
)
def test_evaluator_rejects(matcher: Any, actual: Any) -> None:
    assert match(matcher, actual, {}) != ""


@pytest.mark.parametrize(
    ("matcher", "actual"),
    [
        ({"$type": "array"}, []),
        ({"$gte": 1}, 3),
        ({"$in": ["drain", "draining"]}, "draining"),
        ({"$exists": True, "$type": "string"}, "2026-01-01T00:00:00Z"),
        ({"$size": {"$gte": 1}}, [1]),
        ("string:uuidv7", uuid7()),
        ("number:positive", 2),
        (0, 0),
        (True, True),
    ],
)
def test_evaluator_accepts(matcher: Any, actual: Any) -> None:
    assert match(matcher, actual, {}) == ""


def test_resolve_paths_and_templates() -> None:
    doc = {"jobs": [{"id": "x", "args": [{"m": "hi"}]}], "pagination": {"total": 3}}
    assert resolve("$.jobs[0].args[0].m", doc) == "hi"
    assert resolve("$.jobs[1].id", doc) is MISSING
    assert resolve("$.pagination.total", doc) == 3
    assert resolve("$.nope.deeper", doc) is MISSING
    ctx = {"step-1": {"job": {"id": "abc"}}}
    assert match("{{steps.step-1.response.body.job.id}}", "abc", ctx) == ""
    assert match("{{steps.step-1.response.body.job.id}}", "abd", ctx) != ""


# ---- authentication and per-backend routes -----------------------------------------------------------------

# backend -> path -> status without a key (with the right key: 200, or 404 where not routed).
_NO_KEY = {
    "redis": {"/metrics": 200, "/ojs/v1/health": 200, "/healthz": 404, "/readyz": 404, "/ojs/manifest": 401},
    "postgres": {
        "/metrics": 200,
        "/ojs/v1/health": 200,
        "/healthz": 200,
        "/readyz": 200,
        "/ojs/manifest": 401,
    },
    "nats": {"/metrics": 200, "/ojs/v1/health": 200, "/healthz": 401, "/readyz": 401, "/ojs/manifest": 401},
    "kafka": {"/metrics": 200, "/ojs/v1/health": 200, "/healthz": 401, "/readyz": 401, "/ojs/manifest": 401},
    "sqs": {"/metrics": 200, "/ojs/v1/health": 200, "/healthz": 401, "/readyz": 401, "/ojs/manifest": 401},
    "lite": {"/metrics": 401, "/ojs/v1/health": 200, "/healthz": 401, "/readyz": 401, "/ojs/manifest": 401},
}
_ROUTED_PROBES = {"redis": False, "postgres": True, "nats": False, "kafka": True, "sqs": True, "lite": True}


@pytest.mark.parametrize("backend", sorted(PERSONALITIES))
def test_public_paths_and_probe_routes_per_backend(http: urllib3.PoolManager, backend: str) -> None:
    assert set(_NO_KEY) == set(PERSONALITIES)
    with OJSTestServer(api_key=KEY, backend=backend) as srv:
        for path, status in _NO_KEY[backend].items():
            assert _get(http, srv.base_url + path, key=None)[0] == status, (backend, path)
            with_key = 404 if path in ("/healthz", "/readyz") and not _ROUTED_PROBES[backend] else 200
            assert _get(http, srv.base_url + path)[0] == with_key, (backend, path)
        assert _get(http, srv.base_url + "/ojs/v1/admin/workers", key="wrong")[0] == 403


def test_missing_key_401_wrong_key_403_and_never_recorded(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        status, body = _get(http, srv.base_url + "/ojs/v1/admin/queues", key=None)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = _get(http, srv.base_url + "/ojs/v1/admin/queues", key="wrong")
        assert status == 403 and body["error"] == {
            "code": "forbidden",
            "message": "Invalid API key.",
            "retryable": False,
            "request_id": body["error"]["request_id"],
        }
        basic = http.request(
            "GET", srv.base_url + "/ojs/v1/admin/queues", headers={"Authorization": "Basic x"}
        )
        assert basic.status == 401
        # The key is checked before routing: an unknown path without the key is 401, with it 404.
        assert _get(http, srv.base_url + "/ojs/v1/nope", key=None)[0] == 401
        assert _get(http, srv.base_url + "/ojs/v1/nope") == (404, "404 page not found\n")
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[0] == 200
        assert [r.authorized for r in srv.requests] == [False, False, False, False, True, True]
        assert all("authorization" not in r.headers for r in srv.requests)


def test_a_key_per_prefix_and_a_resolver_for_the_rest(http: urllib3.PoolManager) -> None:
    # Test affordance: one double for many clusters, each with its own key.
    asked: list[str] = []
    resolved = {"/ns/b": "kb"}

    def resolver(prefix: str) -> str | None:
        asked.append(prefix)
        return resolved.get(prefix)

    with OJSTestServer(api_key=KEY) as srv:
        srv.key_resolver = resolver
        srv.set_api_key("/ns/a", "ka")
        queues = "/ojs/v1/admin/queues"
        assert _get(http, srv.base_url + "/ns/a" + queues, key="ka")[0] == 200
        assert _get(http, srv.base_url + "/ns/a" + queues, key=KEY)[0] == 403
        assert _get(http, srv.base_url + "/ns/a" + queues, key=None)[0] == 401
        assert _get(http, srv.base_url + "/ns/b" + queues, key="kb")[0] == 200
        assert _get(http, srv.base_url + "/ns/b" + queues, key="ka")[0] == 403
        # Unresolved prefixes and requests without a prefix keep the server-wide key.
        assert _get(http, srv.base_url + "/ns/c" + queues, key=KEY)[0] == 200
        assert _get(http, srv.base_url + queues, key=KEY)[0] == 200
        assert _get(http, srv.base_url + queues, key="kb")[0] == 403
        # A changed key is looked up again when a request carries another one; public paths stay public.
        resolved["/ns/b"] = "kb2"
        assert _get(http, srv.base_url + "/ns/b" + queues, key="kb2")[0] == 200
        assert _get(http, srv.base_url + "/ns/b/ojs/v1/health", key=None)[0] == 200
        srv.set_api_key("/ns/a", None)
        assert _get(http, srv.base_url + "/ns/a" + queues, key=KEY)[0] == 200
        assert "/ns/b" in asked and "/ns/c" in asked
        assert [r.authorized for r in srv.requests][:3] == [True, False, False]


def test_metrics_is_prometheus_text(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.set_queue("q", active=3)
        _get(http, srv.base_url + "/ojs/v1/admin/queues")
        resp = http.request("GET", srv.base_url + "/metrics")
        text = resp.data.decode()
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE ojs_http_requests_total counter" in text
        assert 'ojs_http_requests_total{method="GET",path="/ojs/v1/admin/queues",status="200"} 1' in text
        assert "ojs_active_jobs 3" in text


@pytest.mark.parametrize("backend", ["redis", "lite"])
def test_health_503_when_backend_down(http: urllib3.PoolManager, backend: str) -> None:
    with OJSTestServer(api_key=KEY, backend=backend) as srv:
        status, up = _get(http, srv.base_url + "/ojs/v1/health", key=None)
        assert status == 200 and up["status"] == "ok"
        assert up["backend"] == {"type": backend, "status": "connected"}
        srv.set_healthy(False)
        status, down = _get(http, srv.base_url + "/ojs/v1/health", key=None)
        assert status == 503
        assert down["status"] == "degraded" and down["backend"]["status"] == "disconnected"
        assert set(down) == {"status", "version", "uptime_seconds", "backend"}
        assert "error" in down["backend"]


def test_manifest_needs_the_key(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY, backend="postgres") as srv:
        assert _get(http, srv.base_url + "/ojs/manifest", key=None)[0] == 401
        status, body = _get(http, srv.base_url + "/ojs/manifest")
        assert status == 200 and body["implementation"]["name"] == "ojs-backend-postgres"


# ---- workers -----------------------------------------------------------------------------------------------


def test_workers_appear_only_on_heartbeat(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.set_queue("work", available=3)
        status, fetched = _req(
            http,
            "POST",
            srv.base_url + "/ojs/v1/workers/fetch",
            {"queues": ["work"], "count": 2, "worker_id": "w"},
        )
        assert status == 200 and len(fetched["jobs"]) == 2 and fetched["job"] == fetched["jobs"][0]
        assert _workers(http, srv)["items"] == []  # a fetch registers nothing
        ids = [j["id"] for j in fetched["jobs"]]
        status, answer = _beat(http, srv, {"worker_id": "w", "active_jobs": ids})
        assert status == 200
        assert answer == {
            "state": "active",
            "directive": "continue",
            "jobs_extended": ids,
            "server_time": answer["server_time"],
        }
        assert _TIME.match(answer["server_time"])
        listed = _workers(http, srv)
        assert listed["items"] == [
            {
                "id": "w",
                "state": "running",
                "directive": "continue",
                "active_jobs": 2,
                "last_heartbeat": answer["server_time"],
            }
        ]
        assert listed["summary"] == {"total": 1, "running": 1, "quiet": 0, "stale": 0}
        assert listed["pagination"] == {"total": 1, "page": 1, "per_page": 50}


def test_heartbeat_active_jobs_shapes(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        # The spec's (and the Go/JS SDKs') count with active_job_ids is accepted by default ...
        assert (
            _beat(http, srv, {"worker_id": "go", "active_jobs": 3, "active_job_ids": ["a", "b", "c"]})[0]
            == 200
        )
        assert _beat(http, srv, {"worker_id": "one", "job_id": "j1"})[0] == 200
        assert _beat(http, srv, {"worker_id": "none"})[0] == 200
        by_id = {w["id"]: w["active_jobs"] for w in _workers(http, srv)["items"]}
        assert by_id == {"go": 3, "one": 1, "none": 0}
        for bad in (
            {"worker_id": "x", "active_jobs": "3"},
            {"worker_id": 5},
            {"worker_id": "x", "active_jobs": [1]},
        ):
            status, body = _beat(http, srv, bad)
            assert status == 400 and body["error"]["message"] == "Invalid JSON in request body."
        status, body = _beat(http, srv, {"active_jobs": []})
        assert status == 400 and body["error"]["message"] == "The 'worker_id' field is required."
    # ... and refused as the servers' decoder ([]string) refuses it, when strict.
    with OJSTestServer(api_key=KEY, strict_heartbeat=True) as srv:
        status, body = _beat(http, srv, {"worker_id": "go", "active_jobs": 0, "active_job_ids": []})
        assert status == 400 and body["error"]["message"] == "Invalid JSON in request body."
        assert _workers(http, srv)["items"] == []


def test_stale_after_60_seconds_without_heartbeat(http: urllib3.PoolManager) -> None:
    now = [1_800_000_000.0]
    with OJSTestServer(api_key=KEY, clock=lambda: now[0]) as srv:
        srv.heartbeat("old")
        srv.advance(60)
        srv.heartbeat("fresh")
        assert srv.worker_state("old") == "running"  # exactly 60 s: not yet
        now[0] += 0.5
        listed = _workers(http, srv)
        assert {w["id"]: w["state"] for w in listed["items"]} == {"fresh": "running", "old": "stale"}
        assert listed["summary"] == {"total": 2, "running": 1, "quiet": 0, "stale": 1}
        srv.heartbeat("old")  # a heartbeat brings it back
        assert srv.worker_state("old") == "running"


@pytest.mark.parametrize(
    ("backend", "stale"), [("redis", "stale"), ("kafka", "stale"), ("postgres", "running")]
)
def test_staleness_per_backend(backend: str, stale: str) -> None:
    with OJSTestServer(backend=backend) as srv:
        srv.heartbeat("w")
        srv.advance(61)
        assert srv.worker_state("w") == stale


def test_admin_workers_paginates_50_max_100(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        for i in range(120):
            srv.heartbeat(f"w{i:03d}")
        first = _workers(http, srv)
        assert len(first["items"]) == 50 and first["pagination"] == {"total": 120, "page": 1, "per_page": 50}
        third = _workers(http, srv, "?page=3")
        assert [w["id"] for w in third["items"]] == [f"w{i:03d}" for i in range(100, 120)]
        big = _workers(http, srv, "?per_page=100")
        assert len(big["items"]) == 100
        too_big = _workers(http, srv, "?per_page=500&page=0")
        assert too_big["pagination"] == {"total": 120, "page": 1, "per_page": 50}
        assert _workers(http, srv, "?page=9")["items"] == []
        assert all(s["summary"]["total"] == 120 for s in (first, third, big))


def test_quiet_reaches_the_worker_as_directive_only(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.heartbeat("w", active_jobs=["j"])
        status, body = _req(http, "POST", srv.base_url + "/ojs/v1/admin/workers/w/quiet")
        assert (status, body) == (200, {"worker_id": "w", "state": "quiet"})
        assert srv.worker_state("w") == "quiet" and srv.quiet_requests == ["w"]
        answer = srv.heartbeat("w", active_jobs=["j"])
        assert (answer["state"], answer["directive"]) == ("active", "quiet")


# backend -> (listed after quiet on an unknown id, its state, its directive)
_PHANTOM = {
    "redis": None,
    "kafka": None,
    "postgres": ("quiet", "quiet", True),
    "nats": ("quiet", "quiet", False),
    "sqs": ("quiet", "quiet", False),
    "lite": ("active", "quiet", False),
}


@pytest.mark.parametrize("backend", sorted(PERSONALITIES))
def test_quiet_on_unknown_id_answers_200(http: urllib3.PoolManager, backend: str) -> None:
    assert set(_PHANTOM) == set(PERSONALITIES)
    with OJSTestServer(api_key=KEY, backend=backend) as srv:
        status, _ = _req(http, "POST", srv.base_url + "/ojs/v1/admin/workers/ghost/quiet")
        assert status == 200
        items = _workers(http, srv)["items"]
        expected = _PHANTOM[backend]
        if expected is None:
            assert items == []  # stored, not listed ...
            assert srv.heartbeat("ghost")["directive"] == "quiet"  # ... until it heartbeats
            return
        state, directive, has_heartbeat = expected
        assert [(w["id"], w["state"], w["directive"], w["active_jobs"]) for w in items] == [
            ("ghost", state, directive, 0)
        ]
        assert ("last_heartbeat" in items[0]) is has_heartbeat


def test_quiet_state_and_default_directive_per_backend() -> None:
    seen = {}
    for backend in sorted(PERSONALITIES):
        with OJSTestServer(backend=backend) as srv:
            srv.heartbeat("idle")
            srv.heartbeat("q", active_jobs=2)
            srv._store_quiet("q")
            idle = srv._worker_item(srv._workers["idle"])
            q = srv._worker_item(srv._workers["q"])
            seen[backend] = (idle["state"], idle["directive"], q["state"], q["active_jobs"])
    assert seen == {
        "redis": ("running", "continue", "quiet", 2),
        "postgres": ("running", "continue", "quiet", 2),
        "nats": ("running", "", "quiet", 0),  # quiet replaces the record
        "kafka": ("running", "", "running", 2),  # quiet does not change kafka's state
        "sqs": ("running", "", "quiet", 2),
        "lite": ("active", "continue", "active", 2),
    }


def test_set_worker_is_a_heartbeat(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.set_worker("a", active_jobs=4)
        srv.set_worker("b", active_jobs=1, state="quiet")
        srv.set_worker("c", state="stale")
        items = {w["id"]: w for w in _workers(http, srv)["items"]}
        assert {k: (v["state"], v["active_jobs"]) for k, v in items.items()} == {
            "a": ("running", 4),
            "b": ("quiet", 1),
            "c": ("stale", 0),
        }
        assert all("last_heartbeat" in w for w in items.values())
        assert srv.worker_directive("b") == "quiet" and srv.worker_directive("a") is None
        with pytest.raises(ValueError, match="state must be"):
            srv.set_worker("d", state="drain")
        srv.remove_worker("a")
        assert srv.worker_state("a") is None


def test_worker_metadata_only_when_echoed(http: urllib3.PoolManager) -> None:
    meta = {"kubernetes_pod": "pod-a", "node": "n1"}
    for echo in (False, True):
        with OJSTestServer(api_key=KEY, echo_worker_metadata=echo) as srv:
            assert _beat(http, srv, {"worker_id": "w", "hostname": "pod-a", "metadata": meta})[0] == 200
            item = _workers(http, srv)["items"][0]
            assert (item.get("hostname"), item.get("metadata")) == (("pod-a", meta) if echo else (None, None))


# ---- queues ------------------------------------------------------------------------------------------------


def test_queue_stats_shapes(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.set_queue("q", available=5, active=2)
        assert _get(http, srv.base_url + "/ojs/v1/queues/q/stats") == (
            200,
            {"queue": {"name": "q", "available": 5, "active": 2, "completed": 0, "paused": False}},
        )
        # An unknown queue is all zeros, not 404 (ojs-backend-redis: internal/redis/queues.go).
        status, unknown = _get(http, srv.base_url + "/ojs/v1/queues/nope/stats")
        assert status == 200 and unknown["queue"]["available"] == 0
    with OJSTestServer(api_key=KEY, stats_shape="spec") as srv:
        srv.set_queue("q", available=5, active=2)
        status, body = _get(http, srv.base_url + "/ojs/v1/queues/q/stats")
        assert status == 200 and body["queue"] == "q" and body["status"] == "active"
        assert (body["stats"]["available"], body["stats"]["active"], body["stats"]["scheduled"]) == (5, 2, 0)
    with pytest.raises(ValueError, match="stats_shape"):
        OJSTestServer(stats_shape="both")
    with pytest.raises(ValueError, match="backend must be one of"):
        OJSTestServer(backend="memory")


def test_queue_lists(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        # No queue yet: a nil slice in Go, so null (ojs-backend-redis: internal/redis/queues.go).
        assert _get(http, srv.base_url + "/ojs/v1/queues")[1]["queues"] is None
        for i in range(45):
            srv.set_queue(f"q{i:02d}", available=i, active=1)
        _, listed = _get(http, srv.base_url + "/ojs/v1/queues?limit=5&offset=10")
        assert len(listed["queues"]) == 45 and listed["queues"][0] == {"name": "q00", "status": "active"}
        assert listed["pagination"] == {"total": 45, "limit": 50, "offset": 0, "has_more": False}
        _, page3 = _get(http, srv.base_url + "/ojs/v1/admin/queues?page=3&per_page=20")
        assert [q["name"] for q in page3["items"]] == ["q40", "q41", "q42", "q43", "q44"]
        assert page3["items"][4] == {
            "name": "q44",
            "paused": False,
            "counts": {
                "available": 44,
                "active": 1,
                "scheduled": 0,
                "retryable": 0,
                "completed": 0,
                "discarded": 0,
                "cancelled": 0,
            },
        }
        assert page3["pagination"] == {"total": 45, "page": 3, "per_page": 20}
        srv.fail.ignore_pagination = True
        _, everything = _get(http, srv.base_url + "/ojs/v1/admin/queues?page=2&per_page=20")
        assert len(everything["items"]) == 45
        assert everything["pagination"] == {"total": 45, "page": 1, "per_page": 45}
    with OJSTestServer(api_key=KEY, paginate_admin_queues=False) as srv:
        for i in range(30):
            srv.set_queue(f"q{i:02d}", available=1)
        _, one_page = _get(http, srv.base_url + "/ojs/v1/admin/queues?per_page=10")
        assert len(one_page["items"]) == 30


def test_fetch_ack_pause(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.set_queue("work", available=2)
        fetch = {"queues": ["work"], "worker_id": "w"}
        _, got = _req(http, "POST", srv.base_url + "/ojs/v1/workers/fetch", fetch)
        job = got["jobs"][0]
        ack = {"job_id": job["id"]}
        status, acked = _req(http, "POST", srv.base_url + "/ojs/v1/workers/ack", ack)
        assert status == 200 and acked["state"] == "completed" and acked["job"]["id"] == job["id"]
        assert _req(http, "POST", srv.base_url + "/ojs/v1/workers/ack", ack)[0] == 409
        _, stats = _get(http, srv.base_url + "/ojs/v1/admin/stats")
        assert stats["jobs"]["completed"] == 1 and stats["throughput"]["processed_per_minute"] == 0
        assert _req(http, "POST", srv.base_url + "/ojs/v1/queues/work/pause")[1] == {
            "queue": {"name": "work", "paused": True}
        }
        assert _req(http, "POST", srv.base_url + "/ojs/v1/workers/fetch", fetch)[1]["jobs"] == []
        bad = _req(http, "POST", srv.base_url + "/ojs/v1/jobs", {"type": "t", "args": {}})
        assert bad[0] == 400 and bad[1]["error"]["code"] == "invalid_request"
        assert _req(http, "DELETE", srv.base_url + "/ojs/v1/admin/queues")[0] == 405
        wrong_type = _req(
            http,
            "POST",
            srv.base_url + "/ojs/v1/jobs",
            {"type": "t", "args": []},
            headers={"Content-Type": "text/plain"},
        )
        assert wrong_type[0] == 400 and wrong_type[1]["error"]["details"] == {"received": "text/plain"}


def test_routes_no_server_has_are_404(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        assert _req(http, "POST", srv.base_url + "/ojs/v1/workers/beat", {"worker_id": "w"})[0] == 404
        assert _get(http, srv.base_url + "/ojs/v1/workers/w/health")[0] == 404
        assert _req(http, "PUT", srv.base_url + "/ojs/v1/admin/queues/q/config", {})[0] == 404


def test_cluster_prefix_and_fail_modes(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        srv.set_queue("q", available=2)
        assert _get(http, srv.base_url + "/ns/c1/ojs/v1/admin/queues")[0] == 200
        assert srv.requests[-1].path == "/ojs/v1/admin/queues"
        srv.fail = FailMode(status_500=True, times=1, paths=("/ns/c1/",))
        assert _get(http, srv.base_url + "/ns/c2/ojs/v1/admin/queues")[0] == 200
        assert _get(http, srv.base_url + "/ns/c1/ojs/v1/admin/queues")[0] == 500
        assert _get(http, srv.base_url + "/ns/c1/ojs/v1/admin/queues")[0] == 200
        srv.fail = FailMode(wrong_types=True)
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[1]["items"][0]["counts"]["available"] == "2"
        srv.fail = FailMode(negative_counts=True)
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[1]["items"][0]["counts"]["available"] < 0
        srv.fail = FailMode(admin_404=True)
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[0] == 404
        assert _get(http, srv.base_url + "/ojs/v1/queues")[0] == 200


def test_uuid7_shape() -> None:
    ids = {uuid7() for _ in range(100)}
    assert len(ids) == 100 and all(_UUID7.match(i) for i in ids)


# ---- simulated SDK workers ---------------------------------------------------------------------------------


def test_sdk_worker_ids() -> None:
    go = sdk_worker_id("go", "pod-a-7d9f", pid=7)
    assert re.fullmatch(r"worker_pod-a-7d9f_7_\d{18,}", go)
    assert re.fullmatch(r"worker_[0-9a-f]{16}", sdk_worker_id("python", "pod-a"))
    assert re.fullmatch(
        r"worker_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        sdk_worker_id("js", "p"),
    )
    with pytest.raises(ValueError, match="style"):
        sdk_worker_id("rust", "p")


@pytest.mark.parametrize("style", ["go", "python", "js"])
def test_sdk_heartbeat_bodies_and_quiet_not_seen(style: str) -> None:
    with OJSTestServer(api_key=KEY) as srv:
        worker = SimulatedWorker(srv.base_url, KEY, style=style, hostname="pod-a", interval=0.05, busy=2)
        assert worker.beat() is not None
        sent = srv.requests[-1]
        assert sent.authorized is True and sent.path == "/ojs/v1/workers/heartbeat"
        expected_keys = {
            "go": {"worker_id", "state", "active_jobs", "active_job_ids"},
            "python": {"worker_id", "active_jobs", "visibility_timeout_ms"},
            "js": {
                "worker_id",
                "state",
                "active_jobs",
                "active_job_ids",
                "hostname",
                "pid",
                "queues",
                "concurrency",
            },
        }[style]
        assert set(sent.body) == expected_keys
        assert sent.body["active_jobs"] == (worker.active_job_ids() if style == "python" else 2)
        assert srv.worker_state(worker.worker_id) == "running"
        assert srv._workers[worker.worker_id].active_jobs == 2
        # Quiet is stored and answered as directive; the SDK reads state ("active") and keeps running.
        srv._store_quiet(worker.worker_id)
        worker.beat()
        assert worker.seen_directives[-1] == "quiet" and worker.seen_states[-1] == "active"
        assert worker.state == "running"
        assert srv.worker_state(worker.worker_id) == "quiet"


def test_sdk_worker_thread_and_strict_server() -> None:
    with OJSTestServer(api_key=KEY, strict_heartbeat=True) as srv:
        go = SimulatedWorker(srv.base_url, KEY, style="go", hostname="pod-go", interval=0.02).start()
        py = SimulatedWorker(srv.base_url, KEY, style="python", hostname="pod-py", interval=0.02).start()
        deadline = time.monotonic() + 5
        while (len(go.errors) < 2 or py.beats < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        go.stop(timeout=2)
        py.stop(timeout=2)
        # A strict (server-faithful) double refuses the Go SDK's integer active_jobs: never listed.
        assert go.errors[:2] == [400, 400] and go.beats == 0
        assert srv.worker_state(go.worker_id) is None
        assert py.beats >= 2 and srv.worker_state(py.worker_id) == "running"
        py.set_busy(3)
        py.beat()
        assert srv._workers[py.worker_id].active_jobs == 3
    wrong = SimulatedWorker("http://127.0.0.1:1", "k", style="js", interval=1)
    assert wrong.beat() is None and wrong.errors == [0]
    with pytest.raises(ValueError, match="interval"):
        SimulatedWorker("http://x", None, interval=0)


def test_python_sdk_stops_beating_when_quiet_and_idle() -> None:
    with OJSTestServer() as srv:
        worker = SimulatedWorker(srv.base_url, None, style="python", hostname="p")
        worker.state = "quiet"  # as after a server answering state "quiet", which no server does
        assert worker.body() is None and worker.beat() is None
        worker.set_busy(1)
        assert worker.body() is not None


def test_resolve_missing_repr() -> None:
    assert repr(MISSING) == "<missing>"
    assert resolve("$.a[0]", {"a": []}) is MISSING
    assert match([], [], {}) == "" and match([1], [2], {}) != ""
