"""Autoscaling decisions for OJS servers and workers (design.md §cluster-children, §worker-children,
§depth-and-load, §durations, §stabilisation); drain planning is re-exported from :mod:`ojsctrl.ojs.drain`
(design.md §drain).

Pure functions: no I/O, no clock, no client. Time comes in as ``now`` (seconds on any clock, the same one
for every call that shares a :class:`History`), and state between calls lives in the immutable
:class:`History` that each :class:`Decision` hands back.

Rules shared by both autoscalers:

* The recommendation is ``clamp(ceil(load / target), min, max)``; ``desired`` is always within
  ``[min, max]``, whatever ``current`` is (bounds are enforced at once, with no cooldown).
* Scale-down uses a stabilisation window: ``desired`` is the highest recommendation seen during the last
  ``window`` seconds, so a lower recommendation takes effect only after it has held for the whole window.
  Until a history covers a full window (a fresh operator, a newly enabled autoscaler) the current replica
  count counts as a recommendation, so a restart never causes an early scale-down.
* Missing data never scales down (design.md §stabilisation). A failed poll records a hold sample (the
  current replicas, only clamped to the bounds) in the window and restarts the good-data clock: after an
  outage, however long, a scale-down waits for a whole window of good data, exactly as after a restart. A
  failed poll the caller only learns about afterwards (the poller recovered before the reconcile ran) counts
  the same: pass the poller's running count of failed polls as ``failed_polls``.
* A recommendation stays in force until the inputs change. A caller that evaluates only when they change
  (an OJSWorker is woken by a poll that moves its counts, not on a timer) passes ``inputs_since``, when the
  current inputs were first seen: the newest recommendation then counts in the window as made at that
  time, so a load that lasted longer than the window still holds the pool for a whole window after it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

# Drain planning lives in its own module; importing it here keeps it under this module's purity contract.
from ojsctrl.ojs.drain import DELETION_COST_ANNOTATION, IDLE_DELETION_COST, DrainPlan, plan_drain

__all__ = [
    "DELETION_COST_ANNOTATION",
    "IDLE_DELETION_COST",
    "Decision",
    "Direction",
    "DrainPlan",
    "History",
    "Recommendation",
    "WorkerScaling",
    "initial_replicas",
    "plan_drain",
    "server_desired",
    "worker_desired",
]

Direction = Literal["up", "down", "none"]

MAX_HISTORY: Final = 32
"""Most recommendations a :class:`History` keeps (it merges conservatively beyond that)."""


# ----------------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The replica count recommended at time ``at``."""

    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class History:
    """What the autoscaler remembers between decisions; small, immutable and bounded.

    ``recommendations`` only keeps what can still matter for the window maximum: entries are dropped once
    older than the window, and an entry is dropped as soon as a later one is at least as high (it can
    never be the maximum again). That leaves a strictly decreasing run of at most :data:`MAX_HISTORY`
    entries; beyond that the two oldest are merged into one that keeps the higher value for the later
    time, which can only delay a scale-down, never hasten one.

    ``since`` is when the current run of good data started (for "has it covered a full window yet"); a
    hold sample (a failed poll) clears it, so the next good sample starts the run again. ``failed_polls``
    is the poller's count of failed polls when this history last looked, to notice failures it never saw.
    ``last_scale_up`` and ``last_scale_down`` may be seeded from ``status.lastScaleTime`` after an operator
    restart.
    """

    recommendations: tuple[Recommendation, ...] = ()
    since: float | None = None
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    failed_polls: int | None = None

    def normalized(self, now: float) -> History:
        """Times later than ``now`` (the clock stepped back) become ``now``: conservative and bounded."""
        recs = self.recommendations
        if all(r.at <= now for r in recs) and all(
            t is None or t <= now for t in (self.since, self.last_scale_up, self.last_scale_down)
        ):
            return self
        return History(
            recommendations=_decreasing(Recommendation(min(r.at, now), r.replicas) for r in recs),
            since=None if self.since is None else min(self.since, now),
            last_scale_up=None if self.last_scale_up is None else min(self.last_scale_up, now),
            last_scale_down=None if self.last_scale_down is None else min(self.last_scale_down, now),
            failed_polls=self.failed_polls,
        )

    def record(self, now: float, replicas: int, window: float) -> History:
        """This history with ``replicas`` recommended at ``now``, pruned to ``window`` seconds."""
        kept = [r for r in self.recommendations if r.at >= now - window]
        kept.append(Recommendation(now, replicas))
        recs = list(_decreasing(kept))
        while len(recs) > MAX_HISTORY:
            # Keep the older (higher) value until the later time: the window max can only grow.
            recs[0:2] = [Recommendation(recs[1].at, recs[0].replicas)]
        return replace(self, recommendations=tuple(recs), since=now if self.since is None else self.since)

    def carried(self, until: float) -> History:
        """This history with its newest recommendation in force until ``until`` (the time the inputs that
        made it changed): it counts in the window as made then. Earlier times change nothing."""
        recs = self.recommendations
        if not recs or until <= recs[-1].at:
            return self
        return replace(
            self, recommendations=_decreasing((*recs[:-1], Recommendation(until, recs[-1].replicas)))
        )

    def hold(self, now: float, replicas: int, window: float) -> History:
        """This history after a failed poll: ``replicas`` (the count being held) recorded as a hold sample,
        and the good-data run cleared, so no scale-down before a whole window of good data follows."""
        return replace(self.record(now, replicas, window), since=None)

    def window_max(self, now: float, window: float) -> int | None:
        """Highest recommendation made during the last ``window`` seconds, or None if there is none."""
        values = [r.replicas for r in self.recommendations if r.at >= now - window]
        return max(values) if values else None

    def covers(self, now: float, window: float) -> bool:
        """True when this history has observed at least one full window."""
        return self.since is not None and now - self.since >= window

    def next_drop(self, now: float, window: float, below: int) -> float | None:
        """The earliest time after ``now`` at which the window can next allow less than it does now for a
        recommendation ``below``: when the oldest higher recommendation leaves the window, or when the
        history comes to cover a whole window. None when neither is ahead."""
        times = [r.at + window for r in self.recommendations if r.replicas > below and r.at + window >= now]
        if self.since is not None and self.since + window > now:
            times.append(self.since + window)
        return min(times) if times else None


def _decreasing(recs: Iterable[Recommendation]) -> tuple[Recommendation, ...]:
    out: list[Recommendation] = []
    for r in recs:
        while out and out[-1].replicas <= r.replicas:
            out.pop()
        out.append(r)
    return tuple(out)


# ----------------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one autoscaling evaluation.

    ``desired`` is the replica count to apply; ``direction`` compares it with the current count;
    ``reason`` is a CamelCase word for events and conditions (``ScaledUp``, ``ScaledDown``, ``Activated``,
    ``Stable``, ``ScaleUpCooldown``, ``BelowScaleUpThreshold``, ``ScaleDownStabilizing``,
    ``StatsUnavailable``, ``BelowMinReplicas``, ``AboveMaxReplicas``) and ``message`` the sentence for
    humans. ``recommended`` is the raw clamped recommendation; ``history`` is to be passed to the next call.
    ``retry_at`` is, for a stabilising scale-down, when the same inputs may next answer lower (the caller
    can come back then rather than on a timer).
    """

    desired: int
    direction: Direction
    reason: str
    message: str
    recommended: int
    history: History
    retry_at: float | None = None

    @property
    def waits_on_time(self) -> bool:
        """Whether the same counts may give another answer later (a stabilising scale-down, a cooldown):
        the caller should evaluate again after a while, not only when the counts change."""
        return self.reason in _TIME_BOUND_REASONS


_TIME_BOUND_REASONS = frozenset({"ScaleDownStabilizing", "ScaleUpCooldown"})


@dataclass(frozen=True, slots=True)
class WorkerScaling:
    """The queue-depth autoscaling settings of one OJSWorker, durations in seconds."""

    min_replicas: int
    max_replicas: int
    target_jobs_per_worker: int
    scale_up_threshold: int = 0
    scale_down_delay: float = 300.0

    def __post_init__(self) -> None:
        _check_bounds(self.min_replicas, self.max_replicas, allow_zero=True)
        if self.target_jobs_per_worker < 1:
            raise ValueError("targetJobsPerWorker must be >= 1")
        if self.scale_up_threshold < 0:
            raise ValueError("scaleUpThreshold must be >= 0")
        if self.scale_down_delay < 0:
            raise ValueError("scaleDownDelay must be >= 0")


def initial_replicas(spec_replicas: int, min_replicas: int, max_replicas: int) -> int:
    """Replicas before the first successful poll: the resource's replicas, clamped (design.md
    §depth-and-load)."""
    return _clamp(spec_replicas, min_replicas, max_replicas)


def server_desired(
    total_depth: int,
    current: int,
    *,
    min_replicas: int,
    max_replicas: int,
    target_queue_depth: int,
    scale_up_cooldown: float,
    scale_down_cooldown: float,
    history: History,
    now: float,
    stats_available: bool = True,
    failed_polls: int | None = None,
) -> Decision:
    """Desired OJS server replicas: ``clamp(ceil(total_depth / targetQueueDepth), min, max)`` (design.md
    §cluster-children).

    A scale-up waits until ``scale_up_cooldown`` seconds have passed since the previous scale-up; a
    scale-down follows the highest recommendation of the last ``scale_down_cooldown`` seconds. Without
    stats the current replicas are held; ``failed_polls`` as in :func:`worker_desired`.
    """
    _check_bounds(min_replicas, max_replicas, allow_zero=False)
    if target_queue_depth < 1:
        raise ValueError("targetQueueDepth must be >= 1")
    _check_non_negative(total_depth=total_depth, current=current)
    if scale_up_cooldown < 0 or scale_down_cooldown < 0:
        raise ValueError("cooldowns must be >= 0")
    window = scale_down_cooldown
    step = start_evaluation(
        current,
        min_replicas,
        max_replicas,
        history,
        now,
        window,
        recommend=_per_target("queue depth", total_depth, target_queue_depth, "server"),
        stats_available=stats_available,
        failed_polls=failed_polls,
    )
    if isinstance(step, Decision):
        return step
    rec = step.rec
    if rec <= current:
        return step.scale_down_or_hold()
    last_up = step.history.last_scale_up
    # Elapsed time first, then compared: `last_up + cooldown - now` rounds differently and could let a
    # scale-up through a hair before the cooldown has passed.
    wait = 0.0 if last_up is None else scale_up_cooldown - (now - last_up)
    if wait > 0:
        if current < min_replicas:
            return step.decide(min_replicas, "BelowMinReplicas", "raising to minReplicas")
        return step.decide(current, "ScaleUpCooldown", f"scale-up cooldown, {wait:.0f}s left")
    return step.decide(rec, "ScaledUp", f"scaling {current} -> {rec}")


def worker_desired(
    load: int,
    current: int,
    spec: WorkerScaling,
    history: History,
    now: float,
    *,
    stats_available: bool = True,
    failed_polls: int | None = None,
    inputs_since: float | None = None,
) -> Decision:
    """Desired worker replicas: ``clamp(ceil(load / targetJobsPerWorker), min, max)`` (design.md
    §worker-children, §depth-and-load).

    ``load`` is available + active over the worker's queues. No scale-up while ``load <=
    scaleUpThreshold``, except the activation 0 -> 1 as soon as ``load > 0`` (straight to the
    recommendation when the load is also above the threshold). A scale-down follows the highest
    recommendation of the last ``scaleDownDelay`` seconds. Without stats the current replicas are held.

    ``failed_polls`` is the poller's running count of failed polls of this cluster (None when unknown): when
    it grew since the history last looked, a failure happened unseen and counts as a hold sample now.
    ``inputs_since``: when this load was first seen, for a caller that evaluates only when it changes (see
    the module's rules).
    """
    _check_non_negative(load=load, current=current)
    target = spec.target_jobs_per_worker
    step = start_evaluation(
        current,
        spec.min_replicas,
        spec.max_replicas,
        history,
        now,
        spec.scale_down_delay,
        recommend=_per_target("load", load, target, "worker"),
        stats_available=stats_available,
        failed_polls=failed_polls,
        inputs_since=inputs_since,
    )
    if isinstance(step, Decision):
        return step
    return step.worker_scale_up(load, spec.scale_up_threshold, activate=load > 0)


def _per_target(
    what: str, amount: int, target: int, per: str
) -> Callable[[], tuple[int, Callable[[int], str]]]:
    """The recommendation ``ceil(amount / target)``, worded ``<what> <amount>, target <target> per <per>``."""
    return lambda: (
        _ceil_div(amount, target),
        lambda rec: f"{what} {amount}, target {target} per {per}: recommend {rec}",
    )


def start_evaluation(
    current: int,
    lo: int,
    hi: int,
    history: History,
    now: float,
    window: float,
    *,
    recommend: Callable[[], tuple[int, Callable[[int], str]]],
    stats_available: bool,
    failed_polls: int | None,
    remember: Callable[[], int | None] | None = None,
    inputs_since: float | None = None,
) -> Step | Decision:
    """The first rules every metric shares: note failed polls the history has not seen, hold the current
    replicas without stats, else record the clamped recommendation in the history.

    ``recommend`` returns the raw replica count and a function that words the basis for the clamped count;
    it is called only when stats are available. ``remember`` (default: the recommendation) is what the
    stabilisation window keeps of this evaluation: a metric whose recommendation has a transient part (a
    backlog to drain) keeps only the lasting part, so a drained backlog does not hold the pool up for the
    window (None: all of it). The result is a :class:`Step` to finish with the metric's own scale-up
    rules, or the hold :class:`Decision`.

    ``inputs_since`` (only with stats): when the current inputs were first seen; the newest recommendation
    was in force until then (:meth:`History.carried`).
    """
    history = history.normalized(now)
    if inputs_since is not None and stats_available:
        history = history.carried(min(inputs_since, now))
    history = _note_failures(history, failed_polls, stats_available, _clamp(current, lo, hi), now, window)
    if not stats_available:
        return _hold(current, lo, hi, history=history, now=now, window=window)
    raw, basis = recommend()
    rec = _clamp(raw, lo, hi)
    lasting = None if remember is None else remember()
    kept = rec if lasting is None else min(rec, _clamp(lasting, lo, hi))
    return Step(
        current=current,
        rec=rec,
        lo=lo,
        hi=hi,
        history=history.record(now, kept, window),
        now=now,
        window=window,
        basis=basis(rec),
    )


@dataclass(frozen=True, slots=True)
class Step:
    """The inputs of one evaluation, so the rules of each metric read as rules."""

    current: int
    rec: int
    lo: int
    hi: int
    history: History
    now: float
    window: float
    basis: str

    def decide(self, desired: int, reason: str, detail: str) -> Decision:
        """The decision for ``desired``, its message the basis and ``detail``."""
        return _decide(
            self.current,
            desired,
            reason,
            f"{self.basis}; {detail}",
            rec=self.rec,
            history=self.history,
            now=self.now,
        )

    def worker_scale_up(self, load: int, threshold: int, *, activate: bool) -> Decision:
        """A worker pool's rules: at or below the recommendation scale down or hold; from zero, activate
        when ``activate``; above zero, scale up only while ``load`` is above ``threshold``."""
        current, rec, lo, hi = self.current, self.rec, self.lo, self.hi
        if rec <= current:
            return self.scale_down_or_hold()
        above_threshold = load > threshold
        if current == 0 and activate:
            desired = rec if above_threshold else _clamp(1, lo, hi)
            return self.decide(desired, "Activated", f"activating {current} -> {desired}")
        if not above_threshold:
            if current < lo:
                return self.decide(lo, "BelowMinReplicas", "raising to minReplicas")
            detail = f"load is not above scaleUpThreshold {threshold}"
            return self.decide(current, "BelowScaleUpThreshold", detail)
        return self.decide(rec, "ScaledUp", f"scaling {current} -> {rec}")

    def scale_down_or_hold(self) -> Decision:
        """At or below the current count: hold, or scale down once the recommendation held for the window."""
        current, rec = self.current, self.rec
        if rec == current:
            return self.decide(current, "Stable", "at target")
        # rec < current: follow the highest recommendation of the window, and the current count too until
        # the history has seen a whole window.
        window_max = self.history.window_max(self.now, self.window)
        # Never below the recommendation itself (the window may keep less of it: start_evaluation).
        stabilized = rec if window_max is None else max(window_max, rec)
        if not self.history.covers(self.now, self.window):
            stabilized = max(stabilized, current)
        desired = _clamp(min(current, stabilized), self.lo, self.hi)
        if desired >= current:
            return replace(
                self.decide(
                    current,
                    "ScaleDownStabilizing",
                    f"waiting for the recommendation to hold for {self.window:.0f}s",
                ),
                retry_at=self.history.next_drop(self.now, self.window, rec),
            )
        if stabilized <= self.hi:
            return self.decide(desired, "ScaledDown", f"scaling {current} -> {desired}")
        return self.decide(desired, "AboveMaxReplicas", "lowering to maxReplicas")


def _note_failures(
    history: History, failed_polls: int | None, stats_available: bool, held: int, now: float, window: float
) -> History:
    if failed_polls is None:
        return history
    seen = history.failed_polls
    if stats_available and seen is not None and failed_polls > seen:
        # Polls failed since the last evaluation, which never saw them: hold as if it had.
        history = history.hold(now, held, window)
    return replace(history, failed_polls=failed_polls)


def _hold(current: int, lo: int, hi: int, *, history: History, now: float, window: float) -> Decision:
    desired = _clamp(current, lo, hi)
    history = history.hold(now, desired, window)
    if desired > current:
        reason, message = "BelowMinReplicas", "queue stats unavailable; raising to minReplicas"
    elif desired < current:
        reason, message = "AboveMaxReplicas", "queue stats unavailable; lowering to maxReplicas"
    else:
        reason, message = "StatsUnavailable", f"queue stats unavailable; holding {current} replicas"
    return _decide(current, desired, reason, message, rec=desired, history=history, now=now)


def _decide(
    current: int, desired: int, reason: str, message: str, *, rec: int, history: History, now: float
) -> Decision:
    direction: Direction
    if desired > current:
        direction, history = "up", replace(history, last_scale_up=now)
    elif desired < current:
        direction, history = "down", replace(history, last_scale_down=now)
    else:
        direction = "none"
    return Decision(desired, direction, reason, message, rec, history)


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def _ceil_div(a: int, b: int) -> int:
    # Integer arithmetic: float division loses precision for large depths.
    return -(-a // b)


def _check_bounds(lo: int, hi: int, *, allow_zero: bool) -> None:
    if lo < (0 if allow_zero else 1):
        raise ValueError(f"minReplicas must be >= {0 if allow_zero else 1}")
    if hi < lo:
        raise ValueError("maxReplicas must be >= minReplicas")


def _check_non_negative(**values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
