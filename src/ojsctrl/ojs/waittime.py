"""Wait-time autoscaling, fallback and pause decisions for OJS workers (issue #13, design.md §stabilisation,
§autoscaling-annotations).

Pure functions and immutable state, as in :mod:`ojsctrl.ojs.autoscale`: no I/O, no clock, no client. Time
comes in as ``now`` (seconds on one clock shared by every call that shares state), state between calls lives
in the frozen :class:`Estimator`, :class:`StartupTracker` and :class:`~ojsctrl.ojs.autoscale.History` each
call hands back.

The model. Each poll gives, summed over the worker's queues, ``available`` (waiting), ``active`` (being
processed) and ``completed`` (a counter). Between two polls:

* completions = the change of ``completed`` (after a counter reset, the new value: what was completed since);
* arrivals = the change of ``available + active`` plus the completions (jobs are conserved), never negative;
* both become rates over the elapsed time and are smoothed by an EWMA whose weight depends on the elapsed time
  (``alpha = 1 - exp(-dt / time_constant)``), so a missed poll simply makes one longer interval that weighs
  more, never a spike;
* the service time follows from Little's law: smoothed ``active`` / smoothed throughput, used once
  :data:`MIN_COMPLETIONS` jobs have completed (before that the pool is sized one slot per job, and such
  provisional recommendations do not hold the pool up once measured ones exist: :func:`settle_provisional`);
* the estimated wait is the time the waiting jobs need at the current throughput.

Sizing (:func:`wait_time_recommendation`): the slots needed are ``arrival_rate * service_time`` (to keep up)
plus ``available * service_time / horizon`` (to drain the backlog within the target; at most one slot per
waiting job, which is all a job longer than the horizon can use), where the horizon is the
target wait, less the measured start-up latency when new pods are needed, and never fewer than the jobs
running. Replicas = slots / slots per pod, rounded up. Zero only when nothing waits, nothing runs and
nothing completed in the last interval.

The result goes through the same rules as ``queueDepth`` (bounds, scaleUpThreshold and activation, the
scale-down stabilisation window, missing data holding), through the building blocks of
:mod:`ojsctrl.ojs.autoscale`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from ojsctrl.ojs.autoscale import (
    Decision,
    History,
    WorkerScaling,
    _clamp,
    _decide,
    start_evaluation,
)

__all__ = [
    "DEFAULT_STARTUP_LATENCY",
    "DEFAULT_TIME_CONSTANT",
    "Estimate",
    "Estimator",
    "FallbackBehavior",
    "PauseOutcome",
    "Sample",
    "StartupTracker",
    "WaitTimeScaling",
    "autoscaling_status",
    "fallback_applies",
    "fallback_decision",
    "fallback_replicas",
    "lasting_replicas",
    "pause_decision",
    "settle_provisional",
    "wait_time_desired",
    "wait_time_recommendation",
]

FallbackBehavior = Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"]

DEFAULT_TIME_CONSTANT: Final = 60.0
"""Seconds of the EWMA time constant: a sample ``dt`` seconds long weighs ``1 - exp(-dt / 60)``."""

FAST_TIME_CONSTANT: Final = 10.0
"""Seconds of a second, faster EWMA of the arrival rate: the rate used is the higher of the two, so a step up
in traffic is seen within a few polls while a fall is followed at the slower pace."""

FAST_MIN_JOBS: Final = 10.0
"""Jobs the fast window must hold (rate x its time constant) before the fast estimate is used."""

DEFAULT_STARTUP_LATENCY: Final = 15.0
"""Start-up latency assumed before one has been measured, seconds."""

MIN_HORIZON_FRACTION: Final = 0.25
"""When start-up takes (nearly) the whole target, the backlog is sized as if this fraction of the target were
left: the target cannot be met anyway, and a smaller horizon would ask for huge pools for a moment."""

MIN_COMPLETIONS: Final = 10
"""Completions the estimator must have counted before its service time is used. Little's law on the first
completions after a start overstates the service time (throughput still carries the intervals before
anything could finish). Until then the pool is sized one slot per job."""

_EPSILON: Final = 1e-9


# ----------------------------------------------------------------------------------------------------
# Estimation


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll: the time and the counts summed over the worker's queues."""

    at: float
    available: int
    active: int
    completed: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """Smoothed rates (jobs per second) and times (seconds); None while not yet measurable."""

    arrival_rate: float | None
    throughput: float | None
    service_time: float | None
    estimated_wait: float | None
    recent_completions: bool
    measured_at: float | None = None
    """When the service time was first usable (:data:`MIN_COMPLETIONS`); recommendations before that time
    were provisional (:func:`settle_provisional`)."""


@dataclass(frozen=True, slots=True)
class Estimator:
    """Arrival rate, throughput and service time from successive :class:`Sample` s; immutable.

    ``observe`` returns the estimator after one more sample. A sample at or before the previous one (a
    duplicate, a clock step back) restarts the interval without touching the rates.
    """

    time_constant: float = DEFAULT_TIME_CONSTANT
    last: Sample | None = None
    arrival_rate: float | None = None
    throughput: float | None = None
    active: float | None = None
    service_time: float | None = None
    last_completions: int = 0
    completions: int = 0
    measured_at: float | None = None
    arrival_fast: float | None = None

    def __post_init__(self) -> None:
        if self.time_constant <= 0:
            raise ValueError("time_constant must be > 0")

    def observe(self, sample: Sample) -> Estimator:
        """This estimator after ``sample``."""
        if min(sample.available, sample.active, sample.completed) < 0:
            raise ValueError("sample counts must be >= 0")
        prev = self.last
        if prev is None or sample.at <= prev.at:
            return replace(self, last=sample)
        dt = sample.at - prev.at
        done = sample.completed - prev.completed
        if done < 0:
            # Counter reset (server restart, retention): what is counted now was completed since the reset.
            done = sample.completed
        arrived = max(0, sample.available + sample.active - prev.available - prev.active + done)
        alpha = 1.0 - math.exp(-dt / self.time_constant)
        arrival = _ewma(self.arrival_rate, arrived / dt, alpha)
        fast = _ewma(
            self.arrival_fast, arrived / dt, 1.0 - math.exp(-dt / min(FAST_TIME_CONSTANT, self.time_constant))
        )
        throughput = _ewma(self.throughput, done / dt, alpha)
        # The interval's mean number of active jobs, for Little's law over the same interval.
        active = _ewma(self.active, (prev.active + sample.active) / 2.0, alpha)
        service = self.service_time
        if throughput > _EPSILON and done > 0:
            service = active / throughput
        completions = self.completions + done
        measured_at = self.measured_at
        if measured_at is None and service is not None and completions >= MIN_COMPLETIONS:
            measured_at = sample.at
        return replace(
            self,
            last=sample,
            arrival_rate=arrival,
            throughput=throughput,
            active=active,
            service_time=service,
            last_completions=done,
            completions=completions,
            measured_at=measured_at,
            arrival_fast=fast,
        )

    def estimate(self) -> Estimate:
        """The current estimate."""
        available = 0 if self.last is None else self.last.available
        wait: float | None
        if available == 0:
            wait = 0.0
        elif self.throughput is not None and self.throughput > _EPSILON:
            wait = available / self.throughput
        else:
            wait = None  # jobs wait and none complete: unbounded, unknown
        arrival = self.arrival_rate
        fast = self.arrival_fast
        # The fast estimate counts only when its window holds enough jobs to be more than noise (a rare
        # arrival of a long job would otherwise look like a surge).
        if arrival is not None and fast is not None and fast * FAST_TIME_CONSTANT >= FAST_MIN_JOBS:
            arrival = max(arrival, fast)
        return Estimate(
            arrival_rate=arrival,
            throughput=self.throughput,
            service_time=self.service_time if self.measured_at is not None else None,
            estimated_wait=wait,
            recent_completions=self.last_completions > 0,
            measured_at=self.measured_at,
        )


def _ewma(previous: float | None, value: float, alpha: float) -> float:
    return value if previous is None else previous + alpha * (value - previous)


@dataclass(frozen=True, slots=True)
class StartupTracker:
    """Learns the start-up latency: from "scale-up to N decided at t0" to "N pods Ready at t1"; immutable.

    Call :meth:`scaled_up` when a scale-up is applied and :meth:`observe` with the Ready count on every
    evaluation. Measurements are smoothed (each new one weighs ``weight``); a scale-down below the pending
    target lowers the target (those pods will never come).
    """

    pending_since: float | None = None
    pending_target: int | None = None
    latency: float | None = None
    samples: int = 0
    weight: float = 0.5

    def scaled_up(self, now: float, target: int) -> StartupTracker:
        """A scale-up to ``target`` replicas was decided at ``now``; an earlier one still pending keeps its
        start (its pods are part of this target, so the wait counts from when they were asked for)."""
        since = now if self.pending_since is None else self.pending_since
        return replace(self, pending_since=since, pending_target=target)

    def observe(self, now: float, ready: int, desired: int | None = None) -> StartupTracker:
        """The Ready count at ``now`` (and the desired count, when known)."""
        if self.pending_since is None or self.pending_target is None:
            return self
        target = self.pending_target if desired is None else min(self.pending_target, desired)
        if ready < target:
            return replace(self, pending_target=target)
        measured = max(0.0, now - self.pending_since)
        latency = _ewma(self.latency, measured, self.weight)
        return replace(
            self, pending_since=None, pending_target=None, latency=latency, samples=self.samples + 1
        )

    def value(self, default: float = DEFAULT_STARTUP_LATENCY) -> float:
        """The measured latency, or ``default`` before the first measurement."""
        return default if self.latency is None else self.latency


# ----------------------------------------------------------------------------------------------------
# Sizing


@dataclass(frozen=True, slots=True)
class WaitTimeScaling:
    """The waitTime settings: the target wait and the jobs one pod runs at once, seconds and counts."""

    target_wait: float
    slots_per_pod: int

    def __post_init__(self) -> None:
        if self.target_wait <= 0:
            raise ValueError("targetWaitTime must be > 0")
        if self.slots_per_pod < 1:
            raise ValueError("slots per pod (concurrency) must be >= 1")


def wait_time_recommendation(
    available: int,
    active: int,
    estimate: Estimate,
    *,
    ready: int,
    startup_latency: float,
    spec: WaitTimeScaling,
) -> tuple[int, str]:
    """Replicas (not yet clamped) to serve the arrivals and drain the backlog within the target, with the
    reasoning in words.

    ``ready`` is the count of Ready pods: when more are needed, they come only after ``startup_latency``, so
    the backlog must drain in what is left of the target.
    """
    if available == 0 and active == 0 and not estimate.recent_completions:
        return 0, "no job waiting, active or completed recently"
    slots = spec.slots_per_pod
    service = estimate.service_time
    if service is None:
        # Nothing completed yet, so no service time: one slot per job present, as queueDepth with the
        # pod's concurrency as target.
        n = max(1, _ceil(available + active, slots))
        return n, f"service time not measured yet: one slot per job ({available + active} jobs)"
    arrival = estimate.arrival_rate or 0.0
    steady = arrival * service
    target = spec.target_wait

    def replicas(horizon: float) -> int:
        # A waiting job needs one free slot to start: jobs longer than the horizon cannot be drained "faster"
        # by more slots than jobs (the fluid term would ask service / horizon slots for each).
        needed = steady + min(float(available), available * service / horizon)
        # Never fewer slots than jobs running: cutting into them shortens no wait and interrupts jobs
        # (after arrivals stop, arrivals x service time falls before the long jobs are done).
        needed = max(needed, float(active))
        return max(1, math.ceil(needed / slots - _EPSILON))

    n = replicas(target)
    horizon = target
    if n > ready:
        horizon = max(target - startup_latency, target * MIN_HORIZON_FRACTION)
        n = replicas(horizon)
    return n, (
        f"arrivals {arrival:.3g}/s x service time {service:.3g}s = {steady:.3g} busy slots, plus {available} "
        f"waiting drained within {horizon:.0f}s: {n} pods of {slots} slots"
    )


def wait_time_desired(
    available: int,
    active: int,
    current: int,
    spec: WorkerScaling,
    wait: WaitTimeScaling,
    estimate: Estimate,
    history: History,
    now: float,
    *,
    ready: int,
    startup_latency: float,
    stats_available: bool = True,
    failed_polls: int | None = None,
) -> Decision:
    """Desired worker replicas for metric waitTime, with the rules of queueDepth (see
    :func:`ojsctrl.ojs.autoscale.worker_desired`): bounds at once; no scale-up while ``available + active <=
    scaleUpThreshold`` except the activation from zero; scale-down after the recommendation held for
    ``scaleDownDelay``; without stats the current replicas are held. ``spec.target_jobs_per_worker`` is not
    used. For a fallback after failed polls, call :func:`fallback_decision` first.
    """
    if min(available, active, current, ready) < 0:
        raise ValueError("counts must be >= 0")
    history = settle_provisional(history.normalized(now), estimate.measured_at, now, spec.scale_down_delay)
    step = start_evaluation(
        current,
        spec.min_replicas,
        spec.max_replicas,
        history,
        now,
        spec.scale_down_delay,
        recommend=lambda: _recommend(available, active, estimate, ready, startup_latency, wait),
        remember=lambda: lasting_replicas(active, estimate, wait),
        stats_available=stats_available,
        failed_polls=failed_polls,
    )
    if isinstance(step, Decision):
        return step
    # From zero, recent completions count as activity too: a queue drained between polls still has work.
    activate = available + active > 0 or estimate.recent_completions
    return step.worker_scale_up(available + active, spec.scale_up_threshold, activate=activate)


def lasting_replicas(active: int, estimate: Estimate, spec: WaitTimeScaling) -> int | None:
    """The part of the recommendation the scale-down window keeps: the pods that keep up with arrivals
    (and the jobs running), without the slots for draining a backlog, which are gone once it is drained.
    None before a service time is measured: the provisional count is kept as it is."""
    if estimate.service_time is None:
        return None
    steady = (estimate.arrival_rate or 0.0) * estimate.service_time
    needed = max(steady, float(active))
    if needed <= 0 and not estimate.recent_completions:
        return 0
    return max(1, math.ceil(needed / spec.slots_per_pod - _EPSILON))


def settle_provisional(history: History, measured_at: float | None, now: float, window: float) -> History:
    """The history once the service time is measured, when the pool was last raised on a provisional
    recommendation (one slot per job, before :data:`MIN_COMPLETIONS`) during the current run of good data:
    the provisional recommendations leave the stabilisation window, and that window counts as seen, so the
    pool comes down to what the measured rates ask for at once instead of holding a guess for
    ``scaleDownDelay``. Otherwise (no provisional scale-up, an operator restart with no scale-up since, a
    run of good data that began after the measurement) the history is returned as it is."""
    up, since = history.last_scale_up, history.since
    if measured_at is None or up is None or since is None or not since <= up < measured_at:
        return history
    if not any(r.at < measured_at for r in history.recommendations):
        return history  # settled already
    kept = tuple(r for r in history.recommendations if r.at >= measured_at)
    return replace(history, recommendations=kept, since=min(since, now - window))


def _recommend(
    available: int, active: int, estimate: Estimate, ready: int, startup_latency: float, wait: WaitTimeScaling
) -> tuple[int, Callable[[int], str]]:
    raw, why = wait_time_recommendation(
        available, active, estimate, ready=ready, startup_latency=startup_latency, spec=wait
    )
    return raw, lambda rec: f"{why}; recommend {rec}"


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------------------------------
# Fallback (KEDA's fields and behaviours, pkg/fallback/fallback.go)


def fallback_applies(consecutive_failures: int, failure_threshold: int) -> bool:
    """Whether the fallback is in force: as in KEDA, once the consecutive failures exceed the threshold
    (``failureThreshold: 3`` falls back on the fourth failed poll in a row)."""
    return consecutive_failures > failure_threshold


def fallback_replicas(behavior: FallbackBehavior, replicas: int, current: int) -> int:
    """KEDA's fallback count: ``static`` the configured replicas; ``currentReplicas`` the current count;
    ``currentReplicasIfHigher`` the current count if higher than replicas, else replicas;
    ``currentReplicasIfLower`` the current count if lower than replicas, else replicas."""
    if behavior == "currentReplicas":
        return current
    if behavior == "currentReplicasIfHigher":
        return max(current, replicas)
    if behavior == "currentReplicasIfLower":
        return min(current, replicas)
    return replicas


def fallback_decision(
    current: int,
    spec: WorkerScaling,
    history: History,
    now: float,
    *,
    consecutive_failures: int,
    failure_threshold: int,
    replicas: int,
    behavior: FallbackBehavior,
) -> Decision | None:
    """The fallback decision after failed polls, or None while it does not apply (then the current
    replicas are held: missing data never scales down, design.md §stabilisation).

    The fallback count is clamped to min/max (as the HPA does with KEDA's) and applies at once, up or down:
    only a configured fallback may change replicas without data. It is recorded as a hold sample, so after
    the stats return a scale-down still waits a whole window of good data.
    """
    if min(current, consecutive_failures, replicas) < 0 or failure_threshold < 0:
        raise ValueError("counts must be >= 0")
    if not fallback_applies(consecutive_failures, failure_threshold):
        return None
    lo, hi = spec.min_replicas, spec.max_replicas
    history = history.normalized(now)
    desired = _clamp(fallback_replicas(behavior, replicas, current), lo, hi)
    history = history.hold(now, desired, spec.scale_down_delay)
    message = (
        f"queue stats unavailable for {consecutive_failures} polls in a row (failureThreshold "
        f"{failure_threshold}); fallback {behavior} with replicas {replicas}: {desired}"
    )
    return _decide(current, desired, "Fallback", message, rec=desired, history=history, now=now)


# ----------------------------------------------------------------------------------------------------
# Pause


@dataclass(frozen=True, slots=True)
class PauseOutcome:
    """What the pause annotations mean now.

    ``paused`` is True while the pause lasts; ``expired`` when a timed pause has ended (autoscaling resumes
    by itself); ``resume_at`` is when a timed pause ends (to evaluate again then); ``decision`` is the
    paused decision (None when not paused); ``reason``/``message`` are for the condition.
    """

    paused: bool
    expired: bool
    resume_at: float | None
    decision: Decision | None
    reason: str
    message: str


def pause_decision(
    current: int,
    history: History,
    now: float,
    *,
    paused: bool,
    until: float | None = None,
    replicas: int | None = None,
) -> PauseOutcome:
    """The pause decision from the parsed annotations (``until`` as seconds on the ``now`` clock).

    While paused the workers stay at ``replicas`` (``paused-replicas``, not clamped: as with KEDA it is an
    explicit count) or at the current count. The history is left as it was, so the stabilisation window
    carries on from before the pause when it ends.
    """
    if current < 0 or (replicas is not None and replicas < 0):
        raise ValueError("counts must be >= 0")
    if not paused:
        return PauseOutcome(False, False, None, None, "NotPaused", "autoscaling is not paused")
    if until is not None and now >= until:
        return PauseOutcome(
            False, True, None, None, "PauseExpired", "the autoscaling pause has ended; autoscaling resumed"
        )
    desired = current if replicas is None else replicas
    lasting = "until the annotation is removed" if until is None else f"for {until - now:.0f}s more"
    reason = "Paused" if until is None else "PausedUntil"
    message = f"autoscaling paused {lasting}; holding {desired} replicas"
    decision = _decide(current, desired, reason, message, rec=desired, history=history, now=now)
    return PauseOutcome(True, False, until, decision, reason, message)


# ----------------------------------------------------------------------------------------------------
# Status


def autoscaling_status(
    metric: str,
    decision: Decision,
    *,
    available: int | None = None,
    active: int | None = None,
    estimate: Estimate | None = None,
    startup_latency: float | None = None,
) -> dict[str, Any]:
    """The ``status.autoscaling`` block (camelCase, as the OJSWorker status serialises it).

    Rates are decimal strings in jobs per second, times Go durations (Kubernetes APIs avoid floats); both
    are rounded (rates to 3 decimals, times to 0.1 s) so that noise alone does not rewrite the status on
    every poll. An unknown or infinite value is left out.
    """
    inputs: dict[str, Any] = {}
    if available is not None:
        inputs["depth"] = available
    if active is not None:
        inputs["active"] = active
    if estimate is not None:
        _put(inputs, "arrivalRate", _rate(estimate.arrival_rate))
        _put(inputs, "throughput", _rate(estimate.throughput))
        _put(inputs, "serviceTime", _duration(estimate.service_time))
        _put(inputs, "estimatedWait", _duration(estimate.estimated_wait))
    _put(inputs, "startupLatency", _duration(startup_latency))
    out: dict[str, Any] = {
        "metric": metric,
        "recommendation": decision.recommended,
        "desiredReplicas": decision.desired,
        "reason": decision.reason,
        "message": decision.message,
    }
    if inputs:
        out["inputs"] = inputs
    return out


def _put(inputs: dict[str, Any], key: str, value: str | None) -> None:
    if value is not None:
        inputs[key] = value


def _rate(value: float | None) -> str | None:
    if value is None or not math.isfinite(value):
        return None
    text = f"{max(0.0, value):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _duration(seconds: float | None) -> str | None:
    """A Go duration rounded to 0.1 s (``1h2m3.4s``), as the CRDs' duration pattern accepts."""
    if seconds is None or not math.isfinite(seconds):
        return None
    tenths = max(0, round(seconds * 10))
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    secs = f"{rest // 10}.{rest % 10}".removesuffix(".0")
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or hours else "")
    return f"{out}{secs}s"
