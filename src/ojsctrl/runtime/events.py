"""Kubernetes Events for objects, with client-go style aggregation.

An identical event (same object, type, reason and message) repeated within the window patches the
existing Event's count and lastTimestamp instead of creating a new object, so a flapping condition
cannot flood the API server. Emission never raises: an event is worth less than the reconcile.

The recorder is given its own client (its own rate limiter), as controller-runtime's recorder provider
builds its own clientset: at load, events then never take the tokens a reconcile's writes wait for. The
queue holds only the reference to the object (kind, name, uid...), never the object itself, so a backlog
of events does not keep old versions of cached objects alive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
import time
import uuid

import structlog
from cachetools import TTLCache
from prometheus_client import Counter

from ojsctrl.runtime.client import EVENTS, JSON, ApiError, Client
from ojsctrl.runtime.metrics import REGISTRY

log = structlog.get_logger("ojsctrl.events")

NORMAL = "Normal"
WARNING = "Warning"

DROPPED = Counter(
    "ojsctrl_events_dropped_total",
    "Events not sent because the recorder's bounded queue was full.",
    registry=REGISTRY,
)
# At most one log line about dropped events per this many seconds (the counter has every drop).
_DROP_LOG_INTERVAL = 60.0

_REFERENCE_FIELDS = ("apiVersion", "kind")
_REFERENCE_META = ("name", "namespace", "uid", "resourceVersion")


def reference(obj: JSON) -> JSON:
    """The part of ``obj`` an Event names (involvedObject): apiVersion, kind and metadata's name,
    namespace, uid and resourceVersion."""
    meta = obj.get("metadata") or {}
    return {
        **{k: obj.get(k) for k in _REFERENCE_FIELDS},
        "metadata": {k: meta.get(k) for k in _REFERENCE_META},
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Records events as one component (e.g. `ojsctrl`)."""

    def __init__(
        self,
        client: Client,
        component: str,
        *,
        window: float = 600.0,
        max_tracked: int = 4096,
        host: str = "",
        max_queued: int = 1000,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        # (uid, type, reason, hash of the message) -> (Event name, count): the message's hash, not the
        # message, so the entries of a busy window stay small.
        self._seen: TTLCache[tuple[str, str, str, int], tuple[str, int]] = TTLCache(
            maxsize=max_tracked, ttl=window
        )
        self._lock = threading.Lock()
        self._pending: queue.Queue[tuple[JSON, str, str, str] | None] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stop_by = 0.0
        self._dropped_logged_at: float | None = None

    def start(self) -> None:
        """Send events from a background thread (as client-go's broadcaster does), so a reconcile
        never waits on an event write. Without start(), event() sends inline."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="event-sender", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued until `timeout`, then stop the sender; never blocks longer, even on a
        full queue or a hung API call (what is left is dropped: events are best effort)."""
        if self._thread is not None:
            self._stop_by = time.monotonic() + timeout
            self._stopping.set()
            with contextlib.suppress(queue.Full):
                self._pending.put_nowait(None)  # wakes an idle sender at once
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("event sender still busy at shutdown; dropping queued events")
            self._thread = None

    def _drain(self) -> None:
        while True:
            try:
                item = self._pending.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if item is None or (self._stopping.is_set() and time.monotonic() >= self._stop_by):
                return
            self._send(*item)

    def event(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        """Emit (or aggregate) an event about obj. Never raises; drops the event when the bounded
        queue is full (an event is worth less than the reconcile)."""
        if self._thread is None:
            self._send(obj, type_, reason, message)
            return
        try:
            self._pending.put_nowait((reference(obj), type_, reason, message[:1024]))
        except queue.Full:
            DROPPED.inc()
            now = time.monotonic()
            with self._lock:
                quiet = (
                    self._dropped_logged_at is not None and now - self._dropped_logged_at < _DROP_LOG_INTERVAL
                )
                if not quiet:
                    self._dropped_logged_at = now
            if not quiet:
                log.warning(
                    "event queue full; dropping events (ojsctrl_events_dropped_total counts them)",
                    reason=reason,
                )

    def _send(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        uid = meta.get("uid") or ""
        message = message[:1024]
        key = (uid, type_, reason, hash(message))
        try:
            with self._lock:
                previous = self._seen.get(key)
            if previous is not None:
                name, count = previous
                now = _now()
                self.client.patch(EVENTS, name, {"count": count + 1, "lastTimestamp": now}, ns)
                with self._lock:
                    self._seen[key] = (name, count + 1)
                return
            name = f"{meta.get('name', 'unknown')}.{uuid.uuid4().hex[:16]}"
            now = _now()
            body: JSON = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": meta.get("name"),
                    "namespace": meta.get("namespace"),
                    "uid": uid,
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "reportingComponent": self.component,
                "reportingInstance": self.host or self.component,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            self.client.create(EVENTS, body, ns)
            with self._lock:
                self._seen[key] = (name, 1)
        except ApiError as e:
            # An aggregated event may have been garbage-collected by its TTL: start afresh next time.
            with self._lock:
                self._seen.pop(key, None)
            log.warning(
                "could not record event",
                reason=reason,
                object=f"{ns}/{meta.get('name')}",
                status=e.status,
                error_reason=e.reason,
            )
        except Exception as e:
            log.warning("could not record event", reason=reason, error=str(e))
