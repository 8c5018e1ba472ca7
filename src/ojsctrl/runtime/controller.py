"""Controllers: event sources -> rate-limited workqueue -> N workers calling reconcile(request).

What a reconcile's outcome means (controller-runtime's contract):
- an exception: logged, counted, and the request is requeued with per-item backoff;
- Result(requeue_after=t): forget the failure history and requeue after t;
- Result(low=True): the same, the requeue at low priority (bookkeeping that waits behind the other
  requests, design.md §resync); with no requeue_after it is asked at once;
- None or Result(): success; forget the failure history.
An exception never kills a worker thread.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge, Histogram

from ojsctrl.runtime.client import JSON
from ojsctrl.runtime.informer import DeletedFinalStateUnknown, FuncHandler, Informer
from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.workqueue import RateLimitingQueue, default_controller_rate_limiter

log = structlog.get_logger("ojsctrl.controller")

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ["controller", "result"],
    registry=REGISTRY,
)
WAKEUPS = Counter(
    "ojsctrl_reconcile_wakeups_total",
    "Requests added to a controller's queue, by what asked (the kind whose event passed the predicates, "
    "resync for the periodic re-delivery, or poller); the queue merges requests for an object already "
    "waiting, so this exceeds reconciles",
    ["controller", "source"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_PANICS = Counter(
    "controller_runtime_reconcile_panics_total",
    "Total number of reconciliation panics per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=(
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.15,
        0.2,
        0.25,
        0.3,
        0.35,
        0.4,
        0.45,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.25,
        1.5,
        1.75,
        2.0,
        2.5,
        3.0,
        3.5,
        4.0,
        4.5,
        5,
        6,
        7,
        8,
        9,
        10,
        15,
        20,
        25,
        30,
        40,
        50,
        60,
    ),
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
    registry=REGISTRY,
)
MAX_CONCURRENT = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
    registry=REGISTRY,
)


@dataclass(frozen=True, order=True)
class Request:
    """What a reconcile is asked to look at: one object's namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def for_object(cls, obj: JSON) -> Request:
        """The request for an object (its namespace and name)."""
        meta = obj.get("metadata") or {}
        return cls(meta.get("namespace") or "", meta.get("name") or "")


@dataclass(frozen=True)
class Result:
    """A reconcile's answer: ``requeue_after`` seconds until the object is looked at again, if set;
    ``low``: that look is bookkeeping (low priority), asked at once when ``requeue_after`` is not set."""

    requeue_after: float | None = None
    low: bool = False


Reconciler = Callable[[Request], "Result | None"]
"""reconcile(request) -> Result or None; may raise."""


Predicate = Callable[[str, JSON | None, JSON | None], bool]
"""(event type "add"|"update"|"delete", old, new) -> should this event enqueue?"""
MapFunc = Callable[[JSON], Iterable[Request]]


def generation_changed(event: str, old: JSON | None, new: JSON | None) -> bool:
    """Predicate: updates only when metadata.generation moved (spec changes); adds/deletes pass.
    A resync (old is new) also passes, so a periodic resync still reaches the reconciler."""
    if event != "update" or old is None or new is None or old is new:
        return True
    return (old.get("metadata") or {}).get("generation") != (new.get("metadata") or {}).get("generation")


def resource_version_changed(event: str, old: JSON | None, new: JSON | None) -> bool:
    """Predicate: drop updates that carry no change (same resourceVersion), except resyncs."""
    if event != "update" or old is None or new is None or old is new:
        return True
    return (old.get("metadata") or {}).get("resourceVersion") != (new.get("metadata") or {}).get(
        "resourceVersion"
    )


_WRITE_NOISE = frozenset({"resourceVersion", "managedFields"})


def beyond_status(obj: JSON) -> tuple[JSON, JSON]:
    """(metadata without resourceVersion/managedFields, every other part but metadata and status): what an
    update changed when it was more than a status write."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _WRITE_NOISE}
    return meta, {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def not_status_only(event: str, old: JSON | None, new: JSON | None) -> bool:
    """Predicate for a primary kind: drop an update that changed only status (and with it
    resourceVersion and managedFields). The reconciler's own status writes then do not wake it again;
    a change of spec, labels, annotations, finalizers, owners or deletionTimestamp passes, as do adds,
    deletes and resyncs (so a status someone else altered is rewritten at the next sync period)."""
    if event != "update" or old is None or new is None or old is new:
        return True
    return beyond_status(old) != beyond_status(new)


_ID_PREFIX = uuid.uuid4().hex[:6] + "-"
_ids = itertools.count(1)


def _status_only(event: str, old: JSON | None, new: JSON | None) -> bool:
    if event != "update" or old is None or new is None or old is new:
        return False
    gen_old = (old.get("metadata") or {}).get("generation")
    gen_new = (new.get("metadata") or {}).get("generation")
    return gen_old is not None and gen_old == gen_new and old.get("status") != new.get("status")


def _unwrap(obj: JSON | DeletedFinalStateUnknown) -> JSON:
    return obj.obj if isinstance(obj, DeletedFinalStateUnknown) else obj


class Controller:
    """One controller: its watches enqueue Requests, its workers reconcile them."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        max_concurrent_reconciles: int = 1,
        queue: RateLimitingQueue[Request] | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self.workers = max(1, max_concurrent_reconciles)
        self.queue: RateLimitingQueue[Request] = (
            queue
            if queue is not None
            else RateLimitingQueue(name, rate_limiter=default_controller_rate_limiter())
        )
        self.drain_timeout = drain_timeout
        self.informers: list[Informer] = []
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._active_lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        # Set by the manager under leader election: a worker takes an item only while it holds.
        self.leader_gate: Callable[[], bool] | None = None
        self._log = log.bind(controller=name)
        MAX_CONCURRENT.labels(name).set(self.workers)
        # The series every reconcile sets, looked up once (labels() costs a lookup under a lock).
        self._active_gauge = ACTIVE_WORKERS.labels(name)
        self._active_gauge.set(0)
        self._reconcile_time = RECONCILE_TIME.labels(name)
        # Every reconcile series at 0 from the start, as controller-runtime does: an error-rate alert or panel
        # then reads 0 errors, not a missing series.
        self._outcomes = {
            outcome: RECONCILE_TOTAL.labels(name, outcome)
            for outcome in ("success", "error", "requeue", "requeue_after")
        }
        self._errors = RECONCILE_ERRORS.labels(name)
        RECONCILE_PANICS.labels(name)

    # ------------------------------------------------------------------ watches
    def _handler(
        self,
        mapper: Callable[[JSON], Iterable[Request]],
        predicates: Iterable[Predicate],
        source: str,
        status_delay: float = 0.0,
        settled: Callable[[JSON], bool] | None = None,
        *,
        mapper_first: bool = False,
        defer: Callable[[Request], float] | None = None,
    ) -> FuncHandler:
        """The event handler of one watch. ``mapper_first``: the mapper is cheaper than the predicates
        (an owner reference read), so it runs first and an event that concerns no object of this
        controller (a Deployment of the other kind's, on a shared informer) skips the predicates."""
        preds = list(predicates)
        wakeups = WAKEUPS.labels(self.name, source)
        # A resync re-delivers the cached object as an update of itself: counted apart, so the wake-ups
        # say how many reconciles the sync period caused and how many a change did.
        resyncs = WAKEUPS.labels(self.name, "resync")

        def requests(old: JSON | None, new: JSON | None, obj: JSON) -> list[Request]:
            reqs = list(mapper(obj))
            if old is not None and new is not None and old is not new:
                # An update can move an object between owners (its owner reference changed): the
                # previous owner must hear of it too, as controller-runtime's handlers enqueue both.
                reqs += [r for r in mapper(old) if r not in reqs]
            return reqs

        def enqueue(event: str, old: JSON | None, new: JSON | None, obj: JSON) -> None:
            if mapper_first:
                reqs = requests(old, new, obj)
                if not reqs or not all(p(event, old, new) for p in preds):
                    return
            else:
                if not all(p(event, old, new) for p in preds):
                    return
                reqs = requests(old, new, obj)
                if not reqs:
                    return
            status_step = status_delay > 0 and _status_only(event, old, new)
            delay = status_delay if status_step else 0.0
            if delay and settled is not None and new is not None and settled(new):
                delay = 0.0  # the last step of a rollout: no later step to wait for
            resync = old is not None and old is new
            (resyncs if resync else wakeups).inc(len(reqs))
            # A child's status step and a periodic resync are bookkeeping: they wait behind the requests
            # that may change what the owner decides (design.md §resync).
            low = status_step or resync
            for req in reqs:
                wait = max(delay, defer(req)) if delay and defer is not None else delay
                if wait:
                    self.queue.add_after(req, wait, low=low)
                else:
                    self.queue.add(req, low=low)

        return FuncHandler(
            add=lambda obj: enqueue("add", None, obj, obj),
            update=lambda old, new: enqueue("update", old, new, new),
            delete=lambda obj: enqueue("delete", _unwrap(obj), None, _unwrap(obj)),
        )

    def watch_primary(self, informer: Informer, *predicates: Predicate) -> None:
        """Reconcile the object itself on its events."""
        self.informers.append(informer)
        informer.add_event_handler(
            self._handler(lambda o: (Request.for_object(o),), predicates, informer.resource.kind)
        )

    def watch_owned(
        self,
        informer: Informer,
        owner_api_version: str,
        owner_kind: str,
        *predicates: Predicate,
        status_delay: float = 0.0,
        settled: Callable[[JSON], bool] | None = None,
        defer: Callable[[Request], float] | None = None,
    ) -> None:
        """Reconcile the controller owner of an object when the object changes.

        With `status_delay`, an update that only moved the child's status (same generation) reaches
        the owner after that delay: a Deployment rolling out reports several status steps within a
        second, and one owner reconcile (and one status write) covers them all. A status update for
        which `settled(child)` is true (say, a finished rollout) is not delayed: nothing follows it.
        `defer(owner)` > 0 stretches such a delayed wake-up to that many seconds: the owner is coming back
        then anyway (its first status is held until then), and the delaying queue merges the two.
        """
        group = owner_api_version.rpartition("/")[0]

        def owner(obj: JSON) -> Iterable[Request]:
            meta = obj.get("metadata") or {}
            for ref in meta.get("ownerReferences") or ():
                ref_group = (
                    ref.get("apiVersion", "").split("/")[0] if "/" in ref.get("apiVersion", "") else ""
                )
                if ref.get("controller") and ref.get("kind") == owner_kind and ref_group == group:
                    return (Request(meta.get("namespace") or "", ref.get("name", "")),)
            return ()

        self.informers.append(informer)
        informer.add_event_handler(
            self._handler(
                owner,
                predicates,
                informer.resource.kind,
                status_delay,
                settled,
                mapper_first=True,
                defer=defer,
            )
        )

    def watch_mapped(self, informer: Informer, mapper: MapFunc, *predicates: Predicate) -> None:
        """Reconcile whatever mapper(obj) names when an object of another kind changes."""
        self.informers.append(informer)
        informer.add_event_handler(self._handler(mapper, predicates, informer.resource.kind))

    def enqueue(self, req: Request, source: str) -> None:
        """Add a request from outside the watches (``source`` names the asker in the wake-up count)."""
        WAKEUPS.labels(self.name, source).inc()
        self.queue.add(req)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker threads. The caller waits for the informers to sync first."""
        if self._started:
            return
        self._started = True
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"{self.name}-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._log.info("controller started", workers=self.workers)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop handing out work and wait up to `timeout` for running reconciles; True when none is
        alive any more. Items still queued are left behind (the next leader lists everything anyway)."""
        timeout = self.drain_timeout if timeout is None else timeout
        self.begin_stop()
        return self.wait_stopped(time.monotonic() + timeout)

    def begin_stop(self) -> None:
        """Stop intake at once: `get` reports shutdown to every worker even with a backlog."""
        self._stopping.set()
        self.queue.shut_down()

    def wait_stopped(self, deadline: float) -> bool:
        """Wait until `deadline` (time.monotonic) for the workers to finish their current reconcile
        and exit; True when no worker is alive."""
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            self._log.warning("reconciles still running at shutdown", threads=alive)
        return not alive

    def active(self) -> int:
        """Reconciles running right now."""
        with self._active_lock:
            return self._active

    # ------------------------------------------------------------------ workers
    def _leading(self) -> bool:
        gate = self.leader_gate
        return gate is None or gate()

    def _worker(self) -> None:
        while True:
            if not self._leading():
                # Leadership ended (the process is about to exit): take nothing more.
                if self._stopping.wait(0.05) or self.queue.shutting_down():
                    return
                continue
            item, shutdown = self.queue.get(timeout=0.5)
            if shutdown:
                return
            if item is None:
                continue
            if not self._leading():
                # Lost while waiting for the item: hand it back untouched.
                self.queue.done(item)
                self.queue.add(item)
                continue
            try:
                self._process(item)
            finally:
                self.queue.done(item)

    def _process(self, req: Request) -> None:
        # A process-unique id from a counter: uuid4 per reconcile cost measurable time under load.
        reconcile_id = f"{_ID_PREFIX}{next(_ids):x}"
        with self._active_lock:
            self._active += 1
            self._active_gauge.set(self._active)
        started = time.monotonic()
        since = self.queue.now()
        bound = self._log.bind(key=str(req), reconcile_id=reconcile_id)
        structlog.contextvars.bind_contextvars(controller=self.name, key=str(req), reconcile_id=reconcile_id)
        outcome = "success"
        try:
            try:
                result = self.reconciler(req)
            except Exception as e:
                outcome = "error"
                self._errors.inc()
                self.queue.add_rate_limited(req)
                bound.error(
                    "reconcile failed",
                    error=str(e),
                    error_type=type(e).__name__,
                    requeues=self.queue.num_requeues(req),
                    exc_info=True,
                )
                return
            # A success covers every delayed add asked before it started (a requeue of an earlier
            # reconcile, a coalesced status step, a retry): drop those, then ask for this one's own.
            self.queue.supersede(req, since)
            if result is not None and (result.requeue_after or result.low):
                # controller-runtime's labels: "requeue" for a requeue with no delay.
                outcome = "requeue_after" if result.requeue_after else "requeue"
                self.queue.forget(req)
                self.queue.add_after(req, result.requeue_after or 0.0, low=result.low)
            else:
                self.queue.forget(req)
        finally:
            elapsed = time.monotonic() - started
            self._reconcile_time.observe(elapsed)
            self._outcomes[outcome].inc()
            with self._active_lock:
                self._active -= 1
                self._active_gauge.set(self._active)
            bound.debug("reconciled", result=outcome, duration=round(elapsed, 4))
            with contextlib.suppress(Exception):
                structlog.contextvars.clear_contextvars()
