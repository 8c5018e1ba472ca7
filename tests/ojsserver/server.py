"""An in-memory model of the real OJS servers for tests (the one test double ARCHITECTURE.md allows).

Every behaviour below names its source as ``repo: path``, read from the public openjobspec repositories
(``ojs-backend-redis`` at commit 5b459da is the self-contained reference: later commits moved the HTTP
layer into ``ojs-go-backend-common``, which no public snapshot holds; the HEAD commits of the other five
backends still carry their storage code). Where the spec, the conformance suite and the servers disagree,
the double answers as the servers do; ``tests/ojsserver/README.md`` lists each disagreement.

Backends differ, so the double takes a *personality* (``backend="redis"`` by default; ``postgres``,
``nats``, ``kafka``, ``sqs``, ``lite``): which paths are public when an API key is set, whether
``/healthz``/``/readyz`` are routed, and how ``GET /ojs/v1/admin/workers`` derives a worker's state
(stale after 60 s on redis and kafka only, ``active`` on lite, phantom records after quiet on an unknown id
on postgres, nats, sqs and lite).

Test controls (not part of any server): :meth:`OJSTestServer.set_queue` sets counts directly,
:meth:`OJSTestServer.heartbeat` and :meth:`OJSTestServer.set_worker` heartbeat on a worker's behalf
through the same code path as ``POST /ojs/v1/workers/heartbeat``, :meth:`OJSTestServer.advance` moves the
server's clock (staleness without sleeping), :meth:`OJSTestServer.set_healthy` marks the backend down,
:attr:`OJSTestServer.fail` holds fault knobs (:class:`FailMode`), and :attr:`OJSTestServer.requests`
records what clients sent (never the ``Authorization`` header, only whether it was accepted).

A path prefix before ``/ojs/`` (``/<namespace>/<cluster>/ojs/v1/...``) is stripped so one double can stand
in for many clusters; this is a test affordance, not server behaviour.

Usage::

    with OJSTestServer(api_key="k", backend="redis") as srv:
        srv.set_queue("default", available=12, active=3)
        srv.heartbeat("worker_pod-a_1_2", active_jobs=["j1"])
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MEDIA_TYPE = "application/openjobspec+json"
# ojs-backend-redis: internal/core/job.go (OJSVersion, sent as the OJS-Version header and in /health).
OJS_VERSION = "1.0.0-rc.1"
# ojs-backend-redis: internal/api/middleware.go (LimitRequestBody: 1 MiB).
_MAX_REQUEST_BODY = 1 << 20
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
# ojs-backend-redis: internal/redis/admin_list.go (workerStaleThreshold); kafka: internal/state/admin.go.
STALE_AFTER_SECONDS = 60.0
# ojs-backend-redis: internal/api/handler_admin.go (ListWorkers: per_page default 50, outside 1..100 -> 50).
WORKERS_PER_PAGE_DEFAULT = 50
WORKERS_PER_PAGE_MAX = 100


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, version 7, variant 10, random rest."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_time(ts: float) -> str:
    """Timestamps as the servers write them: ojs-backend-redis: internal/core/job.go (TimeFormat, UTC, ms)."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Personality:
    """What differs between the six backends, each field with its source."""

    name: str
    # Paths answered without the key when OJS_API_KEY is set: the skip list passed to KeyAuth in
    # <repo>: internal/server/server.go (HEAD).
    public_paths: frozenset[str]
    # /healthz and /readyz routed (<repo>: internal/server/server.go, HEAD).
    probe_routes: bool
    # Seconds without a heartbeat after which the admin list says "stale"; None: never.
    stale_after: float | None
    # Quiet on an id that never heartbeat creates a record the admin list shows.
    phantom_listed: bool
    # The admin list's state follows the stored directive "quiet".
    quiet_sets_state: bool
    # The state word for a live worker.
    running_label: str
    # The directive the admin list shows when none was stored.
    default_directive: str
    # Quiet overwrites the whole worker record (active_jobs and last_heartbeat are lost).
    quiet_replaces_record: bool
    # Admin list order: "id" or "last_heartbeat_desc".
    order: str


_COMMON_PUBLIC = frozenset({"/metrics", "/ojs/v1/health"})
PERSONALITIES: dict[str, Personality] = {
    # ojs-backend-redis: internal/server/server.go (skip /metrics, /ojs/v1/health, /healthz, /readyz; no
    # /healthz route); internal/redis/admin_list.go (ListWorkers: sorted ids, quiet from directive, stale
    # after 60 s or without last_heartbeat); internal/redis/workers.go (SetWorkerState: HSet of the worker
    # hash without SAdd to the workers set, so a quiet on an unknown id is kept but not listed).
    "redis": Personality(
        "redis",
        _COMMON_PUBLIC | {"/healthz", "/readyz"},
        probe_routes=False,
        stale_after=STALE_AFTER_SECONDS,
        phantom_listed=False,
        quiet_sets_state=True,
        running_label="running",
        default_directive="continue",
        quiet_replaces_record=False,
        order="id",
    ),
    # ojs-backend-postgres: internal/server/server.go (skip list as redis; /healthz, /readyz routed);
    # internal/postgres/admin.go (ListWorkers: ORDER BY last_heartbeat DESC, state running|quiet, never
    # stale); internal/postgres/workers.go (SetWorkerState: INSERT ... ON CONFLICT, last_heartbeat
    # defaults to now(): migrations/005_create_ojs_workers.sql).
    "postgres": Personality(
        "postgres",
        _COMMON_PUBLIC | {"/healthz", "/readyz"},
        probe_routes=True,
        stale_after=None,
        phantom_listed=True,
        quiet_sets_state=True,
        running_label="running",
        default_directive="continue",
        quiet_replaces_record=False,
        order="last_heartbeat_desc",
    ),
    # ojs-backend-nats: internal/server/server.go (KeyAuth skips /metrics, /ojs/v1/health; no probes);
    # internal/nats/admin.go (ListWorkers: running|quiet, never stale, directive only when stored);
    # internal/nats/backend.go (SetWorkerState: Put {"directive"} replaces the record; Heartbeat stores the
    # directive only when it is not "continue").
    "nats": Personality(
        "nats",
        _COMMON_PUBLIC,
        probe_routes=False,
        stale_after=None,
        phantom_listed=True,
        quiet_sets_state=True,
        running_label="running",
        default_directive="",
        quiet_replaces_record=True,
        order="id",
    ),
    # ojs-backend-kafka: internal/server/server.go (KeyAuth skips /metrics, /ojs/v1/health; /healthz,
    # /readyz routed behind the key); internal/state/admin.go (scanAllWorkers: state from the hash's
    # "state" field, which quiet does not set; stale after 60 s); internal/state/redis.go (SetWorkerData:
    # HSet only, so an unknown id is not listed).
    "kafka": Personality(
        "kafka",
        _COMMON_PUBLIC,
        probe_routes=True,
        stale_after=STALE_AFTER_SECONDS,
        phantom_listed=False,
        quiet_sets_state=False,
        running_label="running",
        default_directive="",
        quiet_replaces_record=False,
        order="id",
    ),
    # ojs-backend-sqs: internal/server/server.go (as kafka); internal/state/admin.go (ListAllWorkers:
    # running|quiet from directive, never stale); internal/state/dynamodb.go (SetWorkerDirective:
    # UpdateItem, which creates the item).
    "sqs": Personality(
        "sqs",
        _COMMON_PUBLIC,
        probe_routes=True,
        stale_after=None,
        phantom_listed=True,
        quiet_sets_state=True,
        running_label="running",
        default_directive="",
        quiet_replaces_record=False,
        order="id",
    ),
    # ojs-backend-lite: internal/server/server.go (KeyAuth skips only /ojs/v1/health: /metrics needs the
    # key; /healthz, /readyz routed behind it); internal/memory/admin.go (ListWorkers: state as stored,
    # "active"; summary counts quiet by directive; never stale); internal/memory/workers.go
    # (SetWorkerState creates {state: active} for an unknown id).
    "lite": Personality(
        "lite",
        frozenset({"/ojs/v1/health"}),
        probe_routes=True,
        stale_after=None,
        phantom_listed=True,
        quiet_sets_state=False,
        running_label="active",
        default_directive="continue",
        quiet_replaces_record=False,
        order="id",
    ),
}


@dataclass
class FailMode:
    """Fault knobs. Faults apply to every request whose path starts with one of ``paths`` (all when empty),
    to the next ``times`` matching requests only when ``times`` is set.

    ``admin_404``: /ojs/v1/admin/* answers 404 (a server without the admin routes). ``ignore_pagination``:
    admin lists return everything in one page, as ojs-backend-redis does for queues
    (internal/api/handler_admin.go, ListQueues). The others replace the answer: ``status_500``, ``slow``
    (delay in seconds, then the normal answer), ``hang`` (no answer until released or stopped),
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
    """One request as received: no secret headers; ``authorized`` tells whether the bearer key matched
    (None when the double runs without a key)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    authorized: bool | None
    body: Any


@dataclass
class _Queue:
    name: str
    available: deque[str] = field(default_factory=deque)
    active: set[str] = field(default_factory=set)
    # Counts set by set_queue on top of real jobs; a fetch turns a synthetic available job into a real one.
    synthetic_available: int = 0
    synthetic_active: int = 0
    completed: int = 0
    discarded: int = 0
    paused: bool = False

    def counts(self) -> dict[str, int]:
        # ojs-backend-redis: internal/api/handler_admin.go (ListQueues: the seven counts; cancelled is 0).
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
    """A worker record as a server stores it (ojs-backend-redis: internal/redis/workers.go: the hash
    ``last_heartbeat``, ``active_jobs``, ``directive``; ``listed`` is membership of the workers set)."""

    id: str
    listed: bool = False
    directive: str | None = None
    last_heartbeat: float | None = None
    active_jobs: int = 0
    active_ids: list[str] = field(default_factory=list)
    # What a client sent beyond the servers' HeartbeatRequest (spec §9.1 fields); servers drop it.
    hostname: str | None = None
    metadata: dict[str, Any] | None = None


class _Reply:
    def __init__(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.raw = raw  # a non-JSON body (plain-text 404, Prometheus text)


def _error(
    status: int, code: str, message: str, *, retryable: bool = False, details: dict[str, Any] | None = None
) -> _Reply:
    # ojs-backend-redis: internal/api/errors.go (WriteError: {"error": OJSError}), internal/core/errors.go
    # (details omitted when empty).
    err: dict[str, Any] = {"code": code, "message": message, "retryable": retryable}
    if details:
        err["details"] = details
    err["request_id"] = f"req_{uuid7()}"
    return _Reply(status, {"error": err})


def _not_found() -> _Reply:
    # go-chi's default NotFound (http.NotFound): plain text, not an OJS error.
    return _Reply(404, None, {"Content-Type": "text/plain; charset=utf-8"}, raw=b"404 page not found\n")


def _method_not_allowed() -> _Reply:
    # go-chi's default MethodNotAllowed: 405 with an empty body.
    return _Reply(405, None, {}, raw=b"")


class _BadRequest(Exception):
    pass


def _invalid_json() -> _BadRequest:
    # ojs-backend-redis: internal/api/handler_workers.go (any decode failure answers this message).
    return _BadRequest("Invalid JSON in request body.")


class OJSTestServer:
    """In-memory model of an OJS server on 127.0.0.1 (port 0 = any free port). Thread-safe.

    ``backend`` picks the personality (:data:`PERSONALITIES`). ``stats_shape`` picks the answer of
    ``GET /ojs/v1/queues/{name}/stats``: ``"server"`` (every server and conformance L4-STATS-001:
    ``{"queue": {...}}``) or ``"spec"`` (ojs-http-binding §11.2: ``{"queue": "<name>", "stats": {...}}``).
    ``strict_heartbeat`` rejects an integer ``active_jobs`` with 400 as the servers' decoder does; by
    default the double also accepts the spec's (and the Go and JS SDKs') integer. ``echo_worker_metadata``
    makes the admin list return ``hostname``/``metadata`` a client sent (spec §9.1, which no server does).
    ``paginate_admin_queues`` pages ``GET /ojs/v1/admin/queues`` as the admin-api spec §6.1 says (redis
    returns everything in one page: set it False, or ``fail.ignore_pagination``). ``clock`` returns Unix
    seconds (default :func:`time.time`); :meth:`advance` moves it forward.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        backend: str = "redis",
        stats_shape: str = "server",
        strict_heartbeat: bool = False,
        echo_worker_metadata: bool = False,
        paginate_admin_queues: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if backend not in PERSONALITIES:
            raise ValueError(f"backend must be one of {sorted(PERSONALITIES)}, got {backend!r}")
        if stats_shape not in ("server", "spec"):
            raise ValueError(f"stats_shape must be 'server' or 'spec', got {stats_shape!r}")
        self.api_key = api_key
        self.personality = PERSONALITIES[backend]
        self.stats_shape = stats_shape
        self.strict_heartbeat = strict_heartbeat
        self.echo_worker_metadata = echo_worker_metadata
        self.paginate_admin_queues = paginate_admin_queues
        self.fail = FailMode()
        self._clock = clock or time.time
        self._offset = 0.0
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._queues: dict[str, _Queue] = {}
        self._workers: dict[str, _Worker] = {}
        self._healthy = True
        self._started = self.now()
        self._requests: deque[RecordedRequest] = deque(maxlen=10_000)
        self._http_counts: Counter[tuple[str, str, int]] = Counter()
        self.quiet_requests: list[str] = []
        #: Test affordance (no server has it): a key per path prefix, see :meth:`set_api_key`.
        self._prefix_keys: dict[str, str] = {}
        #: Test affordance: ``fn(prefix) -> key | None`` looks up the key of a prefix that has none set
        #: (e2e tests read the cluster's API-key Secret); its answers are cached until a key mismatches.
        self.key_resolver: Callable[[str], str | None] | None = None
        self._resolved_keys: dict[str, str] = {}
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

    # ---- clock -------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The server's time in Unix seconds (the clock plus every :meth:`advance`)."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the server's clock forward, e.g. past the 60 s stale threshold without sleeping."""
        with self._lock:
            self._offset += seconds

    # ---- test controls -----------------------------------------------------------------------------------

    def set_queue(
        self,
        name: str,
        *,
        available: int | None = None,
        active: int | None = None,
        completed: int | None = None,
    ) -> None:
        """Set a queue's available/active counts (creating it); real jobs in that state are replaced.
        ``completed`` sets the completed counter (the simulated world publishes its own)."""
        with self._lock:
            q = self._queue(name)
            if completed is not None:
                q.completed = completed
            if available is not None:
                for job_id in q.available:
                    self._jobs.pop(job_id, None)
                q.available.clear()
                q.synthetic_available = available
            if active is not None:
                for job_id in q.active:
                    self._jobs.pop(job_id, None)
                q.active.clear()
                q.synthetic_active = active

    def remove_queue(self, name: str) -> None:
        """Forget a queue and its jobs."""
        with self._lock:
            q = self._queues.pop(name, None)
            if q is not None:
                for job_id in (*q.available, *q.active):
                    self._jobs.pop(job_id, None)

    def heartbeat(
        self,
        worker_id: str,
        *,
        active_jobs: list[str] | int = 0,
        hostname: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Heartbeat on a worker's behalf through the code path of ``POST /ojs/v1/workers/heartbeat``;
        returns the body the server would answer. ``active_jobs`` is a list of job ids (the servers' shape)
        or a count (the spec's)."""
        if isinstance(active_jobs, int):
            ids: list[str] = []
            count = active_jobs
        else:
            ids = list(active_jobs)
            count = len(ids)
        with self._lock:
            return self._record_heartbeat(worker_id, ids, count, hostname, metadata)

    def set_worker(self, worker_id: str, *, active_jobs: int = 0, state: str = "running") -> None:
        """Make a worker known with ``active_jobs`` jobs in progress: a :meth:`heartbeat` on its behalf.

        ``state="quiet"`` first stores the quiet directive as ``POST /admin/workers/{id}/quiet`` does;
        ``state="stale"`` dates the heartbeat back past the stale threshold. Workers appear only this way,
        as on the servers (ojs-backend-redis: internal/redis/workers.go registers on heartbeat only).
        """
        if state not in ("running", "quiet", "stale"):
            raise ValueError(f"state must be running, quiet or stale, got {state!r}")
        with self._lock:
            if state == "quiet":
                self._store_quiet(worker_id)
            self._record_heartbeat(worker_id, [], active_jobs, None, None)
            if state == "stale":
                self._workers[worker_id].last_heartbeat = self.now() - STALE_AFTER_SECONDS - 1

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker record (no server deletes one: a test shortcut for "its pod is long gone")."""
        with self._lock:
            self._workers.pop(worker_id, None)

    def worker_state(self, worker_id: str) -> str | None:
        """The state ``GET /ojs/v1/admin/workers`` shows for the worker, or None if it is not listed."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None or not self._is_listed(w):
                return None
            return self._worker_item(w)["state"]

    def worker_directive(self, worker_id: str) -> str | None:
        """The stored directive (None when none was stored or the id is unknown)."""
        with self._lock:
            w = self._workers.get(worker_id)
            return None if w is None else w.directive

    def set_healthy(self, healthy: bool) -> None:
        """False marks the backend down: ``/ojs/v1/health`` answers 503 with status ``degraded``."""
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

    def set_api_key(self, prefix: str, key: str | None) -> None:
        """Require ``key`` on requests under the path ``prefix`` (``/<namespace>/<cluster>``); None
        returns the prefix to the resolver or the server-wide ``api_key``.

        A test affordance, not a server behaviour: one double stands in for many clusters, and each
        cluster has its own key (its generated ``<name>-api-key`` Secret or ``spec.auth.apiKeySecretRef``).
        Requests without a prefix, and prefixes with no key set or resolved, use ``api_key`` as before.
        """
        with self._lock:
            if key is None:
                self._prefix_keys.pop(prefix, None)
            else:
                self._prefix_keys[prefix] = key
            self._resolved_keys.pop(prefix, None)

    def _key_for(self, prefix: str, refresh: bool = False) -> str | None:
        with self._lock:
            if prefix in self._prefix_keys:
                return self._prefix_keys[prefix]
            if not refresh and prefix in self._resolved_keys:
                return self._resolved_keys[prefix]
            resolver = self.key_resolver
        if prefix and resolver is not None:
            key = resolver(prefix)
            if key is not None:
                with self._lock:
                    self._resolved_keys[prefix] = key
                return key
        return self.api_key

    def _authorized(self, header: str | None, prefix: str = "") -> bool | None:
        key = self._key_for(prefix)
        if key is None:
            return None
        if header is None or not header.startswith("Bearer "):
            return False
        sent = header[len("Bearer ") :].encode()
        if hmac.compare_digest(sent, key.encode()):
            return True
        # A resolved key may be out of date (a Secret replaced by the test): look it up once more.
        with self._lock:
            resolved = prefix in self._resolved_keys
        if resolved:
            fresh = self._key_for(prefix, refresh=True)
            return fresh is not None and hmac.compare_digest(sent, fresh.encode())
        return False

    def _auth_reply(self, path: str, header: str | None, prefix: str = "") -> _Reply | None:
        """The key check, before routing (so an unrouted path without the key answers 401, not 404).

        ojs-backend-redis: internal/api/middleware_auth.go at 8574704 (the last version before the move
        into the common module): no header or no ``Bearer `` prefix -> 401 ``unauthorized``; a wrong key
        -> 403 ``forbidden`` "Invalid API key."; paths in the skip list pass.
        """
        if self._key_for(prefix) is None or path in self.personality.public_paths:
            return None
        if not header:
            return _error(401, "unauthorized", "Missing Authorization header. Expected 'Bearer <api_key>'.")
        if not header.startswith("Bearer "):
            return _error(401, "unauthorized", "Invalid Authorization format. Expected 'Bearer <api_key>'.")
        if not self._authorized(header, prefix):
            return _error(403, "forbidden", "Invalid API key.")
        return None

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
            q = self._queues[name] = _Queue(name)
        return q

    def _routes(self) -> list[tuple[str, re.Pattern[str], _HandlerT]]:
        if self.personality.probe_routes:
            return _ROUTES + _PROBE_ROUTES
        return _ROUTES

    def dispatch(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> _Reply:
        """Route one request to its handler (called with the raw body bytes)."""
        routes = self._routes()
        for route_method, pattern, handler in routes:
            m = pattern.fullmatch(path)
            if m is None or route_method != method:
                continue
            try:
                with self._lock:
                    return handler(self, query, body, *(unquote(g) for g in m.groups()))
            except _BadRequest as exc:
                return _error(400, "invalid_request", str(exc))
        if any(p.fullmatch(path) for _, p, _ in routes):
            return _method_not_allowed()
        return _not_found()

    # ---- handlers (called with the lock held) ------------------------------------------------------------

    def _health(self, _q: Any, _b: Any) -> _Reply:
        # ojs-backend-redis: internal/redis/backend.go (Health: status ok|degraded, backend type/status,
        # latency_ms omitted when 0, error when down); internal/api/handler_system.go (503 unless "ok").
        uptime = int(self.now() - self._started)
        backend: dict[str, Any] = {"type": self.personality.name, "status": "connected"}
        if not self._healthy:
            backend = {
                "type": self.personality.name,
                "status": "disconnected",
                "error": "backend unreachable",
            }
        body = {
            "status": "ok" if self._healthy else "degraded",
            "version": OJS_VERSION,
            "uptime_seconds": uptime,
            "backend": backend,
        }
        return _Reply(200 if self._healthy else 503, body)

    def _probe(self, _q: Any, _b: Any) -> _Reply:
        # /healthz and /readyz (ojs-backend-postgres, -kafka, -sqs, -lite: internal/server/server.go route
        # them to the common module's SystemHandler, whose body no snapshot shows): 200 or 503.
        if self._healthy:
            return _Reply(200, {"status": "ok"})
        return _Reply(503, {"status": "unavailable"})

    def _metrics(self, _q: Any, _b: Any) -> _Reply:
        # Prometheus text (ojs-backend-redis: internal/server/server.go mounts promhttp at /metrics;
        # internal/metrics/metrics.go names ojs_http_requests_total and ojs_active_jobs).
        lines = [
            "# HELP ojs_http_requests_total Total HTTP requests.",
            "# TYPE ojs_http_requests_total counter",
        ]
        for (method, path, status), n in sorted(self._http_counts.items()):
            lines.append(f'ojs_http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
        active = sum(q.counts()["active"] for q in self._queues.values())
        lines += [
            "# HELP ojs_active_jobs Active jobs.",
            "# TYPE ojs_active_jobs gauge",
            f"ojs_active_jobs {active}",
        ]
        text = ("\n".join(lines) + "\n").encode()
        return _Reply(200, None, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, raw=text)

    def _manifest(self, _q: Any, _b: Any) -> _Reply:
        # ojs-backend-redis: internal/api/handler_system.go (Manifest). Not in any skip list: needs the key.
        name = self.personality.name
        return _Reply(
            200,
            {
                "specversion": OJS_VERSION,
                "implementation": {"name": f"ojs-backend-{name}", "version": OJS_VERSION, "backend": name},
                "conformance_level": 4,
                "protocols": ["http"],
                "backend": name,
                "capabilities": {
                    "batch_enqueue": False,
                    "cron_jobs": False,
                    "dead_letter": True,
                    "delayed_jobs": False,
                    "job_ttl": False,
                    "priority_queues": True,
                    "rate_limiting": False,
                    "schema_validation": False,
                    "unique_jobs": False,
                    "workflows": False,
                    "pause_resume": True,
                },
                "extensions": {
                    "official": [{"name": "admin-api", "uri": "urn:ojs:ext:admin-api", "version": "1.0.0"}]
                },
            },
        )

    def _enqueue(self, _q: Any, raw: bytes) -> _Reply:
        obj = _object(raw)
        job_type = obj.get("type")
        if not isinstance(job_type, str) or not job_type:
            raise _BadRequest("The 'type' field is required.")
        args = obj.get("args")
        if not isinstance(args, list):
            raise _BadRequest("The 'args' field must be a JSON array.")
        options = obj.get("options") or {}
        if not isinstance(options, dict):
            raise _BadRequest("Invalid JSON in request body.")
        queue = options.get("queue", "default")
        if not isinstance(queue, str) or not queue:
            raise _BadRequest("'options.queue' must be a non-empty string")
        retry = options.get("retry") if isinstance(options.get("retry"), dict) else {}
        max_attempts = retry.get("max_attempts", 3) if isinstance(retry, dict) else 3
        now = format_time(self.now())
        # ojs-backend-redis: internal/core/job.go (Job: no specversion; priority only when given).
        job: dict[str, Any] = {
            "id": uuid7(),
            "type": job_type,
            "state": "available",
            "args": args,
            "queue": queue,
            "attempt": 0,
            "max_attempts": max_attempts,
            "created_at": now,
            "enqueued_at": now,
        }
        if isinstance(options.get("priority"), int):
            job["priority"] = options["priority"]
        # ojs-backend-redis: internal/api/handler_jobs.go (options.metadata becomes the job's meta, which
        # the heartbeat reads for test_directive).
        meta = options.get("metadata", obj.get("meta"))
        if isinstance(meta, dict) and meta:
            job["meta"] = meta
        self._jobs[job["id"]] = job
        self._queue(queue).available.append(job["id"])
        return _Reply(201, {"job": job}, {"Location": f"/ojs/v1/jobs/{job['id']}"})

    def _get_job(self, _q: Any, _b: Any, job_id: str) -> _Reply:
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", f"Job '{job_id}' not found.")
        return _Reply(200, {"job": job})

    def _admin_get_job(self, _q: Any, _b: Any, job_id: str) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (GetJob: the job itself, not wrapped).
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", f"Job '{job_id}' not found.")
        return _Reply(200, job)

    def _fetch(self, _q: Any, raw: bytes) -> _Reply:
        # ojs-backend-redis: internal/api/handler_workers.go (Fetch), internal/redis/jobs.go (paused
        # queues are skipped; a fetch neither registers the worker nor reads its directive).
        obj = _object(raw)
        queues = obj.get("queues")
        if not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues):
            raise _BadRequest("The 'queues' field is required and must not be empty.")
        count = obj.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise _invalid_json()
        count = max(count, 1)
        worker_id = obj.get("worker_id", "")
        if not isinstance(worker_id, str):
            raise _invalid_json()
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
                        "type": "synthetic",
                        "args": [],
                        "queue": name,
                        "attempt": 0,
                        "max_attempts": 3,
                    }
                    self._jobs[job["id"]] = job
                else:
                    break
                job["state"] = "active"
                job["attempt"] += 1
                job["started_at"] = format_time(self.now())
                if worker_id:
                    job["worker_id"] = worker_id
                q.active.add(job["id"])
                jobs.append(job)
        resp: dict[str, Any] = {"jobs": jobs}
        if jobs:
            resp["job"] = jobs[0]
        return _Reply(200, resp)

    def _finish_active(self, raw: bytes) -> dict[str, Any] | _Reply:
        obj = _object(raw)
        job_id = obj.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise _BadRequest("The 'job_id' field is required.")
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", f"Job '{job_id}' not found.")
        if job["state"] != "active":
            return _error(409, "conflict", f"Cannot acknowledge job not in 'active' state: {job['state']}")
        self._queue(job["queue"]).active.discard(job_id)
        return job

    def _ack(self, _q: Any, raw: bytes) -> _Reply:
        job = self._finish_active(raw)
        if isinstance(job, _Reply):
            return job
        job["state"] = "completed"
        job["completed_at"] = format_time(self.now())
        body = _object(raw)
        if "result" in body:
            job["result"] = body["result"]
        self._queue(job["queue"]).completed += 1
        return _Reply(
            200,
            # ojs-backend-redis: internal/core/backend.go (AckResponse carries the job).
            {
                "acknowledged": True,
                "job_id": job["id"],
                "state": "completed",
                "completed_at": job["completed_at"],
                "job": job,
            },
        )

    def _nack(self, _q: Any, raw: bytes) -> _Reply:
        job = self._finish_active(raw)
        if isinstance(job, _Reply):
            return job
        q = self._queue(job["queue"])
        # ojs-backend-redis: internal/redis/jobs.go (Nack: requeue returns the job to available at once;
        # without it the server schedules a retry as "retryable", which the double simplifies to available).
        if _object(raw).get("requeue") is True or job["attempt"] < job.get("max_attempts", 3):
            job["state"] = "available"
            q.available.append(job["id"])
        else:
            job["state"] = "discarded"
            q.discarded += 1
        return _Reply(200, {"acknowledged": True, "job_id": job["id"], "state": job["state"]})

    def _heartbeat(self, _q: Any, raw: bytes) -> _Reply:
        # ojs-backend-redis: internal/api/handler_workers.go (Heartbeat) decoding into
        # internal/core/job.go HeartbeatRequest {worker_id, job_id, active_jobs []string,
        # visibility_timeout_ms}: any type mismatch answers 400 "Invalid JSON in request body.".
        obj = _object(raw)
        worker_id = obj.get("worker_id", "")
        if not isinstance(worker_id, str):
            raise _invalid_json()
        if not worker_id:
            raise _BadRequest("The 'worker_id' field is required.")
        active = obj.get("active_jobs")
        ids: list[str]
        if active is None:
            ids, count = [], 0
        elif isinstance(active, list) and all(isinstance(i, str) for i in active):
            ids, count = list(active), len(active)
        elif (
            isinstance(active, int)
            and not isinstance(active, bool)
            and active >= 0
            and not self.strict_heartbeat
        ):
            # The worker-protocol spec (and ojs-go-sdk: worker.go, ojs-js-sdk: src/worker.ts) send a count
            # plus active_job_ids; servers answer 400 to it. Accepted unless strict_heartbeat.
            extra = obj.get("active_job_ids")
            ids = [i for i in extra if isinstance(i, str)] if isinstance(extra, list) else []
            count = active
        else:
            raise _invalid_json()
        job_id = obj.get("job_id")
        if job_id is not None and not isinstance(job_id, str):
            raise _invalid_json()
        if job_id and not ids:
            ids, count = [job_id], 1  # "Support single job_id as alternative to active_jobs array"
        hostname = obj.get("hostname")
        metadata = obj.get("metadata")
        return _Reply(
            200,
            self._record_heartbeat(
                worker_id,
                ids,
                count,
                hostname if isinstance(hostname, str) else None,
                metadata if isinstance(metadata, dict) else None,
            ),
        )

    def _record_heartbeat(
        self,
        worker_id: str,
        ids: list[str],
        count: int,
        hostname: str | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The one heartbeat code path (HTTP and test controls), with the lock held.

        ojs-backend-redis: internal/redis/workers.go (Heartbeat): register the worker, store
        last_heartbeat and len(active_jobs), extend visibility of the listed active jobs, answer
        ``{"state": "active", "directive": <stored or "continue">, "jobs_extended"?, "server_time"}``
        where a stored directive wins and otherwise an active job's ``meta.test_directive``.
        """
        now = self.now()
        w = self._workers.setdefault(worker_id, _Worker(worker_id))
        w.listed = True
        w.last_heartbeat = now
        w.active_jobs = count
        w.active_ids = ids
        if hostname is not None:
            w.hostname = hostname
        if metadata is not None:
            w.metadata = metadata
        extended = [j for j in ids if (self._jobs.get(j) or {}).get("state") == "active"]
        directive = w.directive or "continue"
        if directive == "continue":
            for j in ids:
                td = ((self._jobs.get(j) or {}).get("meta") or {}).get("test_directive")
                if isinstance(td, str) and td:
                    directive = td
                    break
        body: dict[str, Any] = {"state": "active", "directive": directive}
        if extended:  # jobs_extended is omitempty
            body["jobs_extended"] = extended
        body["server_time"] = format_time(now)
        return body

    def _store_quiet(self, worker_id: str) -> None:
        p = self.personality
        w = self._workers.get(worker_id)
        if w is None:
            w = self._workers[worker_id] = _Worker(worker_id)
            if p.phantom_listed:
                w.listed = True
                if p.name == "postgres":  # INSERT: last_heartbeat DEFAULT now()
                    w.last_heartbeat = self.now()
        elif p.quiet_replaces_record:  # nats: Put {"directive": "quiet"}
            w.last_heartbeat = None
            w.active_jobs = 0
            w.active_ids = []
        w.directive = "quiet"

    def _is_listed(self, w: _Worker) -> bool:
        return w.listed

    def _worker_state(self, w: _Worker) -> str:
        p = self.personality
        now = self.now()
        if p.name == "redis":
            # ojs-backend-redis: internal/redis/admin_list.go: quiet from the directive, then "stale" when
            # last_heartbeat is missing or older than 60 s (stale wins over quiet).
            state = "quiet" if w.directive == "quiet" else "running"
            if w.last_heartbeat is None or now - w.last_heartbeat > STALE_AFTER_SECONDS:
                state = "stale"
            return state
        state = p.running_label
        if p.quiet_sets_state and w.directive == "quiet":
            state = "quiet"
        # ojs-backend-kafka: internal/state/admin.go: only a "running" worker with an old heartbeat is stale.
        if (
            p.stale_after is not None
            and state == "running"
            and w.last_heartbeat is not None
            and now - w.last_heartbeat > p.stale_after
        ):
            state = "stale"
        return state

    def _worker_item(self, w: _Worker) -> dict[str, Any]:
        # ojs-backend-redis: internal/core/backend.go (WorkerInfo: id, state, directive, active_jobs,
        # last_heartbeat omitempty).
        item: dict[str, Any] = {
            "id": w.id,
            "state": self._worker_state(w),
            "directive": w.directive or self.personality.default_directive,
            "active_jobs": w.active_jobs,
        }
        if w.last_heartbeat is not None:
            item["last_heartbeat"] = format_time(w.last_heartbeat)
        if self.echo_worker_metadata:
            # Spec §9.1 (ojs-admin-api.md) lists hostname and metadata{kubernetes_pod,node}; no server
            # stores them (HeartbeatRequest has no such fields), so only this opt-in returns them.
            if w.hostname is not None:
                item["hostname"] = w.hostname
            if w.metadata is not None:
                item["metadata"] = w.metadata
        return item

    def _summary(self, items: list[dict[str, Any]]) -> dict[str, int]:
        s = {"total": len(items), "running": 0, "quiet": 0, "stale": 0}
        for it in items:
            if it["state"] == "quiet" or (self.personality.name == "lite" and it["directive"] == "quiet"):
                s["quiet"] += 1
            elif it["state"] == "stale":
                s["stale"] += 1
            else:
                s["running"] += 1
        return s

    def _admin_workers(self, query: dict[str, list[str]], _b: Any) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (ListWorkers: page >= 1, per_page 1..100 else 50;
        # pagination.total is summary.total) and internal/redis/admin_list.go (ListWorkers).
        workers = [w for w in self._workers.values() if self._is_listed(w)]
        if self.personality.order == "last_heartbeat_desc":
            workers.sort(key=lambda w: (-(w.last_heartbeat or 0.0), w.id))
        else:
            workers.sort(key=lambda w: w.id)
        items = [self._worker_item(w) for w in workers]
        summary = self._summary(items)
        page = _atoi(query, "page")
        page = page if page >= 1 else 1
        per_page = _atoi(query, "per_page")
        if per_page < 1 or per_page > WORKERS_PER_PAGE_MAX:
            per_page = WORKERS_PER_PAGE_DEFAULT
        if self.fail.ignore_pagination:
            shown = items
        else:
            offset = (page - 1) * per_page
            shown = items[offset : offset + per_page]
        return _Reply(
            200,
            {
                "items": shown,
                "summary": summary,
                "pagination": {"total": summary["total"], "page": page, "per_page": per_page},
            },
        )

    def _admin_quiet(self, _q: Any, _b: Any, worker_id: str) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (QuietWorker: 200 {"worker_id", "state": "quiet"}
        # whether or not the id is known); the record per personality (_store_quiet).
        self.quiet_requests.append(worker_id)
        self._store_quiet(worker_id)
        return _Reply(200, {"worker_id": worker_id, "state": "quiet"})

    def _list_queues(self, _query: Any, _b: Any) -> _Reply:
        # ojs-backend-redis: internal/api/handler_queues.go (List: limit/offset ignored, fixed pagination)
        # and internal/redis/queues.go (ListQueues: a nil slice when there are none, so "queues": null).
        names = sorted(self._queues)
        items = [{"name": n, "status": "paused" if self._queues[n].paused else "active"} for n in names]
        return _Reply(
            200,
            {
                "queues": items or None,
                "pagination": {"total": len(items), "limit": 50, "offset": 0, "has_more": False},
            },
        )

    def _queue_stats(self, _q: Any, _b: Any, name: str) -> _Reply:
        # ojs-backend-redis: internal/redis/queues.go (QueueStats never fails: an unknown queue is all
        # zeros) and internal/api/handler_queues.go (Stats: {"queue": {name, available, active, completed,
        # paused}}). The spec's shape (ojs-http-binding §11.2) is {"queue": name, "status", "stats": {...}}.
        q = self._queues.get(name) or _Queue(name)
        counts = q.counts()
        if self.stats_shape == "spec":
            # spec: ojs-http-binding.md §11.2 (no plain "completed": completed_last_hour; the double keeps no
            # time window, so it reports every completion as within the hour).
            stats = {k: counts[k] for k in ("available", "active", "scheduled", "retryable", "discarded")}
            stats.update(completed_last_hour=counts["completed"], failed_last_hour=0)
            return _Reply(
                200,
                {
                    "queue": name,
                    "status": "paused" if q.paused else "active",
                    "stats": stats,
                    "computed_at": format_time(self.now()),
                },
            )
        return _Reply(
            200,
            {
                "queue": {
                    "name": name,
                    "available": counts["available"],
                    "active": counts["active"],
                    "completed": counts["completed"],
                    "paused": q.paused,
                }
            },
        )

    def _pause(self, _q: Any, _b: Any, name: str) -> _Reply:
        # ojs-backend-redis: internal/api/handler_queues.go (Pause/Resume: {"queue": {name, paused}}).
        self._queue(name).paused = True
        return _Reply(200, {"queue": {"name": name, "paused": True}})

    def _resume(self, _q: Any, _b: Any, name: str) -> _Reply:
        self._queue(name).paused = False
        return _Reply(200, {"queue": {"name": name, "paused": False}})

    def _admin_pause(self, _q: Any, _b: Any, name: str) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (PauseQueue/ResumeQueue: {name, paused}).
        self._queue(name).paused = True
        return _Reply(200, {"name": name, "paused": True})

    def _admin_resume(self, _q: Any, _b: Any, name: str) -> _Reply:
        self._queue(name).paused = False
        return _Reply(200, {"name": name, "paused": False})

    def _admin_queues(self, query: dict[str, list[str]], _b: Any) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (ListQueues: {name, paused, counts{7}}, all on one
        # page with pagination {total, page: 1, per_page: total}). The admin-api spec §6.1 pages the list;
        # the double pages by default (page/per_page, default 20, max 100) so clients' paging is exercised.
        items = [
            {"name": q.name, "paused": q.paused, "counts": q.counts()}
            for q in sorted(self._queues.values(), key=lambda q: q.name)
        ]
        if self.fail.ignore_pagination or not self.paginate_admin_queues:
            return _Reply(
                200, {"items": items, "pagination": {"total": len(items), "page": 1, "per_page": len(items)}}
            )
        page = max(1, _atoi(query, "page") or 1)
        per_page = _atoi(query, "per_page")
        if per_page < 1 or per_page > 100:
            per_page = 20
        offset = (page - 1) * per_page
        return _Reply(
            200,
            {
                "items": items[offset : offset + per_page],
                "pagination": {"total": len(items), "page": page, "per_page": per_page},
            },
        )

    def _admin_stats(self, _q: Any, _b: Any) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (Stats: throughput always 0).
        totals = {
            k: 0
            for k in ("available", "active", "scheduled", "retryable", "completed", "discarded", "cancelled")
        }
        for q in self._queues.values():
            for k, v in q.counts().items():
                totals[k] += v
        return _Reply(
            200,
            {
                "queues": len(self._queues),
                "workers": sum(1 for w in self._workers.values() if self._is_listed(w)),
                "jobs": totals,
                "throughput": {"processed_per_minute": 0, "failed_per_minute": 0},
                "uptime_seconds": int(self.now() - self._started),
            },
        )

    def _admin_bulk_retry(self, _q: Any, raw: bytes) -> _Reply:
        # ojs-backend-redis: internal/api/handler_admin.go (BulkRetry: confirm must be true).
        obj = _object(raw)
        if obj.get("confirm") is not True:
            raise _BadRequest("confirm must be true")
        return _Reply(200, {"action": "retry", "matched": 0, "succeeded": 0, "failed": 0})


def _object(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        raise _invalid_json() from None
    if not isinstance(value, dict):
        raise _invalid_json()
    return value


def _atoi(query: dict[str, list[str]], name: str) -> int:
    """strconv.Atoi with the error ignored, as the servers read page/per_page: 0 when absent or bad."""
    values = query.get(name)
    if not values:
        return 0
    try:
        return int(values[0])
    except ValueError:
        return 0


_HandlerT = Callable[..., _Reply]
# ojs-backend-redis: internal/server/server.go (NewRouter) for the routes the operator and the conformance
# replay use. No /ojs/v1/workers/beat, /workers/{id}/health or /admin/queues/{name}/config: no server
# has them.
_ROUTES: list[tuple[str, re.Pattern[str], _HandlerT]] = [
    ("GET", re.compile(r"/metrics"), OJSTestServer._metrics),
    ("GET", re.compile(r"/ojs/v1/health"), OJSTestServer._health),
    ("GET", re.compile(r"/ojs/manifest"), OJSTestServer._manifest),
    ("POST", re.compile(r"/ojs/v1/jobs"), OJSTestServer._enqueue),
    ("GET", re.compile(r"/ojs/v1/jobs/([^/]+)"), OJSTestServer._get_job),
    ("POST", re.compile(r"/ojs/v1/workers/fetch"), OJSTestServer._fetch),
    ("POST", re.compile(r"/ojs/v1/workers/ack"), OJSTestServer._ack),
    ("POST", re.compile(r"/ojs/v1/workers/nack"), OJSTestServer._nack),
    ("POST", re.compile(r"/ojs/v1/workers/heartbeat"), OJSTestServer._heartbeat),
    ("GET", re.compile(r"/ojs/v1/queues"), OJSTestServer._list_queues),
    ("GET", re.compile(r"/ojs/v1/queues/([^/]+)/stats"), OJSTestServer._queue_stats),
    ("POST", re.compile(r"/ojs/v1/queues/([^/]+)/pause"), OJSTestServer._pause),
    ("POST", re.compile(r"/ojs/v1/queues/([^/]+)/resume"), OJSTestServer._resume),
    ("GET", re.compile(r"/ojs/v1/admin/stats"), OJSTestServer._admin_stats),
    ("GET", re.compile(r"/ojs/v1/admin/queues"), OJSTestServer._admin_queues),
    ("POST", re.compile(r"/ojs/v1/admin/queues/([^/]+)/pause"), OJSTestServer._admin_pause),
    ("POST", re.compile(r"/ojs/v1/admin/queues/([^/]+)/resume"), OJSTestServer._admin_resume),
    ("GET", re.compile(r"/ojs/v1/admin/jobs/([^/]+)"), OJSTestServer._admin_get_job),
    ("POST", re.compile(r"/ojs/v1/admin/jobs/bulk/retry"), OJSTestServer._admin_bulk_retry),
    ("GET", re.compile(r"/ojs/v1/admin/workers"), OJSTestServer._admin_workers),
    ("POST", re.compile(r"/ojs/v1/admin/workers/([^/]+)/quiet"), OJSTestServer._admin_quiet),
]
_PROBE_ROUTES: list[tuple[str, re.Pattern[str], _HandlerT]] = [
    ("GET", re.compile(r"/healthz"), OJSTestServer._probe),
    ("GET", re.compile(r"/readyz"), OJSTestServer._probe),
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
    server_version = "ojsctrl-test-ojs/2"

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
        prefix = ""
        at = path.find("/ojs/")
        if at > 0:
            prefix, path = path[:at], path[at:]
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_REQUEST_BODY:
            self._send(_error(413, "invalid_request", "request body too large"))
            return
        raw = self.rfile.read(length) if length else b""
        try:
            recorded_body: Any = json.loads(raw) if raw else None
        except ValueError:
            recorded_body = raw.decode(errors="replace")
        header = self.headers.get("Authorization")
        authorized = app._authorized(header, prefix)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in _SECRET_HEADERS}
        app._record(RecordedRequest(self.command, path, query, headers, authorized, recorded_body))

        # Middleware order of ojs-backend-redis: internal/server/server.go: body limit, content type,
        # then (HEAD) the key check, all before routing.
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if (
            self.command in ("POST", "PUT")
            and content_type
            and content_type not in (MEDIA_TYPE, "application/json")
        ):
            # ojs-backend-redis: internal/api/middleware.go (ValidateContentType).
            self._finish(
                path,
                _error(
                    400,
                    "invalid_request",
                    "Unsupported Content-Type. Expected 'application/openjobspec+json' or "
                    "'application/json'.",
                    details={"received": self.headers.get("Content-Type", "")},
                ),
            )
            return
        denied = app._auth_reply(path, header, prefix)
        if denied is not None:
            self._finish(path, denied)
            return
        if app.fail.admin_404 and path.startswith("/ojs/v1/admin/"):
            self._finish(path, _not_found())
            return
        fault = app._fault_applies(full_path)
        f = app.fail
        if fault and f.slow:
            time.sleep(f.slow)
        if fault and f.hang:
            app._release.wait(timeout=60)
        if fault and f.status_500:
            self._finish(path, _error(500, "internal_error", "injected failure", retryable=True))
            return
        reply = app.dispatch(self.command, path, query, raw)
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
        self._finish(path, reply)

    def _finish(self, path: str, reply: _Reply) -> None:
        with self.app._lock:
            self.app._http_counts[(self.command, path, reply.status)] += 1
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        if reply.raw is not None:
            self._send_raw(reply.status, reply.raw, reply.headers)
            return
        # Go's json.Encoder ends the document with a newline.
        data = b"" if reply.body is None else json.dumps(reply.body).encode() + b"\n"
        self._send_raw(reply.status, data, reply.headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            # ojs-backend-redis: internal/api/middleware.go (OJSHeaders: OJS-Version, Content-Type,
            # X-Request-Id echoed or made).
            headers = dict(headers)
            self.send_header("Content-Type", headers.pop("Content-Type", MEDIA_TYPE))
            self.send_header("OJS-Version", OJS_VERSION)
            self.send_header("X-Request-Id", self.headers.get("X-Request-Id") or f"req_{uuid7()}")
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


def shared_dir() -> Path | None:
    """The steering repo's ``shared/`` directory: beside the repository (in CI too), or the workplace's."""
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared", Path("/work/shared")):
        if (candidate / "reference").is_dir():
            return candidate
    return None


def conformance_dir() -> str:
    """Directory of the OJS conformance suites (``shared/reference/ojs-conformance/suites``)."""
    base = shared_dir()
    root = base if base is not None else Path("/work/shared")
    return os.fspath(root / "reference" / "ojs-conformance" / "suites")
