"""OJS wire formats -> :mod:`ojsctrl.ojs.model` values. Pure: no I/O, no HTTP client.

Parsing is strict: a wrong type, a negative or absurd count, or broken JSON is an :class:`OJSError` with
reason ``InvalidResponse`` naming the field, never a crash and never a made-up number. ``url`` in every
function is the (already redacted) address the body came from, for the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from ojsctrl.ojs.errors import OJSError
from ojsctrl.ojs.model import QueueCounts, WorkerInfo

__all__ = [
    "MAX_COUNT",
    "Page",
    "as_count",
    "invalid",
    "json_object",
    "parse_admin_queue",
    "parse_page",
    "parse_queue_name",
    "parse_queue_stats",
    "parse_worker",
]

# A count above this is not a queue the operator could act on; it is a broken or hostile server. 2**53 is
# also where JSON numbers parsed as doubles stop being exact.
MAX_COUNT: Final = 2**53
_MAX_NAME_LENGTH: Final = 1024


def invalid(what: str, url: str) -> OJSError:
    """The error for a response body that does not have the expected shape."""
    return OJSError(f"invalid response from {url}: {what}", reason="InvalidResponse", url=url)


def json_object(body: bytes, url: str) -> dict[str, Any]:
    """A response body that must be a JSON object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid("body is not valid JSON", url) from None
    return _as_object(value, "body", url)


def as_count(value: Any, what: str, url: str) -> int:
    """A whole, non-negative number no larger than :data:`MAX_COUNT`."""
    # bool is an int subclass in Python; JSON true is not a count.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{what} must be a number, got {type(value).__name__}", url)
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise invalid(f"{what} must be a whole number", url)
    count = int(value)
    if count < 0:
        raise invalid(f"{what} must not be negative", url)
    if count > MAX_COUNT:
        raise invalid(f"{what} is implausibly large", url)
    return count


def _as_name(value: Any, what: str, url: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME_LENGTH:
        raise invalid(f"{what} must be a non-empty string", url)
    return value


def _as_object(value: Any, what: str, url: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{what} must be an object", url)
    return value


def _as_list(value: Any, what: str, url: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(f"{what} must be an array", url)
    return value


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its raw items and what its pagination block says (None when absent)."""

    items: list[Any]
    total: int | None
    has_more: bool | None
    per_page: int | None = None


def parse_page(body: dict[str, Any], items_key: str, url: str) -> Page:
    """The items under ``items_key`` and the optional ``pagination`` object of a list response."""
    raw_items = body.get(items_key)
    # A Go server encodes an empty (nil) slice as null: ojs-backend-redis answers `"queues": null` on
    # GET /ojs/v1/queues when there is no queue (tests/ojsserver/README.md, checked side by side).
    items = [] if raw_items is None and items_key in body else _as_list(raw_items, items_key, url)
    pagination = body.get("pagination")
    if pagination is None:
        return Page(items, None, None)
    pagination = _as_object(pagination, "pagination", url)
    total = pagination.get("total")
    has_more = pagination.get("has_more")
    if has_more is not None and not isinstance(has_more, bool):
        raise invalid("pagination.has_more must be a boolean", url)
    per_page = pagination.get("per_page")
    return Page(
        items,
        None if total is None else as_count(total, "pagination.total", url),
        has_more,
        # The page size the server actually used; only a positive one tells where pages end.
        per_page if isinstance(per_page, int) and not isinstance(per_page, bool) and per_page > 0 else None,
    )


def parse_admin_queue(item: Any, url: str) -> QueueCounts:
    """One entry of ``GET /ojs/v1/admin/queues``: ``{"name", "counts": {"available", "active", ...}}``."""
    obj = _as_object(item, "items[] entry", url)
    name = _as_name(obj.get("name"), "items[].name", url)
    counts = _as_object(obj.get("counts"), f"counts of queue {name!r}", url)
    return QueueCounts(
        name=name,
        available=as_count(counts.get("available"), f"counts.available of queue {name!r}", url),
        active=as_count(counts.get("active"), f"counts.active of queue {name!r}", url),
        completed=_optional_count(counts.get("completed"), f"counts.completed of queue {name!r}", url),
    )


def parse_queue_stats(name: str, body: dict[str, Any], url: str) -> QueueCounts:
    """The body of ``GET /ojs/v1/queues/{name}/stats``, in either of the two shapes servers write."""
    # The conformance suite (L4-STATS-001) reads {"queue": {"name", "available", "active", ...}}; the HTTP
    # binding document shows {"queue": "<name>", "stats": {"available", "active", ...}}. Accept both shapes.
    queue = body.get("queue")
    if isinstance(queue, dict):
        counts = queue
    elif isinstance(body.get("stats"), dict):
        counts = body["stats"]
    else:
        raise invalid("expected a 'queue' or 'stats' object", url)
    return QueueCounts(
        name=name,
        available=as_count(counts.get("available"), f"available of queue {name!r}", url),
        active=as_count(counts.get("active"), f"active of queue {name!r}", url),
        completed=_optional_count(counts.get("completed"), f"completed of queue {name!r}", url),
    )


def _optional_count(value: Any, what: str, url: str) -> int:
    """A count servers may leave out (``completed`` is not in every backend's answer): absent or null is 0,
    anything else must be a count."""
    return 0 if value is None else as_count(value, what, url)


def parse_queue_name(item: Any, url: str) -> str:
    """One entry of ``GET /ojs/v1/queues``: a name, or an object with a ``name``."""
    if isinstance(item, str):
        return _as_name(item, "queues[]", url)
    return _as_name(_as_object(item, "queues[] entry", url).get("name"), "queues[].name", url)


def optional_text(value: Any, what: str, url: str) -> str:
    """An optional string field: absent or null is "", anything but a string of sane length an error."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_NAME_LENGTH:
        raise invalid(f"{what} must be a string", url)
    return value


def optional_time(value: Any, what: str, url: str) -> float | None:
    """An optional RFC 3339 time (servers write Go's time.RFC3339 or RFC3339Nano); None when absent."""
    text = optional_text(value, what, url)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)  # 3.11+: "Z" and nanoseconds too
    except ValueError:
        raise invalid(f"{what} must be an RFC 3339 time", url) from None
    if parsed.tzinfo is None:
        raise invalid(f"{what} must carry a time zone", url)
    return parsed.timestamp()


def _as_active_jobs(value: Any, what: str, url: str) -> int:
    # Servers report a count (ojs-backend-redis admin_list.go: `active_jobs` int); the heartbeat they
    # accept carries a list of job ids, and a server that echoes it would report the list: count it.
    if isinstance(value, list):
        return as_count(len(value), what, url)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{what} must be a number or an array of job ids, got {type(value).__name__}", url)
    return as_count(value, what, url)


def parse_worker(item: Any, url: str) -> WorkerInfo:
    """One entry of ``GET /ojs/v1/admin/workers``."""
    obj = _as_object(item, "items[] entry", url)
    worker_id = _as_name(obj.get("id"), "items[].id", url)
    who = f"of worker {worker_id!r}"
    metadata = obj.get("metadata")
    pod = ""
    if metadata is not None:
        meta = _as_object(metadata, f"metadata {who}", url)
        pod = optional_text(meta.get("kubernetes_pod"), f"metadata.kubernetes_pod {who}", url)
    return WorkerInfo(
        id=worker_id,
        last_heartbeat=optional_time(obj.get("last_heartbeat"), f"last_heartbeat {who}", url),
        active_jobs=_as_active_jobs(obj.get("active_jobs"), f"active_jobs {who}", url),
        state=optional_text(obj.get("state"), f"state {who}", url).lower(),
        directive=optional_text(obj.get("directive"), f"directive {who}", url).lower(),
        hostname=optional_text(obj.get("hostname"), f"hostname {who}", url),
        pod=pod,
    )
