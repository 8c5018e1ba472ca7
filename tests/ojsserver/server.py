"""A small, protocol-faithful OJS server for tests (the one test double ARCHITECTURE.md allows).

It answers the shapes of the OJS conformance cases in ``reference/ojs-conformance/`` (copied next to this
file): health, enqueue, fetch, ack/nack, heartbeat and worker health, queue list and stats, and the admin
API (queues with per-state counts and ``page``/``per_page`` pagination, stats, workers, quiet, queue
config). State is in memory, guarded by one lock; every handler runs on its own thread.

Test controls: :meth:`OJSTestServer.set_queue` and :meth:`OJSTestServer.set_worker` set counts directly,
:meth:`OJSTestServer.set_healthy` flips ``/ojs/v1/health`` to 503, :attr:`OJSTestServer.fail` holds the
fault knobs (:class:`FailMode`), and :attr:`OJSTestServer.requests` records what clients sent (the
``Authorization`` header is never recorded, only whether it was accepted).

Usage::

    with OJSTestServer(api_key="k") as srv:
        srv.set_queue("default", available=12, active=3)
        client.queue_stats(srv.base_url, "k")
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MEDIA_TYPE = "application/openjobspec+json"
OJS_VERSION = "1.0"
_MAX_REQUEST_BODY = 1024 * 1024
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
# Paths anyone may call, as real OJS servers do so probes work without the key.
_PUBLIC_PATHS = frozenset({"/ojs/v1/health", "/ojs/manifest"})
_DRAINING_STATES = frozenset({"drain", "draining", "shutting_down", "terminate"})


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, version 7, variant 10, random rest."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class FailMode:
    """Fault knobs. Faults apply to every request whose path starts with one of ``paths`` (all when empty),
    to the next ``times`` matching requests only when ``times`` is set.

    ``admin_404``: /ojs/v1/admin/* answers 404 (no admin extension). ``ignore_pagination``: admin lists
    return everything in one page, as some real servers do. The others replace the answer: ``status_500``,
    ``slow`` (delay in seconds, then the normal answer), ``hang`` (no answer until released or stopped),
    ``malformed_json`` (truncated body), ``huge_json`` (``huge_bytes`` of valid JSON, no Content-Length),
    ``wrong_types`` (every number in the body becomes a string), ``negative_counts`` (every number
    becomes negative).
    """

    admin_404: bool = False
    ignore_pagination: bool = False
    status_500: bool = False
    slow: float = 0.0
    hang: bool = False
    malformed_json: bool = False
    huge_json: bool = False
    huge_bytes: int = 8 * 1024 * 1024
    wrong_types: bool = False
    negative_counts: bool = False
    paths: tuple[str, ...] = ()
    times: int | None = None

    def _any_fault(self) -> bool:
        return bool(
            self.status_500
            or self.slow
            or self.hang
            or self.malformed_json
            or self.huge_json
            or self.wrong_types
            or self.negative_counts
        )


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: no secret headers; ``authorized`` tells whether the bearer key matched."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    authorized: bool | None
    body: Any


@dataclass
class _Queue:
    name: str
    created_at: str
    available: deque[str] = field(default_factory=deque)
    active: set[str] = field(default_factory=set)
    # Counts set by set_queue on top of real jobs; a fetch turns a synthetic available job into a real one.
    synthetic_available: int = 0
    synthetic_active: int = 0
    completed: int = 0
    discarded: int = 0
    paused: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "available": len(self.available) + self.synthetic_available,
            "active": len(self.active) + self.synthetic_active,
            "scheduled": 0,
            "retryable": 0,
            "completed": self.completed,
            "discarded": self.discarded,
            "cancelled": 0,
        }


@dataclass
class _Worker:
    id: str
    state: str = "running"
    directive: str = "continue"
    active: set[str] = field(default_factory=set)
    synthetic_active: int = 0
    last_heartbeat: str = field(default_factory=_now)

    def active_jobs(self) -> int:
        return len(self.active) + self.synthetic_active


class _Reply:
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, code: str, message: str, *, retryable: bool = False) -> _Reply:
    return _Reply(
        status,
        {"error": {"code": code, "message": message, "retryable": retryable, "request_id": f"req_{uuid7()}"}},
    )


class _BadRequest(Exception):
    pass


class OJSTestServer:
    """In-memory OJS server on 127.0.0.1 (port 0 = any free port). Thread-safe; start()/stop() or ``with``."""

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.fail = FailMode()
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._queues: dict[str, _Queue] = {}
        self._workers: dict[str, _Worker] = {}
        self._healthy = True
        self._started = time.monotonic()
        self._requests: deque[RecordedRequest] = deque(maxlen=10_000)
        self.quiet_requests: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> OJSTestServer:
        """Bind and serve on a background thread; returns self."""
        server = self

        class Handler(_Handler):
            app = server

        httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._release.clear()
        # A short poll interval keeps stop() (which waits for the serve loop to notice) fast.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="ojs-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung handlers and close the socket."""
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> OJSTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self._host}:{self.port}"

    # ---- test controls -----------------------------------------------------------------------------------

    def set_queue(self, name: str, *, available: int | None = None, active: int | None = None) -> None:
        """Set a queue's available/active counts (creating it); real jobs in that state are replaced."""
        with self._lock:
            q = self._queue(name)
            if available is not None:
                for job_id in q.available:
                    self._jobs.pop(job_id, None)
                q.available.clear()
                q.synthetic_available = available
            if active is not None:
                for job_id in q.active:
                    self._jobs.pop(job_id, None)
                    for w in self._workers.values():
                        w.active.discard(job_id)
                q.active.clear()
                q.synthetic_active = active

    def remove_queue(self, name: str) -> None:
        """Forget a queue and its jobs."""
        with self._lock:
            q = self._queues.pop(name, None)
            if q is not None:
                for job_id in (*q.available, *q.active):
                    self._jobs.pop(job_id, None)

    def set_worker(self, worker_id: str, *, active_jobs: int = 0, state: str = "running") -> None:
        """Register (or update) a worker reporting ``active_jobs`` jobs in progress."""
        with self._lock:
            w = self._workers.setdefault(worker_id, _Worker(worker_id))
            w.synthetic_active = max(0, active_jobs - len(w.active))
            w.state = state
            w.last_heartbeat = _now()

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (its pod is gone)."""
        with self._lock:
            self._workers.pop(worker_id, None)

    def worker_state(self, worker_id: str) -> str | None:
        """The worker's state (``quiet`` after a quiet request), or None if unknown."""
        with self._lock:
            w = self._workers.get(worker_id)
            return None if w is None else w.state

    def set_healthy(self, healthy: bool) -> None:
        """False makes ``/ojs/v1/health`` answer 503 with status ``degraded`` (backend down)."""
        with self._lock:
            self._healthy = healthy

    def release(self) -> None:
        """Let requests stuck in ``hang`` finish (with the normal answer) and stop hanging new ones."""
        self.fail.hang = False
        self._release.set()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, oldest first (bounded to the last 10,000)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    # ---- request handling --------------------------------------------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _authorized(self, header: str | None) -> bool | None:
        if self.api_key is None:
            return None
        if header is None or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].encode(), self.api_key.encode())

    def _fault_applies(self, path: str) -> bool:
        with self._lock:
            f = self.fail
            if not f._any_fault():
                return False
            if f.paths and not any(path.startswith(p) for p in f.paths):
                return False
            if f.times is not None:
                if f.times <= 0:
                    return False
                f.times -= 1
            return True

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(name, _now())
        return q

    def dispatch(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> _Reply:
        """Route one request to its handler (called with the parsed JSON body, or None)."""
        for route_method, pattern, handler in _ROUTES:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if route_method != method:
                continue
            try:
                with self._lock:
                    return handler(self, query, body, *(unquote(g) for g in m.groups()))
            except _BadRequest as exc:
                return _error(400, "invalid_request", str(exc))
        if any(p.fullmatch(path) for _, p, _ in _ROUTES):
            return _error(405, "invalid_request", f"method {method} not allowed on {path}")
        return _error(404, "not_found", f"no route for {path}")

    # ---- handlers (called with the lock held) ------------------------------------------------------------

    def _health(self, _q: Any, _b: Any) -> _Reply:
        body = {
            "status": "ok" if self._healthy else "degraded",
            "version": OJS_VERSION,
            "uptime_seconds": int(time.monotonic() - self._started),
            "backend": {"type": "memory", "status": "connected" if self._healthy else "disconnected"},
        }
        return _Reply(200 if self._healthy else 503, body)

    def _manifest(self, _q: Any, _b: Any) -> _Reply:
        return _Reply(
            200,
            {
                "specversion": OJS_VERSION,
                "implementation": {"name": "ojsctrl-test-server", "version": "0", "backend": "memory"},
                "conformance_level": 4,
                "protocols": ["http"],
                "extensions": {"official": [{"name": "admin-api", "uri": "urn:ojs:ext:admin-api"}]},
            },
        )

    def _enqueue(self, _q: Any, body: Any) -> _Reply:
        obj = _object(body)
        job_type = obj.get("type")
        if not isinstance(job_type, str) or not job_type:
            raise _BadRequest("'type' must be a non-empty string")
        args = obj.get("args")
        if not isinstance(args, list):
            raise _BadRequest("The 'args' field must be a JSON array.")
        options = obj.get("options") or {}
        if not isinstance(options, dict):
            raise _BadRequest("'options' must be an object")
        queue = options.get("queue", "default")
        if not isinstance(queue, str) or not queue:
            raise _BadRequest("'options.queue' must be a non-empty string")
        retry = options.get("retry") if isinstance(options.get("retry"), dict) else {}
        max_attempts = retry.get("max_attempts", 3) if isinstance(retry, dict) else 3
        now = _now()
        job: dict[str, Any] = {
            "id": uuid7(),
            "specversion": OJS_VERSION,
            "type": job_type,
            "state": "available",
            "args": args,
            "queue": queue,
            "priority": options.get("priority", 0),
            "attempt": 0,
            "max_attempts": max_attempts,
            "created_at": now,
            "enqueued_at": now,
        }
        if "meta" in obj:
            job["meta"] = obj["meta"]
        if "tags" in options:
            job["tags"] = options["tags"]
        self._jobs[job["id"]] = job
        self._queue(queue).available.append(job["id"])
        return _Reply(201, {"job": job}, {"Location": f"/ojs/v1/jobs/{job['id']}"})

    def _get_job(self, _q: Any, _b: Any, job_id: str) -> _Reply:
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", f"job {job_id} not found")
        return _Reply(200, {"job": job})

    def _fetch(self, _q: Any, body: Any) -> _Reply:
        obj = _object(body)
        queues = obj.get("queues")
        if not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues):
            raise _BadRequest("'queues' must be a non-empty array of strings")
        count = obj.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise _BadRequest("'count' must be a positive integer")
        worker_id = obj.get("worker_id")
        if worker_id is not None and not isinstance(worker_id, str):
            raise _BadRequest("'worker_id' must be a string")
        worker = None
        if worker_id:
            worker = self._workers.setdefault(worker_id, _Worker(worker_id))
            worker.last_heartbeat = _now()
            if worker.state != "running":
                return _Reply(200, {"jobs": []})  # a quiet worker gets no new work
        jobs: list[dict[str, Any]] = []
        for name in queues:
            q = self._queues.get(name)
            while q is not None and not q.paused and len(jobs) < count:
                if q.available:
                    job = self._jobs[q.available.popleft()]
                elif q.synthetic_available > 0:
                    q.synthetic_available -= 1
                    job = {
                        "id": uuid7(),
                        "specversion": OJS_VERSION,
                        "type": "synthetic",
                        "args": [],
                        "queue": name,
                        "attempt": 0,
                        "max_attempts": 3,
                        "created_at": q.created_at,
                        "enqueued_at": q.created_at,
                    }
                    self._jobs[job["id"]] = job
                else:
                    break
                job["state"] = "active"
                job["attempt"] += 1
                job["started_at"] = _now()
                if worker_id:
                    job["worker_id"] = worker_id
                q.active.add(job["id"])
                if worker is not None:
                    worker.active.add(job["id"])
                jobs.append(job)
        return _Reply(200, {"jobs": jobs})

    def _finish_active(self, body: Any) -> dict[str, Any] | _Reply:
        obj = _object(body)
        job_id = obj.get("job_id")
        if not isinstance(job_id, str):
            raise _BadRequest("'job_id' must be a string")
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", f"job {job_id} not found")
        if job["state"] != "active":
            return _error(
                409, "invalid_request", f"Cannot acknowledge job not in 'active' state: {job['state']}"
            )
        self._queue(job["queue"]).active.discard(job_id)
        for w in self._workers.values():
            w.active.discard(job_id)
        return job

    def _ack(self, _q: Any, body: Any) -> _Reply:
        job = self._finish_active(body)
        if isinstance(job, _Reply):
            return job
        job["state"] = "completed"
        job["completed_at"] = _now()
        if isinstance(body, dict) and "result" in body:
            job["result"] = body["result"]
        self._queue(job["queue"]).completed += 1
        return _Reply(
            200,
            {
                "acknowledged": True,
                "job_id": job["id"],
                "state": "completed",
                "completed_at": job["completed_at"],
            },
        )

    def _nack(self, _q: Any, body: Any) -> _Reply:
        job = self._finish_active(body)
        if isinstance(job, _Reply):
            return job
        q = self._queue(job["queue"])
        if job["attempt"] >= job.get("max_attempts", 3):
            job["state"] = "discarded"
            q.discarded += 1
        else:
            job["state"] = "available"
            q.available.append(job["id"])
        return _Reply(200, {"acknowledged": True, "job_id": job["id"], "state": job["state"]})

    def _beat(self, _q: Any, body: Any) -> _Reply:
        obj = _object(body)
        worker_id = obj.get("worker_id")
        if not isinstance(worker_id, str) or not worker_id:
            raise _BadRequest("'worker_id' must be a non-empty string")
        w = self._workers.setdefault(worker_id, _Worker(worker_id))
        w.last_heartbeat = _now()
        state = obj.get("state")
        if isinstance(state, str) and state:
            w.state = state
        if obj.get("shutdown") is True and w.state not in _DRAINING_STATES:
            w.state = "shutting_down"
        active = obj.get("active_jobs")
        if isinstance(active, int) and not isinstance(active, bool) and active >= 0:
            w.synthetic_active = max(0, active - len(w.active))
        return _Reply(
            200,
            {
                "acknowledged": True,
                "state": w.state,
                "directive": w.directive,
                "server_time": w.last_heartbeat,
            },
        )

    def _worker_health(self, _q: Any, _b: Any, worker_id: str) -> _Reply:
        w = self._workers.get(worker_id)
        if w is None:
            return _error(404, "not_found", f"worker {worker_id} not found")
        draining = w.state in _DRAINING_STATES
        body = {
            "worker_id": w.id,
            "state": w.state,
            "active_jobs": w.active_jobs(),
            "status": "degraded" if draining else "ok",
        }
        return _Reply(503 if draining else 200, body)

    def _list_queues(self, query: dict[str, list[str]], _b: Any) -> _Reply:
        limit = _int_param(query, "limit", 50, 1, 200)
        offset = _int_param(query, "offset", 0, 0, 10**9)
        names = sorted(self._queues)
        page = names[offset : offset + limit]
        items = [
            {
                "name": n,
                "status": "paused" if self._queues[n].paused else "active",
                "created_at": self._queues[n].created_at,
            }
            for n in page
        ]
        return _Reply(
            200,
            {
                "queues": items,
                "pagination": {
                    "total": len(names),
                    "limit": limit,
                    "offset": offset,
                    "has_more": offset + len(page) < len(names),
                },
            },
        )

    def _queue_stats(self, _q: Any, _b: Any, name: str) -> _Reply:
        q = self._queues.get(name)
        if q is None:
            return _error(404, "not_found", f"queue {name} not found")
        counts = q.counts()
        status = "paused" if q.paused else "active"
        # Both shapes of the conformance suite: L4-STATS-001 reads $.queue.*, EXT-BP-004 reads $.stats.*.
        stats: dict[str, Any] = {"queue": name, "depth": counts["available"], **counts}
        max_depth = (q.config.get("backpressure") or {}).get("max_depth")
        if max_depth is not None:
            stats["max_depth"] = max_depth
        return _Reply(
            200,
            {
                "queue": {"name": name, "status": status, "paused": q.paused, **counts},
                "status": status,
                "stats": stats,
                "computed_at": _now(),
            },
        )

    def _paginate(self, query: dict[str, list[str]], items: list[Any]) -> tuple[list[Any], dict[str, int]]:
        """Admin API pagination: page/per_page (default 20, max 100), limit/offset also understood."""
        if self.fail.ignore_pagination:
            return items, {"total": len(items), "page": 1, "per_page": len(items)}
        if "limit" in query or "offset" in query:
            per_page = _int_param(query, "limit", 20, 1, 100)
            offset = _int_param(query, "offset", 0, 0, 10**9)
            page = offset // per_page + 1
        else:
            per_page = _int_param(query, "per_page", 20, 1, 100)
            page = _int_param(query, "page", 1, 1, 10**9)
            offset = (page - 1) * per_page
        return items[offset : offset + per_page], {"total": len(items), "page": page, "per_page": per_page}

    def _admin_queues(self, query: dict[str, list[str]], _b: Any) -> _Reply:
        items = [
            {
                "name": q.name,
                "state": "paused" if q.paused else "active",
                "paused": q.paused,
                "counts": q.counts(),
                "created_at": q.created_at,
            }
            for q in sorted(self._queues.values(), key=lambda q: q.name)
        ]
        page, pagination = self._paginate(query, items)
        return _Reply(200, {"items": page, "pagination": pagination})

    def _admin_queue_config(self, _q: Any, body: Any, name: str) -> _Reply:
        q = self._queue(name)
        q.config.update(_object(body))
        return _Reply(200, {"name": name, "config": q.config})

    def _admin_stats(self, _q: Any, _b: Any) -> _Reply:
        totals: dict[str, int] = {}
        for q in self._queues.values():
            for k, v in q.counts().items():
                totals[k] = totals.get(k, 0) + v
        for k in ("available", "active", "scheduled", "retryable", "completed", "discarded", "cancelled"):
            totals.setdefault(k, 0)
        return _Reply(
            200,
            {
                "queues": len(self._queues),
                "workers": len(self._workers),
                "jobs": totals,
                "throughput": {"processed_per_minute": 0.0, "failed_per_minute": 0.0},
                "uptime_seconds": int(time.monotonic() - self._started),
            },
        )

    def _admin_workers(self, query: dict[str, list[str]], _b: Any) -> _Reply:
        workers = sorted(self._workers.values(), key=lambda w: w.id)
        items = [
            {
                "id": w.id,
                "state": w.state,
                "directive": w.directive,
                "active_jobs": w.active_jobs(),
                "last_heartbeat_at": w.last_heartbeat,
            }
            for w in workers
        ]
        page, pagination = self._paginate(query, items)
        summary = {
            "total": len(workers),
            "running": sum(w.state == "running" for w in workers),
            "quiet": sum(w.state == "quiet" for w in workers),
            "stale": 0,
        }
        return _Reply(200, {"items": page, "summary": summary, "pagination": pagination})

    def _admin_quiet(self, _q: Any, _b: Any, worker_id: str) -> _Reply:
        # Like the reference servers: the directive is stored whether or not the worker is registered.
        self.quiet_requests.append(worker_id)
        w = self._workers.get(worker_id)
        if w is not None:
            w.state = "quiet"
            w.directive = "quiet"
        return _Reply(200, {"worker_id": worker_id, "state": "quiet"})


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return body


def _int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        return default
    return max(lo, min(hi, value))


_Handler_t = Callable[..., _Reply]
_ROUTES: list[tuple[str, re.Pattern[str], _Handler_t]] = [
    ("GET", re.compile(r"/ojs/v1/health"), OJSTestServer._health),
    ("GET", re.compile(r"/ojs/manifest"), OJSTestServer._manifest),
    ("POST", re.compile(r"/ojs/v1/jobs"), OJSTestServer._enqueue),
    ("GET", re.compile(r"/ojs/v1/jobs/([^/]+)"), OJSTestServer._get_job),
    ("POST", re.compile(r"/ojs/v1/workers/fetch"), OJSTestServer._fetch),
    ("POST", re.compile(r"/ojs/v1/workers/ack"), OJSTestServer._ack),
    ("POST", re.compile(r"/ojs/v1/workers/nack"), OJSTestServer._nack),
    ("POST", re.compile(r"/ojs/v1/workers/(?:heartbeat|beat)"), OJSTestServer._beat),
    ("GET", re.compile(r"/ojs/v1/workers/([^/]+)/health"), OJSTestServer._worker_health),
    ("GET", re.compile(r"/ojs/v1/queues"), OJSTestServer._list_queues),
    ("GET", re.compile(r"/ojs/v1/queues/([^/]+)/stats"), OJSTestServer._queue_stats),
    ("GET", re.compile(r"/ojs/v1/admin/queues"), OJSTestServer._admin_queues),
    ("PUT", re.compile(r"/ojs/v1/admin/queues/([^/]+)/config"), OJSTestServer._admin_queue_config),
    ("GET", re.compile(r"/ojs/v1/admin/stats"), OJSTestServer._admin_stats),
    ("GET", re.compile(r"/ojs/v1/admin/workers"), OJSTestServer._admin_workers),
    ("POST", re.compile(r"/ojs/v1/admin/workers/([^/]+)/quiet"), OJSTestServer._admin_quiet),
]


def _stringify_numbers(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return {k: _stringify_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_numbers(v) for v in value]
    return value


def _negate_numbers(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return -abs(value) - 1
    if isinstance(value, dict):
        return {k: _negate_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_negate_numbers(v) for v in value]
    return value


def _huge_chunks(size: int) -> Iterator[bytes]:
    # Valid JSON, so only the size cap can reject it.
    filler = b'"' + b"x" * 65_000 + b'",'
    yield b'{"items": ['
    sent = 0
    while sent < size:
        yield filler
        sent += len(filler)
    yield b'"end"], "pagination": {"total": 1}}'


class _Handler(BaseHTTPRequestHandler):
    app: OJSTestServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY each keep-alive exchange waits for
    # the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server_version = "ojsctrl-test-ojs/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read app.requests instead of stderr noise

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        app = self.app
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        # A prefix before /ojs/ (e.g. /<namespace>/<cluster>/ojs/v1/...) lets one server stand in for
        # many clusters; fault filters (FailMode.paths) see the full path, so one cluster can be faulted.
        full_path = path
        at = path.find("/ojs/")
        if at > 0:
            path = path[at:]
        body: Any = None
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_REQUEST_BODY:
            self._send(_error(413, "invalid_request", "request body too large"))
            return
        raw = self.rfile.read(length) if length else b""
        parse_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                parse_error = _error(400, "invalid_request", "request body is not valid JSON")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and content_type and content_type not in (MEDIA_TYPE, "application/json"):
            parse_error = _error(400, "invalid_request", f"unsupported content type {content_type}")
        authorized = app._authorized(self.headers.get("Authorization"))
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in _SECRET_HEADERS}
        app._record(RecordedRequest(self.command, path, query, headers, authorized, body))

        if authorized is False and path not in _PUBLIC_PATHS:
            reply = _error(401, "unauthorized", "missing or invalid bearer token")
            reply.headers["WWW-Authenticate"] = "Bearer"
            self._send(reply)
            return
        if parse_error is not None:
            self._send(parse_error)
            return
        if app.fail.admin_404 and path.startswith("/ojs/v1/admin/"):
            self._send(_error(404, "not_found", f"no route for {path}"))
            return
        fault = app._fault_applies(full_path)
        f = app.fail
        if fault and f.slow:
            time.sleep(f.slow)
        if fault and f.hang:
            app._release.wait(timeout=60)
        if fault and f.status_500:
            self._send(_error(500, "backend_error", "injected failure", retryable=True))
            return
        reply = app.dispatch(self.command, path, query, body)
        if fault and f.huge_json:
            self._send_huge(f.huge_bytes)
            return
        if fault and f.malformed_json:
            self._send_raw(reply.status, b'{"items": [{"name": "default", "counts": {"avail', {})
            return
        if fault and f.wrong_types:
            reply.body = _stringify_numbers(reply.body)
        if fault and f.negative_counts:
            reply.body = _negate_numbers(reply.body)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self._send_raw(reply.status, data, reply.headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", MEDIA_TYPE)
            self.send_header("OJS-Version", OJS_VERSION)
            self.send_header("X-Request-Id", f"req_{uuid7()}")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_huge(self, size: int) -> None:
        # No Content-Length: the body ends when the connection closes, so the client must cap while reading.
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", MEDIA_TYPE)
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in _huge_chunks(size):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


def conformance_dir() -> str:
    """Directory of the OJS conformance cases shipped with the tests."""
    return os.path.join(os.path.dirname(__file__), "conformance")
