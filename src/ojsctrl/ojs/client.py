"""The OJS server API the operator reads (design.md §ojs-servers): queue counts, workers, quiet; with
pagination.

Everything here is bounded: the transport (:mod:`ojsctrl.ojs.transport`) gives connect and read timeouts, a
few retries (GET only) and a response size cap; this module adds an overall deadline per call and a page
cap for paginated lists. Bodies are parsed strictly by :mod:`ojsctrl.ojs.wire`. The API key is sent as a
bearer token and never appears in an error message.

``OJSError`` and the URL template helpers (:mod:`ojsctrl.ojs.urls`) are re-exported here for the callers
that import them from this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import cachetools

from ojsctrl.ojs import wire
from ojsctrl.ojs.errors import OJSError
from ojsctrl.ojs.model import QueueCounts, QueueStats, WorkerInfo
from ojsctrl.ojs.transport import Deadline, Transport, redact_url, status_error
from ojsctrl.ojs.urls import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_PORT,
    DEFAULT_URL_TEMPLATE,
    url_for,
    validate_url_template,
)

__all__ = [
    "ADMIN_MAX_PER_PAGE",
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_PORT",
    "DEFAULT_URL_TEMPLATE",
    "OJSClient",
    "OJSError",
    "url_for",
    "validate_url_template",
]

# Servers without the admin extension answer these for /ojs/v1/admin/* (design.md §ojs-servers names 404).
_ADMIN_ABSENT_STATUSES: Final = frozenset({404, 405, 501})
# Admin lists take per_page up to 100; a larger value makes the reference servers fall back to their
# default of 50 (ojs-backend-redis internal/api/handler_admin.go), so never ask for more.
ADMIN_MAX_PER_PAGE: Final = 100


class _AdminAbsent(Exception):
    """The server has no admin API (404/405/501 on the first admin request)."""


class OJSClient:
    """Reads queue counts and worker state from OJS servers and quiets workers.

    One instance serves every cluster (a shared connection pool); it is thread-safe. Every public call
    finishes within ``total_timeout`` seconds (plus one read timeout at most, for a response already being
    read), raising :class:`OJSError` on any failure.

    Choices where the OJS specs leave room: the admin API is paginated with ``page``/``per_page`` (OJS admin
    API §6.1); ``GET /ojs/v1/queues`` with ``limit``/``offset`` (HTTP binding §17). A server that ignores the
    page parameters and returns everything at once is fine; one that repeats a page while claiming more
    items is an error.
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
        self.total_timeout = total_timeout
        self.per_page = per_page
        self.max_pages = max_pages
        self.max_fallback_queues = max_fallback_queues
        self._http = Transport(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff=backoff,
            max_response_bytes=max_response_bytes,
            user_agent=user_agent,
        )
        # Remember servers without the admin API so each poll does not waste a request on a 404.
        self._admin_absent: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            maxsize=1024, ttl=admin_absent_ttl
        )
        self._lock = threading.Lock()

    @property
    def connect_timeout(self) -> float:
        """Seconds allowed to open a connection."""
        return self._http.connect_timeout

    @property
    def read_timeout(self) -> float:
        """Seconds allowed between bytes of a response."""
        return self._http.read_timeout

    @property
    def retries(self) -> int:
        """How many times a failed GET is tried again."""
        return self._http.retries

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    # ---- public API --------------------------------------------------------------------------------------

    def queue_stats(self, base_url: str, api_key: str | None) -> QueueStats:
        """Per-queue ``available``/``active`` counts of the server at ``base_url``.

        Reads ``GET /ojs/v1/admin/queues`` (all pages); when the server has no admin API, falls back to
        ``GET /ojs/v1/queues`` plus ``GET /ojs/v1/queues/{name}/stats`` per queue.
        """
        deadline = Deadline(self.total_timeout)
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
        deadline = Deadline(self.total_timeout)
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
                f"{redact_url(base_url)} has no admin API (GET /ojs/v1/admin/workers)",
                reason="AdminAPIUnavailable",
                url=redact_url(base_url),
            ) from None
        by_id: dict[str, WorkerInfo] = {}
        for item, url in items:
            worker = wire.parse_worker(item, url)
            known = by_id.get(worker.id)
            # The same id twice (a list that shifted between pages): trust the live, then the busier record.
            if known is None or (not worker.stale, worker.active_jobs) > (not known.stale, known.active_jobs):
                by_id[worker.id] = worker
        return sorted(by_id.values(), key=lambda w: w.id)

    def quiet_worker(self, base_url: str, api_key: str | None, worker_id: str) -> None:
        """Tell worker ``worker_id`` to stop fetching jobs (``POST /ojs/v1/admin/workers/{id}/quiet``)."""
        deadline = Deadline(self.total_timeout)
        path = f"/ojs/v1/admin/workers/{quote(worker_id, safe='')}/quiet"
        resp = self._http.request("POST", base_url, path, api_key, deadline, body=b"{}")
        if resp.status in (200, 202, 204):
            return
        if resp.status in (405, 501):  # a 404 is ambiguous here: most likely an unknown worker
            raise OJSError(
                f"{resp.url} has no admin API", reason="AdminAPIUnavailable", status=resp.status, url=resp.url
            )
        raise status_error(resp)

    # ---- queue stats -------------------------------------------------------------------------------------

    def _admin_queue_stats(self, base_url: str, api_key: str | None, deadline: Deadline) -> QueueStats:
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
            q = wire.parse_admin_queue(item, url)
            queues.setdefault(q.name, q)
        return QueueStats(tuple(queues.values()), source="admin")

    def _fallback_queue_stats(self, base_url: str, api_key: str | None, deadline: Deadline) -> QueueStats:
        names = self._queue_names(base_url, api_key, deadline)
        counts: list[QueueCounts] = []
        for name in names:
            path = f"/ojs/v1/queues/{quote(name, safe='')}/stats"
            resp = self._http.request("GET", base_url, path, api_key, deadline)
            if resp.status == 404:
                continue  # deleted between the list and the stats call: it holds no jobs
            if resp.status != 200:
                raise status_error(resp)
            counts.append(wire.parse_queue_stats(name, wire.json_object(resp.body, resp.url), resp.url))
        return QueueStats(tuple(counts), source="queues")

    def _queue_names(self, base_url: str, api_key: str | None, deadline: Deadline) -> list[str]:
        """Every name ``GET /ojs/v1/queues`` lists (``limit``/``offset`` pages); too many is an error."""
        names: dict[str, None] = {}
        offset = 0
        limit = min(self.per_page * 2, 200)  # HTTP binding §17: max 200
        for _ in range(self.max_pages):
            resp = self._http.get(
                base_url, "/ojs/v1/queues", api_key, deadline, {"limit": limit, "offset": offset}
            )
            page = wire.parse_page(wire.json_object(resp.body, resp.url), "queues", resp.url)
            new = 0
            for item in page.items:
                name = wire.parse_queue_name(item, resp.url)
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
                f"{redact_url(base_url)} lists {len(names)} queues; without the admin API at most "
                f"{self.max_fallback_queues} are read one by one",
                reason="TooManyItems",
                url=redact_url(base_url),
            )
        return list(names)

    # ---- pagination --------------------------------------------------------------------------------------

    def _paginate(
        self,
        base_url: str,
        api_key: str | None,
        deadline: Deadline,
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
            resp = self._http.request("GET", base_url, path, api_key, deadline, query=query)
            if page_no == 1 and resp.status in _ADMIN_ABSENT_STATUSES:
                raise _AdminAbsent
            if resp.status != 200:
                raise status_error(resp)
            page = wire.parse_page(wire.json_object(resp.body, resp.url), items_key, resp.url)
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
    def _last_page(page: wire.Page, collected: int, new: int, page_size: int, url: str) -> bool:
        if not page.items or page.has_more is False:
            return True
        if page.total is not None and collected >= page.total:
            return True
        if new == 0:
            # The server ignored the page parameters and repeated itself while claiming more items.
            if page.total is not None or page.has_more:
                raise wire.invalid("pagination not honoured (a page repeated earlier items)", url)
            return True
        return page.has_more is None and page.total is None and len(page.items) < page_size

    def _too_many(self, base_url: str, what: str, per_page: int) -> OJSError:
        return OJSError(
            f"{redact_url(base_url)}: {what} has more than {self.max_pages} pages of {per_page} "
            f"(the operator reads at most {self.max_pages * per_page} items)",
            reason="TooManyItems",
            url=redact_url(base_url),
        )
