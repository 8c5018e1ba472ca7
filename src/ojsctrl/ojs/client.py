"""HTTP client for the parts of the OJS server API the operator reads (SPEC §4).

Everything here is bounded: connect and read timeouts, an overall deadline per call, a small number of
retries (GET only), a response size cap, a page cap for paginated lists. Responses are parsed strictly: a
wrong type, a negative or absurd count, or broken JSON is an :class:`OJSError`, never a crash and never a
made-up number. The API key is sent as a bearer token and never appears in an error message.
"""

from __future__ import annotations

import math
import random
import re
import string
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import cachetools
import orjson
import urllib3
from urllib3.exceptions import HTTPError as _Urllib3HTTPError
from urllib3.exceptions import NewConnectionError as _Urllib3NewConnectionError
from urllib3.exceptions import TimeoutError as _Urllib3TimeoutError

from ojsctrl.ojs.model import QueueCounts, QueueStats, WorkerInfo

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_PORT",
    "DEFAULT_URL_TEMPLATE",
    "HealthStatus",
    "OJSClient",
    "OJSError",
    "StatsCache",
    "url_for",
    "validate_url_template",
]

# The full cluster-domain name (SPEC §9.11): a `.svc`-only name goes through the DNS search path, where a
# namespace called `svc` can answer it.
DEFAULT_URL_TEMPLATE: Final = "http://{service}.{namespace}.svc.{cluster_domain}:{port}"
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
DEFAULT_PORT: Final = 8080
_TEMPLATE_FIELDS: Final = frozenset({"name", "namespace", "service", "port", "cluster_domain"})

# A count above this is not a queue the operator could act on; it is a broken or hostile server. 2**53 is
# also where JSON numbers parsed as doubles stop being exact.
MAX_COUNT: Final = 2**53
_MAX_NAME_LENGTH: Final = 1024
_CHUNK: Final = 64 * 1024
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# Servers without the admin extension answer these for /ojs/v1/admin/* (SPEC §4 names 404).
_ADMIN_ABSENT_STATUSES: Final = frozenset({404, 405, 501})
# Admin lists take per_page up to 100; a larger value makes the reference servers fall back to their
# default of 50 (ojs-backend-redis internal/api/handler_admin.go), so never ask for more.
ADMIN_MAX_PER_PAGE: Final = 100
_MEDIA_TYPE: Final = "application/openjobspec+json"
_HEADER_VALUE_RE: Final = re.compile(r"[\x21-\x7e]+")


class OJSError(Exception):
    """A failed call to an OJS server.

    ``reason`` is a short CamelCase word fit for a condition reason (``Unreachable``, ``Timeout``,
    ``Unauthorized``, ``NotFound``, ``ServerError``, ``HTTPError``, ``InvalidResponse``,
    ``ResponseTooLarge``, ``TooManyItems``, ``AdminAPIUnavailable``, ``InvalidRequest``); ``status`` is the
    HTTP status when the server answered. The message names the URL without credentials and never
    contains the API key.
    """

    def __init__(self, message: str, *, reason: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.url = url


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """Answer of ``GET /ojs/v1/health``: ``healthy`` is True for a 200 with status ok/healthy."""

    healthy: bool
    status: str
    http_status: int


# ----------------------------------------------------------------------------------------------------
# URL template (SPEC §4 --ojs-url-template)


def validate_url_template(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` uses only SPEC §4's placeholders and renders an http(s) URL.

    Placeholders: ``{name}`` (the cluster), ``{namespace}``, ``{service}`` (``<name>-server``), ``{port}`` and
    ``{cluster_domain}`` (the operator's ``--cluster-domain``).
    Format specs, conversions and attribute access are refused: the template comes from a flag, and
    ``str.format`` would otherwise let it reach into objects.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"--ojs-url-template: {exc}") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in _TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"--ojs-url-template: unknown placeholder {{{field_name}}}; "
                "use {name}, {namespace}, {service}, {port} and {cluster_domain}"
            )
    sample = template.format(
        name="c", namespace="ns", service="c-server", port=DEFAULT_PORT, cluster_domain=DEFAULT_CLUSTER_DOMAIN
    )
    parts = urlsplit(sample)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("--ojs-url-template: must render an http:// or https:// URL with a host")


def url_for(
    template: str,
    name: str,
    namespace: str,
    port: int = DEFAULT_PORT,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> str:
    """The base URL the operator uses to reach cluster ``name`` in ``namespace`` (no trailing slash)."""
    validate_url_template(template)
    url = template.format(
        name=name, namespace=namespace, service=f"{name}-server", port=port, cluster_domain=cluster_domain
    )
    return url.rstrip("/")


# ----------------------------------------------------------------------------------------------------
# Strict parsing helpers


def _invalid(what: str, url: str) -> OJSError:
    return OJSError(f"invalid response from {url}: {what}", reason="InvalidResponse", url=url)


def _as_count(value: Any, what: str, url: str) -> int:
    # bool is an int subclass in Python; JSON true is not a count.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{what} must be a number, got {type(value).__name__}", url)
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise _invalid(f"{what} must be a whole number", url)
    count = int(value)
    if count < 0:
        raise _invalid(f"{what} must not be negative", url)
    if count > MAX_COUNT:
        raise _invalid(f"{what} is implausibly large", url)
    return count


def _as_name(value: Any, what: str, url: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME_LENGTH:
        raise _invalid(f"{what} must be a non-empty string", url)
    return value


def _as_object(value: Any, what: str, url: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be an object", url)
    return value


def _as_list(value: Any, what: str, url: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(f"{what} must be an array", url)
    return value


@dataclass(frozen=True, slots=True)
class _Page:
    items: list[Any]
    total: int | None
    has_more: bool | None
    per_page: int | None = None


def _parse_page(body: dict[str, Any], items_key: str, url: str) -> _Page:
    raw_items = body.get(items_key)
    # A Go server encodes an empty (nil) slice as null: ojs-backend-redis answers `"queues": null` on
    # GET /ojs/v1/queues when there is no queue (tests/ojsserver/README.md, checked side by side).
    items = [] if raw_items is None and items_key in body else _as_list(raw_items, items_key, url)
    pagination = body.get("pagination")
    if pagination is None:
        return _Page(items, None, None)
    pagination = _as_object(pagination, "pagination", url)
    total = pagination.get("total")
    has_more = pagination.get("has_more")
    if has_more is not None and not isinstance(has_more, bool):
        raise _invalid("pagination.has_more must be a boolean", url)
    per_page = pagination.get("per_page")
    return _Page(
        items,
        None if total is None else _as_count(total, "pagination.total", url),
        has_more,
        # The page size the server actually used; only a positive one tells where pages end.
        per_page if isinstance(per_page, int) and not isinstance(per_page, bool) and per_page > 0 else None,
    )


def _parse_admin_queue(item: Any, url: str) -> QueueCounts:
    obj = _as_object(item, "items[] entry", url)
    name = _as_name(obj.get("name"), "items[].name", url)
    counts = _as_object(obj.get("counts"), f"counts of queue {name!r}", url)
    return QueueCounts(
        name=name,
        available=_as_count(counts.get("available"), f"counts.available of queue {name!r}", url),
        active=_as_count(counts.get("active"), f"counts.active of queue {name!r}", url),
    )


def _parse_queue_stats(name: str, body: dict[str, Any], url: str) -> QueueCounts:
    # The conformance suite (L4-STATS-001) reads {"queue": {"name", "available", "active", ...}}; the HTTP
    # binding document shows {"queue": "<name>", "stats": {"available", "active", ...}}. Accept both shapes.
    queue = body.get("queue")
    if isinstance(queue, dict):
        counts = queue
    elif isinstance(body.get("stats"), dict):
        counts = body["stats"]
    else:
        raise _invalid("expected a 'queue' or 'stats' object", url)
    return QueueCounts(
        name=name,
        available=_as_count(counts.get("available"), f"available of queue {name!r}", url),
        active=_as_count(counts.get("active"), f"active of queue {name!r}", url),
    )


def _parse_queue_name(item: Any, url: str) -> str:
    if isinstance(item, str):
        return _as_name(item, "queues[]", url)
    return _as_name(_as_object(item, "queues[] entry", url).get("name"), "queues[].name", url)


def _optional_text(value: Any, what: str, url: str) -> str:
    """An optional string field: absent or null is "", anything but a string of sane length an error."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_NAME_LENGTH:
        raise _invalid(f"{what} must be a string", url)
    return value


def _optional_time(value: Any, what: str, url: str) -> float | None:
    """An optional RFC 3339 time (servers write Go's time.RFC3339 or RFC3339Nano); None when absent."""
    text = _optional_text(value, what, url)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)  # 3.11+: "Z" and nanoseconds too
    except ValueError:
        raise _invalid(f"{what} must be an RFC 3339 time", url) from None
    if parsed.tzinfo is None:
        raise _invalid(f"{what} must carry a time zone", url)
    return parsed.timestamp()


def _as_active_jobs(value: Any, what: str, url: str) -> int:
    # Servers report a count (ojs-backend-redis admin_list.go: `active_jobs` int); the heartbeat they
    # accept carries a list of job ids, and a server that echoes it would report the list: count it.
    if isinstance(value, list):
        return _as_count(len(value), what, url)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{what} must be a number or an array of job ids, got {type(value).__name__}", url)
    return _as_count(value, what, url)


def _parse_worker(item: Any, url: str) -> WorkerInfo:
    obj = _as_object(item, "items[] entry", url)
    worker_id = _as_name(obj.get("id"), "items[].id", url)
    who = f"of worker {worker_id!r}"
    metadata = obj.get("metadata")
    pod = ""
    if metadata is not None:
        meta = _as_object(metadata, f"metadata {who}", url)
        pod = _optional_text(meta.get("kubernetes_pod"), f"metadata.kubernetes_pod {who}", url)
    return WorkerInfo(
        id=worker_id,
        last_heartbeat=_optional_time(obj.get("last_heartbeat"), f"last_heartbeat {who}", url),
        active_jobs=_as_active_jobs(obj.get("active_jobs"), f"active_jobs {who}", url),
        state=_optional_text(obj.get("state"), f"state {who}", url).lower(),
        directive=_optional_text(obj.get("directive"), f"directive {who}", url).lower(),
        hostname=_optional_text(obj.get("hostname"), f"hostname {who}", url),
        pod=pod,
    )


# ----------------------------------------------------------------------------------------------------
# The client


class _AdminAbsent(Exception):
    """The server has no admin API (404/405/501 on the first admin request)."""


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    url: str


def _redact_url(url: str) -> str:
    """scheme://host:port/path: no userinfo (it may hold credentials), no query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<invalid URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OJSClient:
    """Reads queue counts and worker state from OJS servers and quiets workers.

    One instance serves every cluster (a shared connection pool); it is thread-safe. Every public call
    finishes within ``total_timeout`` seconds (plus one read timeout at most, for a response already being
    read), raising :class:`OJSError` on any failure.

    Choices where the OJS specs leave room: the admin API is paginated with ``page``/``per_page`` (OJS admin
    API §6.1); ``GET /ojs/v1/queues`` with ``limit``/``offset`` (HTTP binding §17). A server that ignores the
    page parameters and returns everything at once is fine; one that repeats a page while claiming more
    items is an error. Only GETs are retried, on connection errors, timeouts and 429/5xx. Redirects are not
    followed (they could carry the bearer key elsewhere).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        total_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.1,
        max_response_bytes: int = 4 * 1024 * 1024,
        per_page: int = 100,
        max_pages: int = 20,
        max_fallback_queues: int = 200,
        admin_absent_ttl: float = 600.0,
        user_agent: str = "ojsctrl",
    ) -> None:
        if retries < 0 or per_page < 1 or max_pages < 1 or max_response_bytes < 1:
            raise ValueError("retries must be >= 0; per_page, max_pages and max_response_bytes >= 1")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_response_bytes = max_response_bytes
        self.per_page = per_page
        self.max_pages = max_pages
        self.max_fallback_queues = max_fallback_queues
        self._user_agent = user_agent
        # num_pools bounds the per-host pools kept (one per cluster); maxsize the idle connections per host.
        self._pool = urllib3.PoolManager(num_pools=256, maxsize=4, block=False, retries=False)
        # Remember servers without the admin API so each poll does not waste a request on a 404.
        self._admin_absent: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            maxsize=1024, ttl=admin_absent_ttl
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()

    # ---- public API --------------------------------------------------------------------------------------

    def queue_stats(self, base_url: str, api_key: str | None) -> QueueStats:
        """Per-queue ``available``/``active`` counts of the server at ``base_url``.

        Reads ``GET /ojs/v1/admin/queues`` (all pages); when the server has no admin API, falls back to
        ``GET /ojs/v1/queues`` plus ``GET /ojs/v1/queues/{name}/stats`` per queue.
        """
        deadline = _Deadline(self.total_timeout)
        with self._lock:
            admin_absent = base_url in self._admin_absent
        if not admin_absent:
            try:
                return self._admin_queue_stats(base_url, api_key, deadline)
            except _AdminAbsent:
                with self._lock:
                    self._admin_absent[base_url] = True
        return self._fallback_queue_stats(base_url, api_key, deadline)

    def workers(self, base_url: str, api_key: str | None) -> list[WorkerInfo]:
        """Workers known to the server (``GET /ojs/v1/admin/workers``, every page), sorted by id.

        Pages of at most 100 (the admin API's maximum) until the server's ``total``, ``has_more`` or a short
        page says the list ended; a server that ignores the page parameters is read once. More than
        ``max_pages`` pages is an :class:`OJSError` with reason ``TooManyItems`` (never a partial list: a
        drain must not mistake a worker it did not read for an unmatched pod). Stale workers are included
        (``state == "stale"``); callers decide what they mean. A server without the admin API raises
        :class:`OJSError` with reason ``AdminAPIUnavailable``.
        """
        deadline = _Deadline(self.total_timeout)
        try:
            items = self._paginate(
                base_url,
                api_key,
                deadline,
                path="/ojs/v1/admin/workers",
                items_key="items",
                key_of=lambda it: it.get("id"),
            )
        except _AdminAbsent:
            raise OJSError(
                f"{_redact_url(base_url)} has no admin API (GET /ojs/v1/admin/workers)",
                reason="AdminAPIUnavailable",
                url=_redact_url(base_url),
            ) from None
        by_id: dict[str, WorkerInfo] = {}
        for item, url in items:
            worker = _parse_worker(item, url)
            known = by_id.get(worker.id)
            # The same id twice (a list that shifted between pages): trust the live, then the busier record.
            if known is None or (not worker.stale, worker.active_jobs) > (not known.stale, known.active_jobs):
                by_id[worker.id] = worker
        return sorted(by_id.values(), key=lambda w: w.id)

    def quiet_worker(self, base_url: str, api_key: str | None, worker_id: str) -> None:
        """Tell worker ``worker_id`` to stop fetching jobs (``POST /ojs/v1/admin/workers/{id}/quiet``)."""
        deadline = _Deadline(self.total_timeout)
        path = f"/ojs/v1/admin/workers/{quote(worker_id, safe='')}/quiet"
        resp = self._request("POST", base_url, path, api_key, deadline, body=b"{}")
        if resp.status in (200, 202, 204):
            return
        if resp.status in (405, 501):  # a 404 is ambiguous here: most likely an unknown worker
            raise OJSError(
                f"{resp.url} has no admin API", reason="AdminAPIUnavailable", status=resp.status, url=resp.url
            )
        raise self._status_error(resp)

    def health(self, base_url: str, api_key: str | None = None) -> HealthStatus:
        """``GET /ojs/v1/health``: 200 with status ok/healthy is healthy; a 503 is an answer, not an error."""
        deadline = _Deadline(self.total_timeout)
        resp = self._request(
            "GET", base_url, "/ojs/v1/health", api_key, deadline, retry_statuses=frozenset({429, 502, 504})
        )
        if resp.status not in (200, 503):
            raise self._status_error(resp)
        try:
            body = self._json_object(resp)
            status = body.get("status")
            if not isinstance(status, str):
                raise _invalid("status must be a string", resp.url)
        except OJSError:
            if resp.status == 503:
                # A 503 without the usual body is still a clear "not healthy".
                return HealthStatus(healthy=False, status="unavailable", http_status=503)
            raise
        healthy = resp.status == 200 and status.lower() in ("ok", "healthy")
        return HealthStatus(healthy=healthy, status=status, http_status=resp.status)

    # ---- queue stats -------------------------------------------------------------------------------------

    def _admin_queue_stats(self, base_url: str, api_key: str | None, deadline: _Deadline) -> QueueStats:
        items = self._paginate(
            base_url,
            api_key,
            deadline,
            path="/ojs/v1/admin/queues",
            items_key="items",
            key_of=lambda it: it.get("name"),
        )
        queues: dict[str, QueueCounts] = {}
        for item, url in items:
            q = _parse_admin_queue(item, url)
            queues.setdefault(q.name, q)
        return QueueStats(tuple(queues.values()), source="admin")

    def _fallback_queue_stats(self, base_url: str, api_key: str | None, deadline: _Deadline) -> QueueStats:
        names: dict[str, None] = {}
        offset = 0
        limit = min(self.per_page * 2, 200)  # HTTP binding §17: max 200
        for _ in range(self.max_pages):
            resp = self._get(
                base_url, "/ojs/v1/queues", api_key, deadline, {"limit": limit, "offset": offset}
            )
            page = _parse_page(self._json_object(resp), "queues", resp.url)
            new = 0
            for item in page.items:
                name = _parse_queue_name(item, resp.url)
                if name not in names:
                    names[name] = None
                    new += 1
            offset += len(page.items)
            if self._last_page(page, len(names), new, limit, resp.url):
                break
        else:
            raise self._too_many(base_url, "/ojs/v1/queues", limit)
        if len(names) > self.max_fallback_queues:
            raise OJSError(
                f"{_redact_url(base_url)} lists {len(names)} queues; without the admin API at most "
                f"{self.max_fallback_queues} are read one by one",
                reason="TooManyItems",
                url=_redact_url(base_url),
            )
        counts: list[QueueCounts] = []
        for name in names:
            path = f"/ojs/v1/queues/{quote(name, safe='')}/stats"
            resp = self._request("GET", base_url, path, api_key, deadline)
            if resp.status == 404:
                continue  # deleted between the list and the stats call: it holds no jobs
            if resp.status != 200:
                raise self._status_error(resp)
            counts.append(_parse_queue_stats(name, self._json_object(resp), resp.url))
        return QueueStats(tuple(counts), source="queues")

    # ---- pagination --------------------------------------------------------------------------------------

    def _paginate(
        self,
        base_url: str,
        api_key: str | None,
        deadline: _Deadline,
        *,
        path: str,
        items_key: str,
        key_of: Callable[[dict[str, Any]], Any],
    ) -> list[tuple[Any, str]]:
        """All items of an admin list (``page``/``per_page``), each with the URL of the page it came from."""
        out: list[tuple[Any, str]] = []
        seen: set[Any] = set()
        per_page = min(self.per_page, ADMIN_MAX_PER_PAGE)
        for page_no in range(1, self.max_pages + 1):
            query = {"page": page_no, "per_page": per_page}
            resp = self._request("GET", base_url, path, api_key, deadline, query=query)
            if page_no == 1 and resp.status in _ADMIN_ABSENT_STATUSES:
                raise _AdminAbsent
            if resp.status != 200:
                raise self._status_error(resp)
            page = _parse_page(self._json_object(resp), items_key, resp.url)
            new = 0
            for item in page.items:
                key = key_of(item) if isinstance(item, dict) else None
                # Unhashable or missing keys are left for the item parser to reject with a clear message.
                if isinstance(key, str) and key in seen:
                    continue
                if isinstance(key, str):
                    seen.add(key)
                out.append((item, resp.url))
                new += 1
            if self._last_page(page, len(seen), new, page.per_page or per_page, resp.url):
                return out
        raise self._too_many(base_url, path, per_page)

    @staticmethod
    def _last_page(page: _Page, collected: int, new: int, page_size: int, url: str) -> bool:
        if not page.items or page.has_more is False:
            return True
        if page.total is not None and collected >= page.total:
            return True
        if new == 0:
            # The server ignored the page parameters and repeated itself while claiming more items.
            if page.total is not None or page.has_more:
                raise _invalid("pagination not honoured (a page repeated earlier items)", url)
            return True
        return page.has_more is None and page.total is None and len(page.items) < page_size

    def _too_many(self, base_url: str, what: str, per_page: int) -> OJSError:
        return OJSError(
            f"{_redact_url(base_url)}: {what} has more than {self.max_pages} pages of {per_page} "
            f"(the operator reads at most {self.max_pages * per_page} items)",
            reason="TooManyItems",
            url=_redact_url(base_url),
        )

    # ---- transport ---------------------------------------------------------------------------------------

    def _get(
        self, base_url: str, path: str, api_key: str | None, deadline: _Deadline, query: dict[str, Any]
    ) -> _Response:
        resp = self._request("GET", base_url, path, api_key, deadline, query=query)
        if resp.status != 200:
            raise self._status_error(resp)
        return resp

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {
            "Accept": f"{_MEDIA_TYPE}, application/json",
            "Accept-Encoding": "identity",
            "User-Agent": self._user_agent,
        }
        if api_key:
            # Checked here because http.client's own error for a bad header value quotes the value.
            if not _HEADER_VALUE_RE.fullmatch(api_key):
                raise OJSError(
                    "the API key contains characters not allowed in an HTTP header", reason="InvalidRequest"
                )
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def _request(
        self,
        method: str,
        base_url: str,
        path: str,
        api_key: str | None,
        deadline: _Deadline,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
        retry_statuses: frozenset[int] = _RETRY_STATUSES,
    ) -> _Response:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OJSError(f"invalid OJS server URL {_redact_url(base_url)}", reason="InvalidRequest")
        url = base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        safe_url = _redact_url(url)
        headers = self._headers(api_key)
        if body is not None:
            headers["Content-Type"] = _MEDIA_TYPE
        # Only idempotent reads are retried: a repeated POST could act twice.
        attempts = 1 + (self.retries if method == "GET" else 0)
        error: OJSError | None = None
        for attempt in range(attempts):
            if attempt:
                pause = min(self.backoff * 2 ** (attempt - 1), 1.0) * random.uniform(0.8, 1.2)
                if deadline.remaining() <= pause:
                    break
                time.sleep(pause)
            try:
                resp = self._send(
                    method, url, safe_url=safe_url, headers=headers, body=body, deadline=deadline
                )
            except OJSError as exc:
                if exc.reason not in ("Timeout", "Unreachable"):
                    raise
                error = exc
                continue
            if resp.status in retry_statuses and attempt + 1 < attempts:
                error = self._status_error(resp)
                continue
            return resp
        if error is None:
            error = OJSError(f"deadline exceeded calling {safe_url}", reason="Timeout", url=safe_url)
        raise self._scrub(error, api_key)

    def _send(
        self,
        method: str,
        url: str,
        *,
        safe_url: str,
        headers: dict[str, str],
        body: bytes | None,
        deadline: _Deadline,
    ) -> _Response:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise OJSError(f"deadline exceeded calling {safe_url}", reason="Timeout", url=safe_url)
        timeout = urllib3.Timeout(
            connect=min(self.connect_timeout, remaining), read=min(self.read_timeout, remaining)
        )
        try:
            resp = self._pool.request(
                method,
                url,
                headers=headers,
                body=body,
                timeout=timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
        except _Urllib3NewConnectionError as exc:
            # Checked first: urllib3 makes "connection refused" a subclass of its connect timeout.
            raise OJSError(
                f"cannot reach {safe_url}: {type(exc).__name__}", reason="Unreachable", url=safe_url
            ) from None
        except _Urllib3TimeoutError:
            raise OJSError(f"timed out calling {safe_url}", reason="Timeout", url=safe_url) from None
        except (_Urllib3HTTPError, OSError) as exc:
            raise OJSError(
                f"cannot reach {safe_url}: {type(exc).__name__}", reason="Unreachable", url=safe_url
            ) from None
        try:
            data = self._read_capped(resp, safe_url, deadline)
        except _Urllib3TimeoutError:
            raise OJSError(f"timed out reading {safe_url}", reason="Timeout", url=safe_url) from None
        except (_Urllib3HTTPError, OSError) as exc:
            raise OJSError(
                f"connection to {safe_url} failed mid-response: {type(exc).__name__}",
                reason="Unreachable",
                url=safe_url,
            ) from None
        finally:
            resp.release_conn()
        return _Response(status=resp.status, body=data, url=safe_url)

    def _read_capped(self, resp: Any, safe_url: str, deadline: _Deadline) -> bytes:
        cap = self.max_response_bytes
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            resp.close()  # do not read (or reuse the connection of) a body we will refuse
            raise OJSError(
                f"response from {safe_url} exceeds {cap} bytes", reason="ResponseTooLarge", url=safe_url
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            # read1 returns what has arrived: a server dripping bytes cannot hold us past the deadline.
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                resp.close()
                raise OJSError(
                    f"response from {safe_url} exceeds {cap} bytes", reason="ResponseTooLarge", url=safe_url
                )
            chunks.append(chunk)
            if deadline.remaining() <= 0:
                resp.close()
                raise OJSError(f"deadline exceeded reading {safe_url}", reason="Timeout", url=safe_url)
        return b"".join(chunks)

    @staticmethod
    def _json_object(resp: _Response) -> dict[str, Any]:
        try:
            value = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            raise _invalid("body is not valid JSON", resp.url) from None
        return _as_object(value, "body", resp.url)

    @staticmethod
    def _status_error(resp: _Response) -> OJSError:
        status = resp.status
        code = ""
        try:
            err = orjson.loads(resp.body).get("error")
            if isinstance(err, dict) and isinstance(err.get("code"), str):
                # Only the machine code: server messages are free text we do not control.
                code = re.sub(r"[^a-z0-9_]", "", err["code"].lower())[:64]
        except (orjson.JSONDecodeError, AttributeError):
            pass
        detail = f" ({code})" if code else ""
        if status in (401, 403):
            reason, text = "Unauthorized", f"rejected the API key ({status})"
        elif status == 404:
            reason, text = "NotFound", "answered 404 Not Found"
        elif status >= 500:
            reason, text = "ServerError", f"answered {status}"
        else:
            reason, text = "HTTPError", f"answered {status}"
        return OJSError(f"{resp.url} {text}{detail}", reason=reason, status=status, url=resp.url)

    @staticmethod
    def _scrub(error: OJSError, api_key: str | None) -> OJSError:
        # Belt and braces: no message we build contains the key, but a transport message might one day.
        if api_key and api_key in str(error):
            return OJSError(
                str(error).replace(api_key, "<redacted>"),
                reason=error.reason,
                status=error.status,
                url=error.url,
            )
        return error


# ----------------------------------------------------------------------------------------------------
# Per-cluster cache


StatsFetcher = Callable[[str, str | None], QueueStats]


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched_at: float
    stats: QueueStats | None
    error: OJSError | None


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: _Entry | None = None
        self.exception: BaseException | None = None


class StatsCache:
    """Queue stats per cluster, polled at most once per ``max_age`` whoever asks (SPEC §3, §8.7).

    All workers of a cluster share one entry keyed by the cluster (e.g. ``namespace/name``); a worker asks
    with its own polling interval as ``max_age``, so the cluster is effectively polled every
    min(pollingInterval) of its workers. Concurrent callers for the same key wait for one fetch instead of
    each calling the server (no stampede); callers for other keys are never blocked by it. A failure is
    cached too, for ``min(error_ttl, max_age)``, and re-raised to every caller in that time. Entries
    nobody asked for within ``retain`` seconds are dropped; at most ``maxsize`` are kept.
    """

    def __init__(
        self,
        fetch: StatsFetcher,
        *,
        error_ttl: float = 5.0,
        retain: float = 600.0,
        maxsize: int = 4096,
        wait_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._error_ttl = error_ttl
        self._wait_timeout = wait_timeout
        self._clock = clock
        self._entries: cachetools.TLRUCache[Hashable, _Entry] = cachetools.TLRUCache(
            maxsize=maxsize, ttu=lambda _k, _v, now: now + retain, timer=clock
        )
        self._inflight: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()
        self.polls = 0
        """Number of fetches made (for metrics and tests)."""

    def get(self, key: Hashable, base_url: str, api_key: str | None, max_age: float) -> QueueStats:
        """Stats of cluster ``key`` no older than ``max_age`` seconds, fetching them if needed.

        Raises the cached or fresh :class:`OJSError` when the server could not be read.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry, max_age):
                return self._unwrap(entry)
            flight = self._inflight.get(key)
            leader = flight is None
            if flight is None:
                flight = self._inflight[key] = _Flight()
        if not leader:
            if not flight.done.wait(self._wait_timeout):
                raise OJSError("timed out waiting for a concurrent queue stats poll", reason="Timeout")
            if flight.entry is None:
                assert flight.exception is not None
                raise flight.exception
            return self._unwrap(flight.entry)
        try:
            try:
                stats = self._fetch(base_url, api_key)
                new = _Entry(self._clock(), stats, None)
            except OJSError as exc:
                new = _Entry(self._clock(), None, exc)
            flight.entry = new
            with self._lock:
                self._entries[key] = new
                self.polls += 1
            return self._unwrap(new)
        except BaseException as exc:
            flight.exception = exc
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            flight.done.set()

    def peek(self, key: Hashable) -> tuple[float, QueueStats | None, OJSError | None] | None:
        """The last result for ``key`` as (fetched_at, stats, error), without any I/O; None if unknown."""
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else (entry.fetched_at, entry.stats, entry.error)

    def invalidate(self, key: Hashable) -> None:
        """Forget ``key`` (its cluster was deleted, or its URL or key changed)."""
        with self._lock:
            self._entries.pop(key, None)

    def keys(self) -> Iterable[Hashable]:
        """Keys currently cached."""
        with self._lock:
            return list(self._entries.keys())

    def _fresh(self, entry: _Entry, max_age: float) -> bool:
        age = self._clock() - entry.fetched_at
        ttl = max_age if entry.error is None else min(self._error_ttl, max_age)
        return 0 <= age < ttl

    @staticmethod
    def _unwrap(entry: _Entry) -> QueueStats:
        if entry.error is not None:
            # A fresh copy per raise: re-raising one cached instance would keep growing its traceback.
            err = entry.error
            raise OJSError(str(err), reason=err.reason, status=err.status, url=err.url)
        assert entry.stats is not None
        return entry.stats
