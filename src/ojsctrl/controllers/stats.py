"""Background polling of OJS servers' queue counts, off the reconcile path.

Each registered cluster is polled every `interval` (the smallest any of its users asked for) by a
bounded pool of threads; a slow or dead server occupies one pool thread for at most the client's
timeout and never blocks a reconcile. When a poll's outcome changes (new counts, or availability
flips) the owner is told, so the cluster and its workers are reconciled with fresh numbers.

Two rules keep the polling cheap at scale (design.md §polling): the next poll of a cluster falls on a grid
of a tenth of its interval (at most a second), so that the polls of many clusters due within a moment of
each other start together, one wake-up of the scheduler for all of them; and a cluster's first poll waits
until it has a server that can answer (``serving``), so that a new cluster's rollout is not dialled and
counted as an outage every interval until its first pod is ready.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("ojsctrl.stats")

FIRST_POLL_RECHECK = 2.0
"""Seconds between two looks at whether a cluster not polled yet has a server that can answer."""

GRID_MAX = 1.0
"""The largest step of the grid that polls fall on (a tenth of the interval below 10 s)."""


def aligned(at: float, interval: float) -> float:
    """``at`` moved to the nearest point of the grid of ``interval`` (steps of a tenth of it, at most
    ``GRID_MAX``): on average the interval stays what it was, and the polls of clusters due within a step of
    each other fall due at the same moment."""
    step = min(GRID_MAX, interval / 10)
    if step <= 0 or not math.isfinite(at):
        return at
    return round(at / step) * step


@dataclass
class Target:
    """Where and how often to poll one cluster: the smallest interval any requester wants."""

    url: str
    api_key: str | None
    wants: dict[str, float] = field(default_factory=dict)

    @property
    def interval(self) -> float:
        """The shortest interval any requester wants (30 s when none is left)."""
        return min(self.wants.values()) if self.wants else 30.0


@dataclass
class PollResult:
    """The last outcome of polling one cluster: counts per queue, or an error."""

    at: float
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (available, active)
    completed: dict[str, int] = field(default_factory=dict)
    """name -> the server's completed-jobs counter (absent for queues whose server does not count them)."""
    error: str | None = None
    reason: str | None = None
    """The failure's kind as the OJS client names it (``Unauthorized``, ``Timeout``, ...), when known."""
    failures: int = 0
    """Failed polls of this cluster so far (this one included): a reconcile that finds it grown since it
    last looked knows an outage happened even when the poll it reads succeeded (design.md §stabilisation)."""
    consecutive_failures: int = 0
    """Failed polls in a row up to this one (0 after a successful poll): what a fallback counts."""
    seen_since: dict[str, float] = field(default_factory=dict)
    """name -> when the queue's current (available, active) were first seen: the ``at`` of the first poll
    of the run of successful polls that showed these counts. What a decision's latency is measured from
    (the counts that called for it), not the later poll it happened to read."""

    def counts_since(self, queues: Iterable[str]) -> float:
        """When the counts of ``queues`` as this poll shows them were first seen (the latest of them;
        ``at`` for a queue the server did not list)."""
        return max((self.seen_since.get(q, self.at) for q in queues), default=self.at)

    @property
    def ok(self) -> bool:
        """Whether the poll succeeded."""
        return self.error is None


Outcome = Callable[[str, "PollResult | None", "PollResult"], None]
"""A subscriber to changed poll outcomes: (cluster key, previous outcome or None, current outcome)."""

Fetch = Callable[[str, str | None], Mapping[str, tuple[int, int] | tuple[int, int, int]]]
"""Reads one server's counts: queue name -> (available, active) or (available, active, completed)."""


def split_counts(
    counts: Mapping[str, tuple[int, int] | tuple[int, int, int]],
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """(available, active) per queue, and the completed counters of the queues that report one."""
    queues: dict[str, tuple[int, int]] = {}
    completed: dict[str, int] = {}
    for name, c in counts.items():
        available, active, *rest = c
        queues[name] = (available, active)
        if rest:
            completed[name] = rest[0]
    return queues, completed


class StatsPoller:
    """Polls registered clusters in the background; `results` is read by reconcilers."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        serving: Callable[[str], bool] | None = None,
    ) -> None:
        self._fetch = fetch
        self._serving = serving
        self._subscribers: list[Callable[[str], None]] = []
        self._outcome_subscribers: list[Outcome] = []
        self._clock = clock
        self._targets: dict[str, Target] = {}
        self._results: dict[str, PollResult] = {}
        self._heap: list[tuple[float, str]] = []
        # The one live schedule entry per cluster: heap entries whose time differs are stale and skipped,
        # so a re-registration never leaves two entries that would each poll every interval.
        self._due: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._failures: dict[str, int] = {}
        self._streaks: dict[str, int] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ojs-poll")
        self._thread = threading.Thread(target=self._loop, name="ojs-stats-scheduler", daemon=True)

    def now(self) -> float:
        """The poller's clock now (the clock of every ``PollResult.at``)."""
        return self._clock()

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling and drop polls not started yet."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_for_servers(self, serving: Callable[[str], bool]) -> None:
        """Poll a cluster for the first time only once ``serving(cluster key)`` says it has a server that
        can answer; until then it has no result (no failure is counted) and is looked at again every
        ``FIRST_POLL_RECHECK`` seconds. Once polled, a cluster is polled whatever the answer: an outage of a
        server that has served counts (design.md §stabilisation)."""
        self._serving = serving

    def poll_soon(self, key: str) -> None:
        """Poll now a registered cluster that has no result yet (its reconcile just saw a server ready):
        its first poll need not wait for the next look at its readiness."""
        with self._lock:
            if key in self._targets and key not in self._results and key not in self._inflight:
                self._schedule(key, self._clock())
                self._lock.notify_all()

    def subscribe(self, fn: Callable[[str], None]) -> None:
        """Call fn(cluster_key) whenever a cluster's poll outcome changes."""
        self._subscribers.append(fn)

    def subscribe_outcomes(self, fn: Outcome) -> None:
        """Call fn(cluster_key, previous, current) whenever a cluster's poll outcome changes, with the
        outcome before (None for the first): a subscriber that reads only part of it can tell whether its
        part changed."""
        self._outcome_subscribers.append(fn)

    def register(self, key: str, url: str, api_key: str | None, interval: float, requester: str = "") -> None:
        """Poll this cluster at least every `interval` for `requester` (idempotent; a changed url or
        key, or a shorter interval, takes effect at once)."""
        with self._lock:
            old = self._targets.get(key)
            old_interval = old.interval if old else None
            target = old if old is not None else Target(url, api_key)
            moved = old is not None and (old.url != url or old.api_key != api_key)
            target.url, target.api_key = url, api_key
            target.wants[requester] = interval
            self._targets[key] = target
            if old is None or moved or (old_interval is not None and target.interval < old_interval):
                self._schedule(key, self._clock())
                self._lock.notify_all()

    def release(self, key: str, requester: str) -> None:
        """`requester` no longer needs this cluster polled."""
        with self._lock:
            target = self._targets.get(key)
            if target is not None:
                target.wants.pop(requester, None)

    def unregister(self, key: str) -> None:
        """Stop polling a cluster and drop its results (it was deleted, or its Service is not its own)."""
        with self._lock:
            self._targets.pop(key, None)
            self._results.pop(key, None)
            self._due.pop(key, None)
            self._failures.pop(key, None)
            self._streaks.pop(key, None)

    def _schedule(self, key: str, at: float) -> None:
        """(Re)schedule the next poll of `key` (caller holds the lock); earlier entries become stale."""
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def result(self, key: str) -> PollResult | None:
        """The last poll result of a cluster, or None before the first."""
        with self._lock:
            return self._results.get(key)

    def failure_counts(self) -> list[tuple[str, int]]:
        """(cluster key, failed polls so far) of every cluster polled (ojs_queue_stats_errors_total)."""
        with self._lock:
            return list(self._failures.items())

    def registered(self, key: str) -> bool:
        """Whether a cluster is polled."""
        with self._lock:
            return key in self._targets

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = self._clock()
                due: list[str] = []
                while self._heap and self._heap[0][0] <= now:
                    at, key = heapq.heappop(self._heap)
                    if self._due.get(key) != at:
                        continue  # superseded by a later (re)schedule
                    if key in self._targets and key not in self._inflight:
                        due.append(key)
                        self._inflight.add(key)
                wait = (self._heap[0][0] - now) if self._heap else 1.0
                if not due:
                    self._lock.wait(min(max(wait, 0.01), 1.0))
                    continue
                first = [key for key in due if key not in self._results] if self._serving else []
            if first:
                due = self._hold_first_polls(due, first)
            for key in due:
                try:
                    self._pool.submit(self._poll, key)
                except RuntimeError:
                    return

    def _hold_first_polls(self, due: list[str], first: list[str]) -> list[str]:
        """``due`` without the clusters polled for the first time that have no server to answer yet (asked
        outside the lock: it reads the informers' caches); those are looked at again shortly."""
        held = {key for key in first if not self._has_server(key)}
        if not held:
            return due
        with self._lock:
            now = self._clock()
            for key in held:
                self._inflight.discard(key)
                target = self._targets.get(key)
                if target is not None:
                    self._schedule(
                        key, aligned(now + min(target.interval, FIRST_POLL_RECHECK), target.interval)
                    )
        return [key for key in due if key not in held]

    def _has_server(self, key: str) -> bool:
        serving = self._serving
        if serving is None:
            return True
        try:
            return serving(key)
        except Exception:
            log.exception("server readiness check failed", cluster=key)
            return True  # when in doubt, dial: a poll that fails only costs a failure

    def _poll(self, key: str) -> None:
        with self._lock:
            target = self._targets.get(key)
            if target is None:
                self._inflight.discard(key)
                return
            url, api_key = target.url, target.api_key
        try:
            queues, completed = split_counts(self._fetch(url, api_key))
            result = PollResult(self._clock(), queues, completed)
        except Exception as e:
            result = PollResult(
                self._clock(), error=str(e)[:300] or type(e).__name__, reason=getattr(e, "reason", None)
            )
        with self._lock:
            self._inflight.discard(key)
            current = self._targets.get(key)
            if current is None:
                return
            if (current.url, current.api_key) != (url, api_key):
                # Moved while this poll ran (its own re-poll was skipped as in flight): the answer is
                # for the old address; ask the new one now.
                self._schedule(key, self._clock())
                self._lock.notify_all()
                return
            failures = self._failures.get(key, 0) + (0 if result.ok else 1)
            self._failures[key] = failures
            result.failures = failures
            streak = 0 if result.ok else self._streaks.get(key, 0) + 1
            self._streaks[key] = streak
            result.consecutive_failures = streak
            prev = self._results.get(key)
            if result.ok:
                result.seen_since = _seen_since(prev, result)
            self._results[key] = result
            self._schedule(key, aligned(self._clock() + current.interval, current.interval))
            if self._heap[0][1] == key:
                # Now the earliest poll: the scheduler may be asleep for longer (up to a second when every
                # cluster was in flight), which would make this poll that much late.
                self._lock.notify()
        # A changed completed counter is news too: wait-time estimation needs it even when the depths hold.
        changed = (
            prev is None
            or prev.error != result.error
            or prev.queues != result.queues
            or prev.completed != result.completed
        )
        if changed:
            if not result.ok:
                log.info("queue stats unavailable", cluster=key, error=result.error)
            for fn in list(self._subscribers):
                try:
                    fn(key)
                except Exception:
                    log.exception("stats change handler failed", cluster=key)
            for outcome in list(self._outcome_subscribers):
                try:
                    outcome(key, prev, result)
                except Exception:
                    log.exception("stats change handler failed", cluster=key)


def _seen_since(prev: PollResult | None, result: PollResult) -> dict[str, float]:
    """Per queue, when its counts in ``result`` were first seen: carried over from ``prev`` while they
    hold (a failed poll in between starts the run afresh: nothing says they held meanwhile)."""
    if prev is None or not prev.ok:
        return dict.fromkeys(result.queues, result.at)
    before, since = prev.queues, prev.seen_since
    at = result.at
    return {q: since.get(q, prev.at) if before.get(q) == n else at for q, n in result.queues.items()}


def top_queues(queues: dict[str, tuple[int, int]], limit: int = 20) -> list[dict[str, Any]]:
    """The busiest queues (by available + active, then name), bounded for status and metric labels."""
    ranked = sorted(queues.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))[:limit]
    return [{"name": n, "available": a, "active": act} for n, (a, act) in ranked]
