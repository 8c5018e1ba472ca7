"""The test OJS server against the OJS conformance cases (replayed step by step) and its own controls."""

from __future__ import annotations

import filecmp
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.ojsserver import FailMode, OJSTestServer, conformance_dir, uuid7

CASES = sorted(Path(conformance_dir()).glob("*.json"))
# shared/ sits beside the repository (in CI too); fall back to the workplace's absolute path.
REFERENCE = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[3] / "shared" / "reference" / "ojs-conformance",
            Path("/work/shared/reference/ojs-conformance"),
        )
        if p.is_dir()
    ),
    Path("/work/shared/reference/ojs-conformance"),
)
API_KEY = "conformance-key"

# ---- a tiny evaluator for the assertion shapes the conformance files use ----------------------------------

MISSING: Any = object()
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TEMPLATE = re.compile(r"^\{\{steps\.([^.]+)\.response\.body\.(.+)\}\}$")
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def resolve(path: str, data: Any) -> Any:
    """Value at a ``$.a.b[0].c`` path, or MISSING."""
    assert path.startswith("$"), path
    current = data
    for name, index in _TOKEN.findall(path[1:]):
        if name:
            if not isinstance(current, dict) or name not in current:
                return MISSING
            current = current[name]
        else:
            i = int(index)
            if not isinstance(current, list) or i >= len(current):
                return MISSING
            current = current[i]
    return current


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shorthand(matcher: str, actual: Any) -> str | None:
    """Check a ``kind:detail`` shorthand; None when ``matcher`` is not one."""
    checks: dict[str, Callable[[Any], bool]] = {
        "string:uuid": lambda v: isinstance(v, str) and bool(_UUID.match(v)),
        "string:uuidv7": lambda v: isinstance(v, str) and bool(_UUID7.match(v)),
        "string:datetime": lambda v: isinstance(v, str) and bool(_DATETIME.match(v)),
        "string:nonempty": lambda v: isinstance(v, str) and v != "",
        "number:positive": lambda v: _is_number(v) and v > 0,
        "number:non_negative": lambda v: _is_number(v) and v >= 0,
        "array:nonempty": lambda v: isinstance(v, list) and len(v) > 0,
        "exists": lambda v: v is not MISSING and v is not None,
        "any": lambda v: v is not MISSING,
    }
    check = checks.get(matcher)
    if check is None:
        return None
    return "" if check(actual) else f"expected {matcher}, got {actual!r}"


def match(matcher: Any, actual: Any, context: dict[str, Any]) -> str:
    """'' when ``actual`` satisfies ``matcher``, else why not."""
    if isinstance(matcher, str):
        template = _TEMPLATE.match(matcher)
        if template:
            step, rest = template.groups()
            matcher = resolve("$." + rest, context[step])
            assert matcher is not MISSING, f"template {template.group(0)} resolves to nothing"
        else:
            short = _shorthand(matcher, actual)
            if short is not None:
                return short
        return (
            "" if actual == matcher and isinstance(actual, str) else f"expected {matcher!r}, got {actual!r}"
        )
    if isinstance(matcher, bool) or matcher is None:
        return "" if actual is matcher else f"expected {matcher!r}, got {actual!r}"
    if isinstance(matcher, int | float):
        ok = _is_number(actual) and actual == matcher
        return "" if ok else f"expected {matcher!r}, got {actual!r}"
    if isinstance(matcher, dict) and any(k.startswith("$") for k in matcher):
        for op, arg in matcher.items():
            why = _operator(op, arg, actual, context)
            if why:
                return why
        return ""
    if isinstance(matcher, dict):
        if not isinstance(actual, dict):
            return f"expected an object, got {actual!r}"
        for key, sub in matcher.items():
            why = match(sub, actual.get(key, MISSING), context)
            if why:
                return f"{key}: {why}"
        return ""
    raise AssertionError(f"unsupported matcher {matcher!r}")


def _operator(op: str, arg: Any, actual: Any, context: dict[str, Any]) -> str:
    if op == "$exists":
        present = actual is not MISSING and actual is not None
        return "" if present == arg else f"expected $exists={arg}, got {actual!r}"
    if op == "$type":
        got = "missing" if actual is MISSING else json_type(actual)
        return "" if got == arg else f"expected type {arg}, got {got}"
    if op == "$in":
        return "" if any(not match(m, actual, context) for m in arg) else f"{actual!r} not in {arg!r}"
    if op == "$match":
        ok = isinstance(actual, str) and re.search(arg, actual) is not None
        return "" if ok else f"{actual!r} does not match {arg!r}"
    if op == "$size":
        if not isinstance(actual, list):
            return f"expected an array for $size, got {actual!r}"
        return match(arg, len(actual), context)
    bounds = {
        "$gte": lambda a, b: a >= b,
        "$gt": lambda a, b: a > b,
        "$lte": lambda a, b: a <= b,
        "$lt": lambda a, b: a < b,
    }
    if op in bounds:
        ok = _is_number(actual) and bounds[op](actual, arg)
        return "" if ok else f"expected {op} {arg}, got {actual!r}"
    raise AssertionError(f"unsupported assertion operator {op}")


def check_step(
    step: dict[str, Any], status: int, headers: dict[str, str], body: Any, context: dict[str, Any]
) -> list[str]:
    """All failed assertions of one step."""
    failures: list[str] = []
    assertions = step.get("assertions", {})
    if "status" in assertions:
        why = match(assertions["status"], status, context)
        if why:
            failures.append(f"status: {why}")
    for name, expected in assertions.get("headers", {}).items():
        got = headers.get(name.lower(), "")
        if got.split(";")[0].strip() != expected:
            failures.append(f"header {name}: expected {expected!r}, got {got!r}")
    for path, matcher in assertions.get("body", {}).items():
        why = match(matcher, resolve(path, body), context)
        if why:
            failures.append(f"{path}: {why}")
    return failures


def substitute(value: Any, context: dict[str, Any]) -> Any:
    """Replace ``{{steps.X.response.body.path}}`` templates in a request."""
    if isinstance(value, str):
        m = _TEMPLATE.match(value)
        return resolve("$." + m.group(2), context[m.group(1)]) if m else value
    if isinstance(value, dict):
        return {k: substitute(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, context) for v in value]
    return value


def run_case(case: dict[str, Any], server: OJSTestServer, http: urllib3.PoolManager) -> list[str]:
    context: dict[str, Any] = {}
    failures: list[str] = []
    for step in case["steps"]:
        headers = {**step.get("headers", {}), "Authorization": f"Bearer {API_KEY}"}
        body = substitute(step.get("body"), context)
        resp = http.request(
            step["action"],
            server.base_url + substitute(step["path"], context),
            headers=headers,
            body=None if body is None else json.dumps(body).encode(),
            timeout=5.0,
            retries=False,
        )
        payload = json.loads(resp.data) if resp.data else None
        context[step["id"]] = payload
        resp_headers = {k.lower(): v for k, v in resp.headers.items()}
        failures += [
            f"{step['id']}: {f}" for f in check_step(step, resp.status, resp_headers, payload, context)
        ]
    return failures


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager()


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_conformance_case(path: Path, http: urllib3.PoolManager) -> None:
    case = json.loads(path.read_text())
    with OJSTestServer(api_key=API_KEY) as server:
        assert run_case(case, server, http) == []


def test_conformance_cases_present() -> None:
    assert len(CASES) >= 8


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared reference tree not present")
def test_conformance_copies_match_reference() -> None:
    names = sorted(p.name for p in REFERENCE.glob("*.json"))
    assert names == [p.name for p in CASES]
    _, mismatch, errors = filecmp.cmpfiles(REFERENCE, conformance_dir(), names, shallow=False)
    assert mismatch == [] and errors == []


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


# ---- the server's own behaviour ---------------------------------------------------------------------------


def _get(http: urllib3.PoolManager, url: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = http.request("GET", url, headers=headers, timeout=5.0, retries=False)
    return resp.status, json.loads(resp.data) if resp.data else None


def test_auth_required_except_health(http: urllib3.PoolManager) -> None:
    with OJSTestServer(api_key="k1") as srv:
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[0] == 401
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues", "wrong")[0] == 401
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues", "k1")[0] == 200
        assert _get(http, srv.base_url + "/ojs/v1/health")[0] == 200
        recorded = srv.requests
        assert [r.authorized for r in recorded] == [False, False, True, False]
        assert all("authorization" not in r.headers for r in recorded)


def test_health_degraded(http: urllib3.PoolManager) -> None:
    with OJSTestServer() as srv:
        srv.set_healthy(False)
        status, body = _get(http, srv.base_url + "/ojs/v1/health")
        assert status == 503 and body["status"] == "degraded"


def test_set_queue_and_pagination(http: urllib3.PoolManager) -> None:
    with OJSTestServer() as srv:
        for i in range(45):
            srv.set_queue(f"q{i:02d}", available=i, active=1)
        _, page1 = _get(http, srv.base_url + "/ojs/v1/admin/queues?page=1&per_page=20")
        _, page3 = _get(http, srv.base_url + "/ojs/v1/admin/queues?page=3&per_page=20")
        _, by_offset = _get(http, srv.base_url + "/ojs/v1/admin/queues?limit=20&offset=40")
        assert [q["name"] for q in page1["items"]][:2] == ["q00", "q01"]
        assert page1["pagination"] == {"total": 45, "page": 1, "per_page": 20}
        assert [q["name"] for q in page3["items"]] == ["q40", "q41", "q42", "q43", "q44"]
        assert by_offset["items"] == page3["items"]
        assert page3["items"][4]["counts"]["available"] == 44
        _, listed = _get(http, srv.base_url + "/ojs/v1/queues?limit=200")
        assert listed["pagination"]["total"] == 45 and not listed["pagination"]["has_more"]
        srv.fail.ignore_pagination = True
        _, everything = _get(http, srv.base_url + "/ojs/v1/admin/queues?page=2&per_page=20")
        assert len(everything["items"]) == 45


def test_fetch_ack_and_worker_tracking(http: urllib3.PoolManager) -> None:
    with OJSTestServer() as srv:
        srv.set_queue("work", available=3)
        body = json.dumps({"queues": ["work"], "count": 2, "worker_id": "pod-a"}).encode()
        resp = http.request(
            "POST",
            srv.base_url + "/ojs/v1/workers/fetch",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        jobs = json.loads(resp.data)["jobs"]
        assert len(jobs) == 2 and all(j["state"] == "active" for j in jobs)
        _, workers = _get(http, srv.base_url + "/ojs/v1/admin/workers")
        assert workers["items"] == [
            {
                "id": "pod-a",
                "state": "running",
                "directive": "continue",
                "active_jobs": 2,
                "last_heartbeat_at": workers["items"][0]["last_heartbeat_at"],
            }
        ]
        ack = json.dumps({"job_id": jobs[0]["id"]}).encode()
        assert http.request("POST", srv.base_url + "/ojs/v1/workers/ack", body=ack).status == 200
        assert http.request("POST", srv.base_url + "/ojs/v1/workers/ack", body=ack).status == 409
        _, stats = _get(http, srv.base_url + "/ojs/v1/queues/work/stats")
        assert (stats["queue"]["available"], stats["queue"]["active"], stats["queue"]["completed"]) == (
            1,
            1,
            1,
        )
        _, admin_stats = _get(http, srv.base_url + "/ojs/v1/admin/stats")
        assert admin_stats["jobs"]["completed"] == 1 and admin_stats["workers"] == 1
        # Quiet: the worker stops getting jobs.
        assert http.request("POST", srv.base_url + "/ojs/v1/admin/workers/pod-a/quiet").status == 200
        assert srv.worker_state("pod-a") == "quiet" and srv.quiet_requests == ["pod-a"]
        resp = http.request("POST", srv.base_url + "/ojs/v1/workers/fetch", body=body)
        assert json.loads(resp.data)["jobs"] == []


def test_set_worker_and_errors(http: urllib3.PoolManager) -> None:
    with OJSTestServer() as srv:
        srv.set_worker("w1", active_jobs=4)
        _, workers = _get(http, srv.base_url + "/ojs/v1/admin/workers")
        assert workers["items"][0]["active_jobs"] == 4
        srv.remove_worker("w1")
        _, workers = _get(http, srv.base_url + "/ojs/v1/admin/workers")
        assert workers["items"] == []
        assert _get(http, srv.base_url + "/ojs/v1/nope")[0] == 404
        assert http.request("DELETE", srv.base_url + "/ojs/v1/admin/queues").status == 405
        bad = http.request("POST", srv.base_url + "/ojs/v1/jobs", body=b'{"type": "t", "args": {}}')
        assert bad.status == 400 and json.loads(bad.data)["error"]["code"] == "invalid_request"
        assert _get(http, srv.base_url + "/ojs/v1/queues/missing/stats")[0] == 404


def test_fail_mode_times_and_paths(http: urllib3.PoolManager) -> None:
    with OJSTestServer() as srv:
        srv.fail = FailMode(status_500=True, times=1, paths=("/ojs/v1/admin/",))
        assert _get(http, srv.base_url + "/ojs/v1/health")[0] == 200
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[0] == 500
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[0] == 200
        srv.fail = FailMode(wrong_types=True)
        srv.set_queue("q", available=2)
        _, body = _get(http, srv.base_url + "/ojs/v1/admin/queues")
        assert body["items"][0]["counts"]["available"] == "2"
        srv.fail = FailMode(admin_404=True)
        assert _get(http, srv.base_url + "/ojs/v1/admin/queues")[0] == 404
        assert _get(http, srv.base_url + "/ojs/v1/queues")[0] == 200


def test_uuid7_shape() -> None:
    ids = {uuid7() for _ in range(100)}
    assert len(ids) == 100 and all(_UUID7.match(i) for i in ids)
