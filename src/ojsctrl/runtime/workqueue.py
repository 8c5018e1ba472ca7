"""Work queues with client-go ``util/workqueue`` semantics.

Three layers, each adding to the one below, as in client-go:

* :class:`Queue` -- a FIFO of hashable keys with a *dirty* set and a *processing* set. A key is never handed
  to two workers at once, duplicates waiting in the queue collapse into one, and a key added while it is being
  processed is queued again (once) when the worker calls :meth:`Queue.done`.
* :class:`DelayingQueue` -- adds :meth:`DelayingQueue.add_after`, backed by a heap ordered by ready time and
  one background thread that moves ready keys into the queue.
* :class:`RateLimitingQueue` -- adds :meth:`RateLimitingQueue.add_rate_limited`, whose delay comes from a
  :class:`RateLimiter` (per-item exponential backoff combined with an overall token bucket by default).

Named queues export the controller-runtime ``workqueue_*`` metrics, labelled with ``name`` and ``controller``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Hashable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.ratelimit import TokenBucket

__all__ = [
    "BucketRateLimiter",
    "Clock",
    "DelayingQueue",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "MonotonicClock",
    "Queue",
    "RateLimiter",
    "RateLimitingQueue",
    "default_controller_rate_limiter",
]

T = TypeVar("T", bound=Hashable)
T_contra = TypeVar("T_contra", bound=Hashable, contravariant=True)

# Real-time waits are chopped into slices of at most this long so that no wait on a condition is unbounded,
# even when the caller asked to block until an item or shutdown arrives; a lost wake-up costs at most this.
_MAX_WAIT_SLICE = 1.0

# client-go's delaying queue wakes at least this often even with nothing due, so a clock that drifted or a
# missed notification can never strand an item in the heap for long.
_DEFAULT_HEARTBEAT = 10.0

# The longest a low-priority item waits behind normal ones (see Queue): under a load of normal requests that
# never lets up, bookkeeping is late but still done.
LOW_PRIORITY_MAX_WAIT = 30.0

# Bound on how long shut_down waits for the delaying queue's thread to exit; the thread never blocks on
# anything but its own condition, so in practice it exits at once.
_THREAD_JOIN_TIMEOUT = 1.0


class Clock(Protocol):
    """Source of monotonic time in seconds, injectable so tests can control delays, backoff and metrics."""

    def now(self) -> float:
        """Return the current monotonic time in seconds."""
        ...


class MonotonicClock:
    """The production clock: :func:`time.monotonic`."""

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()


_DEFAULT_CLOCK = MonotonicClock()


# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------

_LABELS = ("name", "controller")
# controller-runtime uses ExponentialBuckets(10e-9, 10, 12): 1e-8 s up to 1e3 s.
_DURATION_BUCKETS = tuple(10.0**exp for exp in range(-8, 4))

_UNFINISHED_NAME = "workqueue_unfinished_work_seconds"
_UNFINISHED_HELP = (
    "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. "
    "Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate "
    "at which this increases."
)
_LONGEST_NAME = "workqueue_longest_running_processor_seconds"
_LONGEST_HELP = "How many seconds has the longest running processor for workqueue been running."


class _InFlightCollector:
    """Computes the two in-flight gauges at scrape time from the live queues' processing start times.

    client-go refreshes these gauges from a 0.5 s ticker per queue. Computing them on scrape instead means the
    values are exact when read, there is no extra thread per queue to own and stop, and a fake clock drives
    them deterministically in tests. Queues are held weakly so a discarded queue drops out by itself; a name
    seen once keeps reporting (0 when idle) so its series does not vanish between scrapes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, weakref.ref[_QueueMetrics[Any]]] = {}
        self._names: set[str] = set()
        self._next_id = itertools.count()

    def track(self, source: _QueueMetrics[Any]) -> None:
        with self._lock:
            self._sources[next(self._next_id)] = weakref.ref(source)
            self._names.add(source.name)

    def describe(self) -> Iterable[Metric]:
        # Lets an auto-describing registry learn the names without running collect() at registration.
        return [
            GaugeMetricFamily(_UNFINISHED_NAME, _UNFINISHED_HELP, labels=_LABELS),
            GaugeMetricFamily(_LONGEST_NAME, _LONGEST_HELP, labels=_LABELS),
        ]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            live: list[_QueueMetrics[Any]] = []
            for key, ref in list(self._sources.items()):
                source = ref()
                if source is None:
                    del self._sources[key]
                else:
                    live.append(source)
            names = sorted(self._names)
        unfinished = dict.fromkeys(names, 0.0)
        longest = dict.fromkeys(names, 0.0)
        # Several queues may share a name: their in-flight work adds up, the longest is the longest of all.
        for source in live:
            total, oldest = source.in_flight()
            unfinished[source.name] += total
            longest[source.name] = max(longest[source.name], oldest)
        unfinished_family = GaugeMetricFamily(_UNFINISHED_NAME, _UNFINISHED_HELP, labels=_LABELS)
        longest_family = GaugeMetricFamily(_LONGEST_NAME, _LONGEST_HELP, labels=_LABELS)
        for name in names:
            unfinished_family.add_metric([name, name], unfinished[name])
            longest_family.add_metric([name, name], longest[name])
        return [unfinished_family, longest_family]


class _MetricSet:
    """The workqueue metric families registered once on one registry and shared by every queue using it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge("workqueue_depth", "Current depth of workqueue", _LABELS, registry=registry)
        self.adds = Counter(
            "workqueue_adds_total", "Total number of adds handled by workqueue", _LABELS, registry=registry
        )
        self.queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            _LABELS,
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            _LABELS,
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            _LABELS,
            registry=registry,
        )
        self.in_flight = _InFlightCollector()
        registry.register(self.in_flight)


_metric_sets: weakref.WeakKeyDictionary[CollectorRegistry, _MetricSet] = weakref.WeakKeyDictionary()
_metric_sets_lock = threading.Lock()


def _metric_set_for(registry: CollectorRegistry) -> _MetricSet:
    # Registering the same family twice on a registry raises, so families are created once per registry and
    # every queue (including a second queue with an already used name) reuses them through its labels.
    with _metric_sets_lock:
        metric_set = _metric_sets.get(registry)
        if metric_set is None:
            metric_set = _MetricSet(registry)
            _metric_sets[registry] = metric_set
        return metric_set


class _MetricsSink(Protocol[T_contra]):
    def add(self, item: T_contra) -> None: ...
    def get(self, item: T_contra) -> None: ...
    def done(self, item: T_contra) -> None: ...
    def retry(self) -> None: ...


class _NoMetrics:
    """Unnamed queues export nothing, as in client-go."""

    def add(self, item: object) -> None:
        pass

    def get(self, item: object) -> None:
        pass

    def done(self, item: object) -> None:
        pass

    def retry(self) -> None:
        pass


class _QueueMetrics(Generic[T]):
    """Per-queue bookkeeping behind the shared families: when each item was added and started processing."""

    def __init__(self, name: str, clock: Clock, metric_set: _MetricSet) -> None:
        self.name = name
        self._clock = clock
        self._depth = metric_set.depth.labels(name, name)
        self._adds = metric_set.adds.labels(name, name)
        self._queue_duration = metric_set.queue_duration.labels(name, name)
        self._work_duration = metric_set.work_duration.labels(name, name)
        self._retries = metric_set.retries.labels(name, name)
        # Own lock (taken after the queue's) because the scrape thread reads the start times too.
        self._lock = threading.Lock()
        self._add_times: dict[T, float] = {}
        self._processing_starts: dict[T, float] = {}
        metric_set.in_flight.track(self)

    def add(self, item: T) -> None:
        self._adds.inc()
        self._depth.inc()
        with self._lock:
            # Queue time counts from the first add since the item was last handed out.
            self._add_times.setdefault(item, self._clock.now())

    def get(self, item: T) -> None:
        self._depth.dec()
        now = self._clock.now()
        with self._lock:
            self._processing_starts[item] = now
            added = self._add_times.pop(item, None)
        if added is not None:
            self._queue_duration.observe(max(now - added, 0.0))

    def done(self, item: T) -> None:
        with self._lock:
            started = self._processing_starts.pop(item, None)
        if started is not None:
            self._work_duration.observe(max(self._clock.now() - started, 0.0))

    def retry(self) -> None:
        self._retries.inc()

    def in_flight(self) -> tuple[float, float]:
        """Return (sum, max) of how long the items now processing have been processing."""
        now = self._clock.now()
        with self._lock:
            starts = list(self._processing_starts.values())
        ages = [max(now - start, 0.0) for start in starts]
        return sum(ages), max(ages, default=0.0)


# ------------------------------------------------------------------------------------------------------------
# Queue
# ------------------------------------------------------------------------------------------------------------


class Queue(Generic[T]):
    """A thread-safe FIFO work queue of hashable items with client-go's dirty/processing semantics.

    * ``add`` of an item already waiting is a no-op (dedup).
    * ``get`` hands an item to exactly one worker and marks it processing until ``done``.
    * ``add`` of an item that is processing marks it dirty; ``done`` then queues it again, exactly once.
    * After ``shut_down`` new adds are ignored and ``get`` reports shutdown at once, even with items
      still queued: a stopping controller must not start work it cannot finish (its leadership may be
      about to go), and the backlog is rebuilt from the informers by whoever runs next.
    * Two priorities, as controller-runtime's priority queue: an item added with ``low=True`` (bookkeeping,
      such as a child's status step or a periodic resync) is handed out only when no normal item waits. A
      normal add of an item waiting at low priority moves it up; a low add never moves an item down.
      Within a priority the order is FIFO.

    ``name`` enables the ``workqueue_*`` metrics (on ``registry``, by default
    ``ojsctrl.runtime.metrics.REGISTRY``); an empty name exports nothing. ``clock`` times metrics
    (and, in :class:`DelayingQueue`, delays); blocking waits such as ``get(timeout)`` use real time.
    """

    def __init__(
        self, name: str = "", *, clock: Clock | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.name = name
        self._clock: Clock = clock if clock is not None else _DEFAULT_CLOCK
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[T] = collections.deque()
        # Low-priority entries; an entry whose item is no longer waiting at low priority (moved up, or
        # handed out) is stale and skipped.
        self._low: collections.deque[tuple[T, float]] = collections.deque()
        self._dirty: set[T] = set()
        # The dirty items whose only asks were low-priority ones.
        self._low_dirty: set[T] = set()
        self._ready_count = 0
        self._processing: set[T] = set()
        self._shutting_down = False
        self._drain = False
        self._metrics: _MetricsSink[T]
        if name:
            registry = registry if registry is not None else REGISTRY
            self._metrics = _QueueMetrics(name, self._clock, _metric_set_for(registry))
        else:
            self._metrics = _NoMetrics()

    def add(self, item: T, *, low: bool = False) -> None:
        """Mark ``item`` as needing processing; ignored while shutting down or if already waiting (a
        normal add of an item waiting at low priority moves it up)."""
        with self._cond:
            if self._shutting_down:
                return
            if item in self._dirty:
                if not low and item in self._low_dirty:
                    self._low_dirty.discard(item)
                    if item not in self._processing:
                        self._queue.append(item)  # its low entry is now stale
                        self._cond.notify()
                return
            self._metrics.add(item)
            self._dirty.add(item)
            if low:
                self._low_dirty.add(item)
            if item in self._processing:
                # done() re-queues it; queueing now would let a second worker take it in parallel.
                return
            self._push(item)
            self._cond.notify()

    def _push(self, item: T) -> None:
        # Caller holds the lock; item is dirty and not processing.
        self._ready_count += 1
        if item in self._low_dirty:
            self._low.append((item, self._clock.now()))
        else:
            self._queue.append(item)

    def _pop(self) -> T | None:
        # Caller holds the lock: the next item to hand out, normal priority first (but a low item that has
        # waited LOW_PRIORITY_MAX_WAIT goes first: bookkeeping is late, never starved); None when none waits.
        low = self._low
        while low and (low[0][0] not in self._low_dirty or low[0][0] in self._processing):
            low.popleft()  # stale
        if low and self._clock.now() - low[0][1] >= LOW_PRIORITY_MAX_WAIT:
            return low.popleft()[0]
        while self._queue:
            item = self._queue.popleft()
            if item in self._dirty and item not in self._processing and item not in self._low_dirty:
                return item
        while low:
            item = low.popleft()[0]
            if item in self._low_dirty and item not in self._processing:
                return item
        return None

    def get(self, timeout: float | None = None) -> tuple[T | None, bool]:
        """Block until an item is available and return ``(item, False)``; the caller must call ``done``.

        Returns ``(None, True)`` once the queue is shut down (whatever is still queued), and ``(None, False)``
        if ``timeout`` seconds (real time) pass first. ``timeout=None`` waits until an item or shutdown
        arrives.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready_count and not self._shutting_down:
                if deadline is None:
                    wait = _MAX_WAIT_SLICE
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None, False
                    wait = min(remaining, _MAX_WAIT_SLICE)
                self._cond.wait(wait)
            if self._shutting_down:
                return None, True
            item = self._pop()
            assert item is not None  # _ready_count counts the items _pop can hand out
            self._ready_count -= 1
            self._metrics.get(item)
            self._processing.add(item)
            self._dirty.discard(item)
            self._low_dirty.discard(item)
            return item, False

    def done(self, item: T) -> None:
        """Mark ``item`` as processed; if it was added meanwhile it is queued again now."""
        with self._cond:
            if item not in self._processing:
                # Unlike client-go, a stray done() must not push a dirty item that is already queued a
                # second time.
                return
            self._metrics.done(item)
            self._processing.discard(item)
            if item in self._dirty:
                self._push(item)
                self._cond.notify()
            elif not self._processing and self._drain:
                # A drain waits for the last in-flight item (only a drain: waking every idle worker each
                # time the queue empties would cost a thread switch apiece for nothing).
                self._cond.notify_all()

    def len(self) -> int:
        """Return the number of items waiting to be handed out (not counting those being processed)."""
        with self._cond:
            return self._ready_count

    def __len__(self) -> int:
        return self.len()

    def shut_down(self) -> None:
        """Stop accepting items and wake every blocked ``get``; does not wait for in-flight work."""
        with self._cond:
            self._drain = False
            self._shutting_down = True
            self._cond.notify_all()

    def shut_down_with_drain(self, timeout: float) -> bool:
        """Stop accepting items, then wait up to ``timeout`` seconds for every processing item to be done.

        Items still queued are not handed out any more (``get`` reports shutdown); only the items being
        processed are waited for. Returns True if processing drained, False on timeout or if ``shut_down``
        cut the drain short.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._drain = True
            self._shutting_down = True
            self._cond.notify_all()
            while self._processing and self._drain:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, _MAX_WAIT_SLICE))
            return not self._processing

    def shutting_down(self) -> bool:
        """Return True once ``shut_down`` or ``shut_down_with_drain`` has been called."""
        with self._cond:
            return self._shutting_down


# ------------------------------------------------------------------------------------------------------------
# DelayingQueue
# ------------------------------------------------------------------------------------------------------------


class DelayingQueue(Queue[T]):
    """A :class:`Queue` that can also add an item after a delay.

    Delayed items wait in a heap ordered by ready time; one daemon thread, started here and stopped by
    ``shut_down``/``shut_down_with_drain``, moves them into the queue when due. An item waiting once keeps a
    single entry: adding it again with an earlier ready time moves it earlier, a later one is ignored. Items
    still waiting at shutdown are dropped, as in client-go.

    ``heartbeat`` caps how long the thread sleeps with nothing due; tests with a fake clock set it small so
    the thread re-reads the clock promptly.
    """

    def __init__(
        self,
        name: str = "",
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        heartbeat: float = _DEFAULT_HEARTBEAT,
    ) -> None:
        super().__init__(name, clock=clock, registry=registry)
        if heartbeat <= 0:
            raise ValueError(f"heartbeat must be positive, got {heartbeat}")
        self._heartbeat = heartbeat
        self._heap_cond = threading.Condition(threading.Lock())
        # Entries are (ready_at, seq, item): seq keeps equal times FIFO and spares comparing items. An entry
        # superseded by an earlier time stays in the heap until popped or compacted; _waiting says which
        # entry is current for each item.
        self._heap: list[tuple[float, int, T]] = []
        self._waiting: dict[T, tuple[float, int]] = {}
        # When add_after was last asked for each waiting item (an ask for a later time than the one
        # waiting changes no entry, but it still counts as an ask): see supersede().
        self._asked: dict[T, float] = {}
        # Waiting items whose every ask was a low-priority one (see Queue): added at low priority when due.
        self._low_waiting: set[T] = set()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._waiting_loop, name=f"workqueue-delay-{name or hex(id(self))}", daemon=True
        )
        self._thread.start()

    def add_after(self, item: T, delay_seconds: float, *, low: bool = False) -> None:
        """Add ``item`` once ``delay_seconds`` have passed on the queue's clock; ``<= 0`` adds now. The
        add is at low priority only if every ask for the waiting item was (see :class:`Queue`)."""
        if self.shutting_down():
            return
        if delay_seconds <= 0:
            self.add(item, low=low)
            return
        now = self._clock.now()
        ready_at = now + delay_seconds
        with self._heap_cond:
            if self._stopped:
                return
            current = self._waiting.get(item)
            self._asked[item] = now
            if not low:
                self._low_waiting.discard(item)
            elif current is None:
                self._low_waiting.add(item)
            if current is not None and current[0] <= ready_at:
                return
            entry = (ready_at, next(self._seq), item)
            heapq.heappush(self._heap, entry)
            self._waiting[item] = (entry[0], entry[1])
            if len(self._heap) > 2 * len(self._waiting) + 16:
                self._compact()
            if self._heap[0] is entry:
                # The thread may be sleeping towards a later head; make it recompute its wait.
                self._heap_cond.notify()

    def now(self) -> float:
        """The queue's clock (for :meth:`supersede`)."""
        return self._clock.now()

    def supersede(self, item: T, since: float) -> bool:
        """Drop the delayed add of ``item`` if every ask for it came before ``since`` (on :meth:`now`'s
        clock): a controller calls this when a reconcile of the item that started at ``since`` has
        succeeded. Reconciles are level-triggered: that reconcile read the caches with every change the
        earlier asks stood for, and asked again for whatever is still due, so the earlier asks would only
        bring a reconcile with nothing to do. An ask made during the reconcile is kept. Returns whether an
        add was dropped."""
        with self._heap_cond:
            asked = self._asked.get(item)
            if asked is None or asked >= since or item not in self._waiting:
                return False
            del self._waiting[item]
            del self._asked[item]
            self._low_waiting.discard(item)
            if len(self._heap) > 2 * len(self._waiting) + 16:
                self._compact()
            return True

    def _compact(self) -> None:
        # Drops superseded entries so repeated earlier-time re-adds cannot grow the heap without bound.
        self._heap = [e for e in self._heap if self._waiting.get(e[2]) == (e[0], e[1])]
        heapq.heapify(self._heap)

    def _waiting_loop(self) -> None:
        while True:
            ready: list[tuple[T, bool]] = []
            with self._heap_cond:
                if self._stopped:
                    return
                now = self._clock.now()
                while self._heap and self._heap[0][0] <= now:
                    ready_at, seq, item = heapq.heappop(self._heap)
                    if self._waiting.get(item) == (ready_at, seq):
                        del self._waiting[item]
                        self._asked.pop(item, None)
                        low = item in self._low_waiting
                        self._low_waiting.discard(item)
                        ready.append((item, low))
                if not ready:
                    wait = self._heartbeat
                    if self._heap:
                        wait = min(wait, self._heap[0][0] - now)
                    self._heap_cond.wait(wait)
                    continue
            # Added outside the heap lock so the two locks are never held together.
            for item, low in ready:
                self.add(item, low=low)

    def _stop_waiting(self) -> None:
        with self._heap_cond:
            self._stopped = True
            self._heap.clear()
            self._waiting.clear()
            self._asked.clear()
            self._low_waiting.clear()
            self._heap_cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(_THREAD_JOIN_TIMEOUT)

    def shut_down(self) -> None:
        """Shut the queue down and stop the delay thread, dropping items still waiting for their time."""
        super().shut_down()
        self._stop_waiting()

    def shut_down_with_drain(self, timeout: float) -> bool:
        """Like :meth:`Queue.shut_down_with_drain`; items still waiting for their time are dropped."""
        self._stop_waiting()
        return super().shut_down_with_drain(timeout)


# ------------------------------------------------------------------------------------------------------------
# Rate limiters
# ------------------------------------------------------------------------------------------------------------


class RateLimiter(Protocol[T_contra]):
    """Decides how long an item waits before it is retried."""

    def when(self, item: T_contra) -> float:
        """Record a retry of ``item`` and return the delay in seconds before it may run."""
        ...

    def forget(self, item: T_contra) -> None:
        """Stop tracking ``item`` (it succeeded or was given up on), resetting its backoff."""
        ...

    def num_requeues(self, item: T_contra) -> int:
        """Return how many times ``item`` has been retried since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[T]):
    """Per-item exponential backoff: retry n (from 0) waits ``base * 2**n`` seconds, capped at ``max``.

    ``max`` shadows the builtin to keep client-go's parameter name.
    """

    def __init__(self, base: float = 0.005, max: float = 1000.0) -> None:
        if base < 0 or max < 0:
            raise ValueError(f"base and max must not be negative, got base={base} max={max}")
        self._base = base
        self._max = max
        self._lock = threading.Lock()
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        """Count a failure of ``item`` and return its backoff."""
        with self._lock:
            exp = self._failures.get(item, 0)
            self._failures[item] = exp + 1
        try:
            backoff = self._base * 2.0**exp
        except OverflowError:
            return self._max
        return min(backoff, self._max)

    def forget(self, item: T) -> None:
        """Reset the backoff of ``item``."""
        with self._lock:
            self._failures.pop(item, None)

    def num_requeues(self, item: T) -> int:
        """Return the failures counted for ``item`` since it was last forgotten."""
        with self._lock:
            return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket (``qps`` refill, ``burst`` capacity) shared by all items.

    ``when`` reserves a token and returns how long until it is available, like golang.org/x/time/rate's
    ``Reserve().Delay()``: the bucket may go negative, so a burst of callers get evenly spaced delays. The
    bucket is :class:`ojsctrl.runtime.ratelimit.TokenBucket`, the one the API client uses too.
    """

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock | None = None) -> None:
        if not qps > 0:
            raise ValueError(f"qps must be positive, got {qps}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        clock = clock if clock is not None else _DEFAULT_CLOCK
        self._bucket = TokenBucket(qps, burst, now=clock.now)

    def when(self, item: object) -> float:
        """Reserve one token and return the delay in seconds until it is due."""
        return self._bucket.reserve()

    def forget(self, item: object) -> None:
        """No-op: the bucket does not track items."""

    def num_requeues(self, item: object) -> int:
        """Always 0: the bucket does not track items."""
        return 0


class MaxOfRateLimiter(Generic[T]):
    """Combines limiters: the delay is the longest any of them asks for."""

    def __init__(self, *limiters: RateLimiter[T]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: T) -> float:
        """Ask every limiter (each records the retry) and return the longest delay."""
        return max([limiter.when(item) for limiter in self._limiters])

    def forget(self, item: T) -> None:
        """Forget ``item`` in every limiter."""
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        """Return the largest retry count any limiter holds for ``item``."""
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter[Any]:
    """Return client-go's default: per-item backoff 5 ms..1000 s, overall 10 qps with a burst of 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(qps=10.0, burst=100, clock=clock),
    )


# ------------------------------------------------------------------------------------------------------------
# RateLimitingQueue
# ------------------------------------------------------------------------------------------------------------


class RateLimitingQueue(DelayingQueue[T]):
    """A :class:`DelayingQueue` whose retries are delayed by a :class:`RateLimiter`.

    Workers call ``add_rate_limited`` after a failure and ``forget`` after a success (or when giving up) so
    the item's backoff starts over.
    """

    def __init__(
        self,
        name: str,
        rate_limiter: RateLimiter[T] | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        *,
        heartbeat: float = _DEFAULT_HEARTBEAT,
    ) -> None:
        super().__init__(name, clock=clock, registry=registry, heartbeat=heartbeat)
        self._rate_limiter: RateLimiter[T] = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter(self._clock)
        )

    def add_rate_limited(self, item: T) -> None:
        """Add ``item`` after the delay the rate limiter gives it, counting a retry."""
        # Checked first so a shut-down queue neither counts a retry nor advances the item's backoff.
        if self.shutting_down():
            return
        self._metrics.retry()
        self.add_after(item, self._rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Reset the rate limiter's memory of ``item``; it does not remove the item from the queue."""
        self._rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        """Return how many times ``item`` has been rate-limited since it was last forgotten."""
        return self._rate_limiter.num_requeues(item)
