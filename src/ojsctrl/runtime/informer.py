"""Shared informers: list + watch into an indexed, thread-safe cache, with event handlers.

Semantics follow client-go's reflector and shared index informer:
- list with resourceVersion=0 (served from the watch cache), then watch from the list's version;
- the watch resumes from the last seen version (bookmarks included) when the server ends it;
- 410 Gone means the history is lost: relist with a consistent read (resourceVersion unset), and
  objects missing from the new list are delivered as deletes (`DeletedFinalStateUnknown`);
- failures back off exponentially (0.8 s doubling to 30 s, jittered), reset only by a healthy watch
  (one that delivered an event or stayed open for a second): a watch the server ends at once with
  no event is a failure ("very short watch"), so a server or proxy that closes every watch cannot
  make the informer spin;
- any other ERROR event is a failure too, and the informer relists (from the last version it saw)
  after the backoff; "too large resource version" (the server is behind the client, e.g. after an
  etcd restore) relists with a consistent read;
- a stream silent for the inactivity timeout is reopened at once: on servers without bookmarks a
  quiet resource does that every timeout, which is normal operation;
- a periodic, jittered resync re-delivers every cached object as an update; the factory turns it on
  only for the informers asked to resync (the primary kinds): a child's drift arrives as a watch
  event, and a lost watch relists, so resyncing caches of children only wakes owners for nothing.

Handlers run on the informer's own thread, in event order, after the cache is updated; they must
be cheap (the controllers' handlers only enqueue keys).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge

from ojsctrl.runtime.client import (
    JSON,
    ApiError,
    Client,
    GoneError,
    Resource,
    WatchEvent,
    WatchHandle,
    WatchInactiveError,
    object_key,
)
from ojsctrl.runtime.metrics import REGISTRY

log = structlog.get_logger("ojsctrl.informer")

IndexFunc = Callable[[JSON], Iterable[str]]
Transform = Callable[[JSON], JSON]

OBJECTS = Gauge(
    "ojsctrl_informer_objects", "Objects held in an informer's cache.", ["resource"], registry=REGISTRY
)
WATCH_RESTARTS = Counter(
    "ojsctrl_informer_watch_restarts_total",
    "Watches reopened, by resource and cause (expired, closed, inactive, error, too_large).",
    ["resource", "cause"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "ojsctrl_informer_events_total",
    "Watch events received, by resource and type.",
    ["resource", "type"],
    registry=REGISTRY,
)


# A watch that ends sooner than this without an event counts as a failure (client-go's reflector).
MIN_WATCH_DURATION = 1.0


class Backoff:
    """Exponential backoff: `initial` doubling to `cap`, each delay jittered by +-20 %; `reset()`
    after healthy progress starts again from `initial`."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0) -> None:
        self.initial, self.cap = initial, cap
        self.failures = 0

    def next(self) -> float:
        """Count one failure and return how long to wait before the next attempt."""
        self.failures += 1
        base = min(self.initial * 2 ** min(self.failures - 1, 30), self.cap)
        return float(base * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        """Forget the failures counted so far."""
        self.failures = 0


class BackoffManager:
    """The backoff of one reflector, told how each watch went (client-go's reflector backoff manager).

    A healthy watch (one that delivered an event or stayed open for :data:`MIN_WATCH_DURATION`) resets the
    backoff; a watch ended at once with no event does not, so a server that closes every watch cannot make
    the reflector spin.
    """

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._started: float | None = None
        self._events = 0

    @property
    def failures(self) -> int:
        """Failures counted since the last reset."""
        return self.backoff.failures

    def attempt_started(self) -> None:
        """A new list/watch attempt begins: no watch is open yet."""
        self._started, self._events = None, 0

    def watch_started(self) -> None:
        """The watch request is about to be sent."""
        self._started, self._events = time.monotonic(), 0

    def event(self) -> None:
        """The watch delivered an event (bookmarks count)."""
        self._events += 1

    def watch_was_healthy(self) -> bool:
        """Did the current attempt open a watch that delivered an event or lasted long enough?"""
        if self._started is None:
            return False
        return bool(self._events) or time.monotonic() - self._started >= MIN_WATCH_DURATION

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.backoff.reset()

    def next_delay(self) -> float:
        """Count one failure and return the pause before the next attempt.

        A watch that was healthy before it broke starts the backoff from its first step again.
        """
        if self.watch_was_healthy():
            self.backoff.reset()
        return self.backoff.next()


def too_large_resource_version(status: Mapping[str, Any]) -> bool:
    """Is this Status the API server's "Too large resource version" (it has not caught up with the
    version asked for, e.g. after etcd was restored from a backup)? Only a consistent list helps."""
    details = status.get("details") or {}
    for cause in details.get("causes") or ():
        if isinstance(cause, Mapping) and cause.get("reason", cause.get("type")) == "ResourceVersionTooLarge":
            return True
    return "too large resource version" in str(status.get("message", "")).lower()


@dataclass(frozen=True)
class DeletedFinalStateUnknown:
    """A delete inferred from a relist: the object vanished while the watch was not looking.
    `obj` is the last state the cache had."""

    key: str
    obj: JSON


class EventHandler(Protocol):
    """What an informer calls; any method may be a no-op."""

    def on_add(self, obj: JSON) -> None:
        """An object appeared (or was listed for the first time)."""

    def on_update(self, old: JSON, new: JSON) -> None:
        """An object changed (or a resync re-delivered it unchanged)."""

    def on_delete(self, obj: JSON | DeletedFinalStateUnknown) -> None:
        """An object was deleted (a tombstone when the delete itself was missed)."""


@dataclass
class FuncHandler:
    """An EventHandler from plain functions."""

    add: Callable[[JSON], None] | None = None
    update: Callable[[JSON, JSON], None] | None = None
    delete: Callable[[JSON | DeletedFinalStateUnknown], None] | None = None

    def on_add(self, obj: JSON) -> None:
        """Call ``add`` if set."""
        if self.add:
            self.add(obj)

    def on_update(self, old: JSON, new: JSON) -> None:
        """Call ``update`` if set."""
        if self.update:
            self.update(old, new)

    def on_delete(self, obj: JSON | DeletedFinalStateUnknown) -> None:
        """Call ``delete`` if set."""
        if self.delete:
            self.delete(obj)


# --------------------------------------------------------------------------- indexers
def index_by_namespace(obj: JSON) -> Iterable[str]:
    """Index function: the object's namespace."""
    ns = (obj.get("metadata") or {}).get("namespace")
    return (ns,) if ns else ()


def index_by_owner_uid(obj: JSON) -> Iterable[str]:
    """Index function: the UID of every owner reference."""
    return tuple(r["uid"] for r in (obj.get("metadata") or {}).get("ownerReferences") or () if r.get("uid"))


def index_by_controller_uid(obj: JSON) -> Iterable[str]:
    """Index function: the UID of the controller owner reference, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("uid"):
            return (ref["uid"],)
    return ()


NAMESPACE_INDEX = "namespace"
OWNER_INDEX = "owner-uid"
CONTROLLER_INDEX = "controller-uid"
DEFAULT_INDEXERS: dict[str, IndexFunc] = {
    NAMESPACE_INDEX: index_by_namespace,
    OWNER_INDEX: index_by_owner_uid,
    CONTROLLER_INDEX: index_by_controller_uid,
}


def strip_managed_fields(obj: JSON) -> JSON:
    """Drop metadata.managedFields: often the largest part of an object and never read from cache."""
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        del meta["managedFields"]
    return obj


# Strings up to this long are shared between cached objects (label values, kinds, names, condition types
# and reasons, image names): orjson already shares an object's keys, not its values. Longer ones
# (messages) are rarely repeated.
_INTERN_MAX = 64
# Values that are new with every write are not shared: each would pass through the interpreter's table
# of shared strings once per event, and that table grows with them. Two full-size load tests that shared
# them showed a one-step RSS rise of about 50 MB; one without them stayed flat (the cause is inferred,
# docs/reliability.md).
_UNSHARED_KEYS = frozenset({"resourceVersion", "uid"})
_UNSHARED_SUFFIXES = ("Time", "Timestamp")


def intern_strings(obj: JSON, skip: Collection[int] = ()) -> JSON:
    """Replace the short string values of a cached object, in place, by one shared copy each (sys.intern).

    Thousands of cached children repeat the same few hundred values; shared, they cost a pointer each
    instead of a string object each: about 30 % of a cached Deployment, Service or OJSWorker (design.md
    §no-op). Values that change with every write (resourceVersion, uid, timestamps: keys ending in
    ``Time`` or ``Timestamp``) are left alone. The walk costs tens of microseconds per event, next to the
    event's own decoding. Containers whose ``id`` is in ``skip`` (parts taken over from the previous
    version of the object, already shared) are not walked again."""
    intern = sys.intern
    unshared, suffixes = _UNSHARED_KEYS, _UNSHARED_SUFFIXES
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        is_dict = type(node) is dict
        # Replacing a value (dict or list) does not change the container's size: safe while iterating.
        # The key test is inline: this loop runs for every value of every event.
        for k, v in node.items() if is_dict else enumerate(node):
            t = type(v)
            if t is str:
                if len(v) <= _INTERN_MAX and not (
                    is_dict and (k in unshared or (type(k) is str and k.endswith(suffixes)))
                ):
                    node[k] = intern(v)
            elif (t is dict or t is list) and not (skip and id(v) in skip):
                stack.append(v)
    return obj


# Parts of an object that most updates leave as they were (a Deployment's status step keeps its labels,
# owner references and conditions' types): an equal part of the previous cached version is reused as it is.
_STABLE_PARTS = (
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("metadata", "ownerReferences"),
    ("metadata", "finalizers"),
    ("data",),
    ("binaryData",),
)


def share_unchanged(obj: JSON, old: JSON | None, *, spec_follows_generation: bool = False) -> set[int]:
    """Reuse, in ``obj`` (a new version just decoded), the parts of ``old`` (the prepared version in the
    cache) that did not change; returns the ids of the parts reused, already prepared.

    With ``spec_follows_generation`` (a kind whose every spec change bumps ``metadata.generation``: apps
    workloads; custom resources with a status subresource, where every change but metadata and status
    bumps it), ``spec`` is reused when both versions have the same uid and generation: such an update is
    a status or metadata step. Reusing the cached spec also keeps a transform's work on it (a
    Deployment's compact template, design.md §no-op). Other kinds may carry a generation that never
    moves: their spec is always taken from the event. The parts in ``_STABLE_PARTS`` are reused when
    equal (a C-level comparison, cheaper than walking them again). The previous version is never
    modified: cached objects are read-only."""
    if old is None:
        return set()
    meta, old_meta = obj.get("metadata"), old.get("metadata")
    if type(meta) is not dict or type(old_meta) is not dict or meta.get("uid") != old_meta.get("uid"):
        return set()
    reused: set[int] = set()
    gen = meta.get("generation")
    if (
        spec_follows_generation
        and gen
        and gen == old_meta.get("generation")
        and "spec" in obj
        and "spec" in old
    ):
        obj["spec"] = old["spec"]
        reused.add(id(old["spec"]))
    for path in _STABLE_PARTS:
        new_parent: Any = obj
        old_parent: Any = old
        for step in path[:-1]:
            new_parent, old_parent = new_parent.get(step), old_parent.get(step)
            if type(new_parent) is not dict or type(old_parent) is not dict:
                break
        else:
            leaf = path[-1]
            value, before = new_parent.get(leaf), old_parent.get(leaf)
            if value is not None and value is not before and type(value) is type(before) and value == before:
                new_parent[leaf] = before
                reused.add(id(before))
    return reused


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def strip_last_applied(obj: JSON) -> JSON:
    """Drop kubectl's last-applied annotation: it is a copy of the whole object as applied, so on a Secret
    applied with `kubectl apply` it holds the Secret's data. A metadata-only cache exists so that such
    values are never held; a metadata-only watch still delivers every annotation."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if annotations and LAST_APPLIED in annotations:
        del annotations[LAST_APPLIED]
    return obj


# --------------------------------------------------------------------------- store
# An index bucket: the one key an index value holds (most owner uids own one child of a kind), or a set
# of two or more. A set of one costs about 200 bytes more than the key itself, once per cached child.
Bucket = str | set[str]


def _bucket_add(idx: dict[str, Bucket], value: str, key: str) -> None:
    have = idx.get(value)
    if have is None:
        idx[value] = key
    elif isinstance(have, str):
        if have != key:
            idx[value] = {have, key}
    else:
        have.add(key)


def _bucket_remove(idx: dict[str, Bucket], value: str, key: str) -> None:
    have = idx.get(value)
    if have is None:
        return
    if isinstance(have, str):
        if have == key:
            del idx[value]
        return
    have.discard(key)
    if len(have) == 1:
        idx[value] = next(iter(have))
    elif not have:
        del idx[value]


def _bucket_keys(bucket: Bucket | None) -> Iterable[str]:
    if bucket is None:
        return ()
    return (bucket,) if isinstance(bucket, str) else bucket


class Store:
    """A thread-safe map of key -> object with secondary indexes. Objects must be treated as read-only."""

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, JSON] = {}
        self._indexers: dict[str, IndexFunc] = dict(indexers or {})
        self._indices: dict[str, dict[str, Bucket]] = {name: {} for name in self._indexers}

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Register more indexes; existing objects are indexed at once."""
        with self._lock:
            for name, fn in indexers.items():
                if name in self._indexers:
                    if self._indexers[name] is not fn:
                        raise ValueError(f"indexer {name!r} already registered with another function")
                    continue
                self._indexers[name] = fn
                idx: dict[str, Bucket] = {}
                for key, obj in self._items.items():
                    for value in fn(obj):
                        _bucket_add(idx, value, key)
                self._indices[name] = idx

    def _reindex(self, key: str, old: JSON | None, new: JSON | None) -> None:
        """Move ``key`` from the index values of ``old`` to those of ``new`` (either may be None); an
        update that keeps an index's values (most do) leaves that index alone."""
        for name, fn in self._indexers.items():
            before = list(fn(old)) if old is not None else []
            after = list(fn(new)) if new is not None else []
            if before == after:
                continue
            idx = self._indices[name]
            for value in before:
                _bucket_remove(idx, value, key)
            for value in after:
                _bucket_add(idx, value, key)

    def upsert(self, key: str, obj: JSON) -> JSON | None:
        """Insert or replace; returns the previous object."""
        with self._lock:
            old = self._items.get(key)
            self._items[key] = obj
            self._reindex(key, old, obj)
            return old

    def delete(self, key: str) -> JSON | None:
        """Remove; returns the removed object."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._reindex(key, old, None)
            return old

    def get(self, key: str) -> JSON | None:
        """The object under ``key`` (``namespace/name``), or None."""
        with self._lock:
            return self._items.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> JSON | None:
        """The object called ``name`` in ``namespace``, or None."""
        return self.get(f"{namespace}/{name}" if namespace else name)

    def objects(self) -> list[JSON]:
        """A snapshot of every object."""
        with self._lock:
            return list(self._items.values())

    def keys(self) -> list[str]:
        """Every key held."""
        with self._lock:
            return list(self._items)

    def by_index(self, index: str, value: str) -> list[JSON]:
        """Objects whose index function yields value."""
        with self._lock:
            if index not in self._indices:
                raise KeyError(f"no indexer named {index!r}")
            return [self._items[k] for k in _bucket_keys(self._indices[index].get(value))]

    def index_values(self, index: str) -> list[str]:
        """The values index ``index`` currently holds objects under."""
        with self._lock:
            return list(self._indices[index])

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


# --------------------------------------------------------------------------- informer
class Informer:
    """A shared informer for one resource, over all namespaces or a set of them.

    One reflector thread per watched namespace (or one for all) feeds a single store.
    """

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespaces: Iterable[str] | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        resync_period: float = 10 * 3600.0,
        inactivity_timeout: float = 70.0,
        page_size: int = 500,
        transform: Transform | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        spec_follows_generation: bool = False,
    ) -> None:
        self.client = client
        # The API server bumps metadata.generation on every change of this kind's spec (apps workloads,
        # custom resources with a status subresource): an update that keeps it keeps the spec, and the
        # cached spec is reused as it is (share_unchanged).
        self.spec_follows_generation = spec_follows_generation
        self.resource = resource
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.metadata_only = metadata_only
        self.resync_period = resync_period
        self.inactivity_timeout = inactivity_timeout
        self.page_size = page_size
        self._transform = transform
        ns = sorted(set(namespaces)) if namespaces and resource.namespaced else []
        self._scopes: list[str | None] = list(ns) if ns else [None]
        self.store = Store({**DEFAULT_INDEXERS, **(indexers or {})})
        self._handlers: list[EventHandler] = []
        self._dispatch_lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._handles: dict[str | None, WatchHandle] = {}
        self._synced: dict[str | None, bool] = dict.fromkeys(self._scopes, False)
        self._progress = time.monotonic()
        self._started = False
        self._label = str(resource) + (f"[{label_selector}]" if label_selector else "")
        self._log = log.bind(resource=self._label)
        # The series this informer sets on every event, looked up once (labels() costs a lookup under a lock).
        self._objects_gauge = OBJECTS.labels(self._label)
        self._event_counters: dict[str, Any] = {}

    # ------------------------------------------------------------------ public
    @property
    def name(self) -> str:
        """The resource (and label selector) this informer watches, for logs and metrics."""
        return self._label

    def add_event_handler(self, handler: EventHandler) -> None:
        """Register a handler. If the informer already holds objects, they are replayed as adds
        first, so a late handler sees the same world as an early one."""
        with self._dispatch_lock:
            self._handlers.append(handler)
            for obj in self.store.objects():
                self._safe(handler.on_add, obj)

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Add indexes to the store (existing objects are indexed at once)."""
        self.store.add_indexers(indexers)

    def start(self) -> None:
        """Start the reflector threads (idempotent)."""
        if self._started:
            return
        self._started = True
        for scope in self._scopes:
            t = threading.Thread(
                target=self._run,
                args=(scope,),
                daemon=True,
                name=f"informer-{self.resource.plural}-{scope or 'all'}",
            )
            t.start()
            self._threads.append(t)
        if self.resync_period > 0:
            self._start_resync()

    def enable_resync(self, period: float) -> None:
        """Resync every ``period`` seconds from now on (a shared informer created without resync that a
        later caller asks to resync); a shorter period already set is kept."""
        if period <= 0:
            return
        with self._dispatch_lock:
            had = self.resync_period > 0
            self.resync_period = min(self.resync_period, period) if had else period
            if self._started and not had and not self._stop.is_set():
                self._start_resync()

    def _start_resync(self) -> None:
        t = threading.Thread(
            target=self._resync_loop, daemon=True, name=f"informer-resync-{self.resource.plural}"
        )
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread: open watches are closed under their blocking read."""
        self._stop.set()
        for handle in list(self._handles.values()):
            handle.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def has_synced(self) -> bool:
        """True once every scope's first list has been delivered."""
        return all(self._synced.values())

    def wait_for_sync(self, timeout: float) -> bool:
        """Wait until every scope has listed once; False on timeout or stop."""
        deadline = time.monotonic() + timeout
        while not self.has_synced():
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(0.05)
        return True

    def last_progress(self) -> float:
        """Monotonic time of the last list, event or bookmark (for /healthz)."""
        return self._progress

    def alive(self) -> bool:
        """All reflector threads are running (or the informer was never started / is stopping)."""
        if not self._started or self._stop.is_set():
            return True
        return all(t.is_alive() for t in self._threads)

    def resync(self) -> None:
        """Deliver every cached object as an update now."""
        with self._dispatch_lock:
            for obj in self.store.objects():
                for h in self._handlers:
                    self._safe(h.on_update, obj, obj)

    # ------------------------------------------------------------------ internals
    def _safe(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            # A broken handler must not stop the stream for every other handler.
            self._log.exception("event handler failed")

    def _prepare(self, obj: JSON, old: JSON | None = None) -> JSON:
        """Make a decoded object ready for the cache: strip what is never read, apply the transform,
        reuse what did not change since ``old`` (the cached version) and share short strings."""
        strip_managed_fields(obj)
        if self.metadata_only:
            strip_last_applied(obj)
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
        reused = share_unchanged(obj, old, spec_follows_generation=self.spec_follows_generation)
        if self._transform:
            # A transform leaves a part it already made (a reused spec) as it is.
            obj = self._transform(obj)
        return intern_strings(obj, reused)

    def _in_scope(self, key: str, scope: str | None) -> bool:
        return scope is None or key.startswith(scope + "/")

    def _replace(self, scope: str | None, items: list[JSON]) -> None:
        """Make the store's part for this scope equal to a fresh list, delivering the differences."""
        with self._dispatch_lock:
            seen: set[str] = set()
            for raw in items:
                obj = self._prepare(raw, self.store.get(object_key(raw)))
                # List items carry no kind; restore it so handlers can treat them like watch objects.
                obj.setdefault("apiVersion", self.resource.api_version)
                obj.setdefault("kind", self.resource.kind)
                key = object_key(obj)
                seen.add(key)
                old = self.store.upsert(key, obj)
                if old is None:
                    for h in self._handlers:
                        self._safe(h.on_add, obj)
                elif (old.get("metadata") or {}).get("resourceVersion") != obj["metadata"].get(
                    "resourceVersion"
                ):
                    for h in self._handlers:
                        self._safe(h.on_update, old, obj)
            for key in list(self.store.keys()):
                if key not in seen and self._in_scope(key, scope):
                    gone = self.store.delete(key)
                    if gone is not None:
                        tomb = DeletedFinalStateUnknown(key, gone)
                        for h in self._handlers:
                            self._safe(h.on_delete, tomb)
            self._objects_gauge.set(len(self.store))

    def _apply_event(self, etype: str, raw: JSON) -> None:
        key = object_key(raw)
        obj = self._prepare(raw, self.store.get(key) if etype == "MODIFIED" else None)
        with self._dispatch_lock:
            if etype == "DELETED":
                self.store.delete(key)
                for h in self._handlers:
                    self._safe(h.on_delete, obj)
            else:
                old = self.store.upsert(key, obj)
                for h in self._handlers:
                    if old is None:
                        self._safe(h.on_add, obj)
                    else:
                        self._safe(h.on_update, old, obj)
            self._objects_gauge.set(len(self.store))

    def _mark_progress(self) -> None:
        self._progress = time.monotonic()

    def _sleep(self, seconds: float) -> bool:
        """Interruptible sleep; False when stopping."""
        return not self._stop.wait(seconds)

    def _run(self, scope: str | None) -> None:
        _Reflector(self, scope).run()

    def _resync_loop(self) -> None:
        while self._sleep(self.resync_period * random.uniform(1.0, 1.1)):
            if self.has_synced():
                self.resync()


class _Reflector:
    """List and watch of one scope of an informer into its store, as client-go's Reflector.

    ``run`` repeats one attempt (``_list`` when the version is unknown, then ``_watch``, whose stream
    ``_handle_watch_stream`` applies) and pauses after a failure for the delay of its
    :class:`BackoffManager`.
    """

    def __init__(self, informer: Informer, scope: str | None) -> None:
        self._inf = informer
        self._scope = scope
        self._label = informer.name
        # The version to watch from; None: list first.
        self._rv: str | None = None
        # How the next list reads: "0" from the watch cache, "" consistently from etcd (after 410 or
        # "too large"), or a version already seen (after another error: never go back in time).
        self._list_from = "0"
        self._backoff = BackoffManager()
        self._log = informer._log.bind(namespace=scope or "*")

    def _stopping(self) -> bool:
        return self._inf._stop.is_set()

    def run(self) -> None:
        """List and watch until the informer stops."""
        while not self._stopping():
            failure = self._attempt()
            if self._stopping():
                return
            if failure and not self._pause(failure):
                return

    def _attempt(self) -> str:
        """One list (when needed) and one watch; returns why it failed, or "" when it ended normally."""
        self._backoff.attempt_started()
        try:
            if self._rv is None:
                self._list()
            return self._watch()
        except GoneError:
            WATCH_RESTARTS.labels(self._label, "expired").inc()
            self._log.info("resource version too old (410); relisting")
            self._relist_consistently()
            return ""
        except WatchInactiveError:
            if self._stopping():
                return ""
            # Normal on a quiet resource when the server sends no bookmarks: reopen at once.
            WATCH_RESTARTS.labels(self._label, "inactive").inc()
            self._backoff.reset()
            self._log.debug("watch inactive; reopening", timeout=self._inf.inactivity_timeout)
            return ""
        except ApiError as e:
            if self._stopping():
                return ""
            if e.status and too_large_resource_version(e.body or {"message": e.message}):
                self._relist_consistently()
                WATCH_RESTARTS.labels(self._label, "too_large").inc()
            else:
                WATCH_RESTARTS.labels(self._label, "error").inc()
            return str(e)
        except Exception as e:
            if self._stopping():
                return ""
            WATCH_RESTARTS.labels(self._label, "error").inc()
            return f"{type(e).__name__}: {e}"

    def _relist_consistently(self) -> None:
        self._rv, self._list_from = None, ""

    def _list(self) -> None:
        """Replace this scope of the store with a fresh list and remember its version."""
        inf = self._inf
        items, self._rv = inf.client.list(
            inf.resource,
            self._scope,
            label_selector=inf.label_selector,
            field_selector=inf.field_selector,
            resource_version=self._list_from or None,
            page_size=inf.page_size,
            metadata_only=inf.metadata_only,
        )
        inf._replace(self._scope, items)
        inf._synced[self._scope] = True
        inf._mark_progress()
        self._list_from = "0"
        self._log.debug("listed", count=len(items), resource_version=self._rv)

    def _watch(self) -> str:
        """Watch from the known version until the stream ends; returns why it failed, or ""."""
        inf = self._inf
        handle = WatchHandle(on_open=inf._mark_progress)
        inf._handles[self._scope] = handle
        if self._stopping():
            return ""
        assert self._rv is not None
        self._backoff.watch_started()
        cause, failure = self._handle_watch_stream(
            inf.client.watch(
                inf.resource,
                self._scope,
                resource_version=self._rv,
                label_selector=inf.label_selector,
                field_selector=inf.field_selector,
                inactivity_timeout=inf.inactivity_timeout,
                metadata_only=inf.metadata_only,
                handle=handle,
            )
        )
        if self._stopping():
            return ""
        if self._backoff.watch_was_healthy():
            self._backoff.reset()
        elif not failure:
            failure = "very short watch: closed in under a second with no event"
        WATCH_RESTARTS.labels(self._label, cause).inc()
        return failure

    def _handle_watch_stream(self, stream: Iterable[WatchEvent]) -> tuple[str, str]:
        """Apply the stream's events to the store until it ends or sends an ERROR.

        Returns the restart cause (``closed``, ``expired``, ``too_large`` or ``error``) and the failure
        ("" when the watch ended normally).
        """
        for ev in stream:
            self._inf._mark_progress()
            counter = self._inf._event_counters.get(ev.type)
            if counter is None:
                counter = self._inf._event_counters.setdefault(ev.type, EVENTS.labels(self._label, ev.type))
            counter.inc()
            if ev.type == "ERROR":
                return self._watch_error(ev.object)
            self._backoff.event()
            if ev.type in ("ADDED", "MODIFIED", "DELETED"):
                self._inf._apply_event(ev.type, ev.object)
            if ev.type in ("BOOKMARK", "ADDED", "MODIFIED", "DELETED"):
                self._rv = (ev.object.get("metadata") or {}).get("resourceVersion") or self._rv
        return "closed", ""

    def _watch_error(self, status: JSON) -> tuple[str, str]:
        """Decide how to go on after an ERROR event: returns (restart cause, failure)."""
        code = status.get("code")
        if code == 410:
            self._relist_consistently()
            self._log.info("watch history expired (410); relisting")
            return "expired", ""
        if too_large_resource_version(status):
            self._relist_consistently()
            return "too_large", f"too large resource version: {status.get('message', '')}"
        # client-go ends the watch and relists after the backoff.
        self._list_from, self._rv = self._rv or "", None
        return "error", f"watch error {code} {status.get('reason', '')}: {status.get('message', '')}"

    def _pause(self, failure: str) -> bool:
        """Log the failure and wait for the backoff; False when the informer stops meanwhile."""
        delay = self._backoff.next_delay()
        self._log.warning(
            "list/watch failed; retrying",
            error=failure,
            retry_in=round(delay, 2),
            failures=self._backoff.failures,
            relist=self._rv is None,
        )
        return self._inf._sleep(delay)


class InformerFactory:
    """Hands out one shared informer per (resource, label selector, metadata-only, transform) however
    many controllers ask, and starts/stops them together."""

    def __init__(
        self,
        client: Client,
        *,
        namespaces: Iterable[str] | None = None,
        resync_period: float = 10 * 3600.0,
        inactivity_timeout: float = 70.0,
    ) -> None:
        self.client = client
        self.namespaces = list(namespaces or [])
        self.resync_period = resync_period
        self.inactivity_timeout = inactivity_timeout
        self._informers: dict[tuple[Resource, str | None, bool, Transform | None], Informer] = {}
        self._lock = threading.Lock()
        self._started = False

    def informer(
        self,
        resource: Resource,
        *,
        label_selector: str | None = None,
        metadata_only: bool = False,
        transform: Transform | None = None,
        resync: bool = False,
        spec_follows_generation: bool = False,
    ) -> Informer:
        """The shared informer for this resource and scope (created on first use).

        The transform is part of the key: callers asking for different transforms get different
        informers, since one cache cannot hold objects shaped two ways.

        Only informers asked with ``resync=True`` (a controller's primary kind) resync at the factory's
        period; the others deliver changes by watch alone. Resync is not part of the key: one cache
        asked both ways resyncs. ``spec_follows_generation`` is a property of the kind (see
        :class:`Informer`): asked once, it holds for the shared cache.
        """
        key = (resource, label_selector, metadata_only, transform)
        with self._lock:
            inf = self._informers.get(key)
            if inf is None:
                inf = Informer(
                    self.client,
                    resource,
                    namespaces=self.namespaces or None,
                    label_selector=label_selector,
                    metadata_only=metadata_only,
                    resync_period=self.resync_period if resync else 0.0,
                    inactivity_timeout=self.inactivity_timeout,
                    transform=transform,
                    spec_follows_generation=spec_follows_generation,
                )
                self._informers[key] = inf
                if self._started:
                    inf.start()
            else:
                if resync:
                    inf.enable_resync(self.resync_period)
                if spec_follows_generation:
                    inf.spec_follows_generation = True
            return inf

    def all(self) -> list[Informer]:
        """Every informer handed out so far."""
        with self._lock:
            return list(self._informers.values())

    def start(self) -> None:
        """Start every informer, and any created from now on."""
        with self._lock:
            self._started = True
            informers = list(self._informers.values())
        for inf in informers:
            inf.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every informer."""
        for inf in self.all():
            inf.stop(timeout)

    def has_synced(self) -> bool:
        """True once every informer has synced."""
        return all(inf.has_synced() for inf in self.all())

    def wait_for_sync(self, timeout: float) -> list[str]:
        """Wait until every informer synced; returns the names of those that did not in time."""
        deadline = time.monotonic() + timeout
        for inf in self.all():
            inf.wait_for_sync(max(0.0, deadline - time.monotonic()))
        return [inf.name for inf in self.all() if not inf.has_synced()]
