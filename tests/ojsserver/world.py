"""A simulated world of jobs for autoscaling tests and benchmarks (issue #13).

Jobs arrive by a :class:`Trace` (a rate over time, a job-duration distribution, a fixed seed) and are
processed by the pods of a worker Deployment, ``jobs_per_pod`` at a time, on pods that are Ready and not
terminating.
Pod states come from outside: from the real API server (:mod:`tests.ojsserver.kubeworld` watches kwok pods),
or directly in unit tests. A terminating pod takes no new job and finishes what it can before its deadline
(the pod's ``deletionTimestamp``: deletion time plus grace period); jobs that would run longer are interrupted
at the deadline (or when the pod disappears first) and go back to the front of the queue.

Between two calls of :meth:`World.step` the world runs event by event (arrivals, completions, deadlines), so
its figures do not depend on how often it is stepped. After each step it writes its counts into an
:class:`~tests.ojsserver.server.OJSTestServer`, so the operator reads the real API shapes: admin queues with
available/active/completed, and one worker per pod with a Go-SDK id ``worker_<pod>_<n>`` and its active
jobs (so drain can rank pods).

It records every job's waits and interruptions and, per step, the pods, Ready pods and queue counts.
"""

from __future__ import annotations

import heapq
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.ojsserver.server import OJSTestServer

RateFn = Callable[[float], float]
DurationFn = Callable[[random.Random], float]


# ----------------------------------------------------------------------------------------------------
# Traces


@dataclass(frozen=True)
class Trace:
    """Arrivals at ``rate(t)`` jobs per second for ``duration`` seconds, jobs lasting ``job_duration(rng)``
    seconds; ``peak`` bounds the rate (for Poisson thinning); ``seed`` fixes everything."""

    name: str
    duration: float
    rate: RateFn
    peak: float
    job_duration: DurationFn
    seed: int = 1

    def arrivals(self) -> list[tuple[float, float]]:
        """``(arrival time, job duration)`` pairs of a non-homogeneous Poisson process, by thinning."""
        rng = random.Random(self.seed)
        out: list[tuple[float, float]] = []
        t = 0.0
        if self.peak <= 0:
            return out
        while True:
            t += rng.expovariate(self.peak)
            if t >= self.duration:
                return out
            accept = rng.random() * self.peak <= self.rate(t)
            # The duration is drawn for every candidate, so the thinning does not shift later durations.
            length = self.job_duration(rng)
            if accept:
                out.append((t, length))


def fixed(seconds: float) -> DurationFn:
    """Every job lasts ``seconds``."""
    return lambda _rng: seconds


def lognormal(median: float, sigma: float = 0.5, cap: float | None = None) -> DurationFn:
    """Log-normal job durations around ``median`` seconds (capped at ``cap``)."""

    def draw(rng: random.Random) -> float:
        value = rng.lognormvariate(math.log(median), sigma)
        return value if cap is None else min(value, cap)

    return draw


def step_burst(
    base: float = 1.0,
    factor: float = 10.0,
    *,
    duration: float = 900.0,
    at: float = 300.0,
    length: float = 300.0,
    job: float = 2.0,
    seed: int = 1,
) -> Trace:
    """``base`` jobs/s, then ``factor`` times that from ``at`` for ``length`` seconds."""
    return Trace(
        "step-burst",
        duration,
        lambda t: base * factor if at <= t < at + length else base,
        base * factor,
        lognormal(job),
        seed,
    )


def diurnal(
    mean: float = 2.0,
    amplitude: float = 0.9,
    *,
    period: float = 1200.0,
    duration: float = 2400.0,
    job: float = 2.0,
    seed: int = 2,
) -> Trace:
    """A sine around ``mean`` jobs/s (``amplitude`` as a fraction of it) with the given period."""
    return Trace(
        "diurnal",
        duration,
        lambda t: mean * (1 + amplitude * math.sin(2 * math.pi * t / period)),
        mean * (1 + amplitude),
        lognormal(job),
        seed,
    )


def spike_then_idle(
    rate: float = 5.0,
    *,
    spike: float = 120.0,
    idle: float = 600.0,
    again: float = 60.0,
    job: float = 2.0,
    seed: int = 3,
) -> Trace:
    """A spike of ``rate`` jobs/s, an idle stretch (scale to zero), then the spike again (and back)."""

    def r(t: float) -> float:
        return rate if t < spike or spike + idle <= t < spike + idle + again else 0.0

    return Trace("spike-then-idle", spike + idle + again + 120.0, r, rate, lognormal(job), seed)


def long_jobs(rate: float = 0.05, *, duration: float = 2400.0, job: float = 180.0, seed: int = 4) -> Trace:
    """Rare jobs of minutes, arriving in a first half and then stopping, so the pool scales down while
    jobs run (interruptions unless drain or a long grace period protects them)."""
    return Trace(
        "long-jobs",
        duration,
        lambda t: rate if t < duration / 2 else 0.0,
        rate,
        lognormal(job, 0.3),
        seed,
    )


TRACES: dict[str, Callable[..., Trace]] = {
    "step-burst": step_burst,
    "diurnal": diurnal,
    "spike-then-idle": spike_then_idle,
    "long-jobs": long_jobs,
}


# ----------------------------------------------------------------------------------------------------
# The world


@dataclass(frozen=True)
class PodState:
    """What the world needs of a pod: Ready, and the deadline of a terminating pod (its deletionTimestamp,
    seconds on the world's clock)."""

    ready: bool
    deadline: float | None = None


@dataclass
class Job:
    """One job and what happened to it."""

    id: int
    arrived: float
    duration: float
    queued_at: float = 0.0
    started: float | None = None
    finishes: float | None = None
    pod: str | None = None
    completed: float | None = None
    waits: list[float] = field(default_factory=list)
    interruptions: int = 0

    @property
    def first_wait(self) -> float | None:
        """Time from arrival to the first start."""
        return self.waits[0] if self.waits else None


@dataclass
class _Pod:
    name: str
    ready: bool
    deadline: float | None
    running: set[int] = field(default_factory=set)
    first_seen: float = 0.0
    quiet: bool = False


@dataclass(frozen=True)
class Point:
    """The world at one step."""

    t: float
    pods: int
    ready: int
    available: int
    active: int
    completed: int


class World:
    """The job world; thread-safe. Time is in seconds on the caller's clock, starting at ``start``."""

    def __init__(
        self,
        trace: Trace,
        *,
        jobs_per_pod: int,
        start: float = 0.0,
        server: OJSTestServer | None = None,
        queue: str = "default",
    ) -> None:
        if jobs_per_pod < 1:
            raise ValueError("jobs_per_pod must be >= 1")
        self.trace = trace
        self.jobs_per_pod = jobs_per_pod
        self.start = start
        self.server = server
        self.queue_name = queue
        self.jobs = [
            Job(i, start + at, length, queued_at=start + at)
            for i, (at, length) in enumerate(trace.arrivals())
        ]
        self.clock = start
        self.pods: dict[str, _Pod] = {}
        self.queue: deque[int] = deque()
        self.history: list[Point] = []
        self.completed = 0
        self.interrupted = 0
        self.first_arrival_from_zero: list[tuple[float, float | None]] = []
        self._next = 0
        # (time, kind, sequence, payload): kind 0 = completion, 1 = pod deadline; arrivals come from the list.
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._lock = threading.RLock()
        self._zero_since: float | None = start
        self._published_workers: set[str] = set()

    # ---- driving ------------------------------------------------------------------------------------

    def step(self, now: float, pods: Mapping[str, PodState] | int) -> None:
        """Run the world up to ``now``, then apply the pods' states as of ``now``; an int means that many
        Ready pods named ``pod-0``, ``pod-1``, ... (for tests without a cluster)."""
        if isinstance(pods, int):
            pods = {f"pod-{i}": PodState(True) for i in range(pods)}
        with self._lock:
            self._advance(max(now, self.clock))
            self._apply_pods(self.clock, pods)
            self._start_jobs(self.clock)
            self._record()
            self._publish()

    @property
    def finished(self) -> bool:
        """Whether every job of the trace has arrived and completed."""
        with self._lock:
            return self._next >= len(self.jobs) and self.completed == len(self.jobs)

    # ---- figures ------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Waits (a job not started yet counts with its wait so far), interruptions, pod-seconds, and the
        time from the first job after an idle stretch at zero pods to the first Ready pod."""
        with self._lock:
            arrived = self.jobs[: self._next]
            waits = sorted(
                (j.first_wait if j.first_wait is not None else self.clock - j.arrived) for j in arrived
            )
            pod_seconds = sum(
                (b.t - a.t) * a.pods for a, b in zip(self.history, self.history[1:], strict=False)
            )
            from_zero = [r - a for a, r in self.first_arrival_from_zero if r is not None]
            return {
                "trace": self.trace.name,
                "jobs": len(arrived),
                "completed": self.completed,
                "interrupted": self.interrupted,
                "wait_p50": _quantile(waits, 0.50),
                "wait_p95": _quantile(waits, 0.95),
                "wait_p99": _quantile(waits, 0.99),
                "wait_max": waits[-1] if waits else 0.0,
                "pod_seconds": pod_seconds,
                "first_ready_from_zero": from_zero,
            }

    # ---- internals ----------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, payload))

    def _advance(self, until: float) -> None:
        while True:
            t_arrival = self.jobs[self._next].arrived if self._next < len(self.jobs) else math.inf
            t_event = self._events[0][0] if self._events else math.inf
            t = min(t_arrival, t_event)
            if t > until:
                break
            if t_event <= t_arrival:
                _, kind, _, payload = heapq.heappop(self._events)
                if kind == 0:
                    self._complete(t, payload)
                else:
                    self._deadline(t, payload)
            else:
                job = self.jobs[self._next]
                self._next += 1
                if self._zero_since is not None and not self.pods:
                    self.first_arrival_from_zero.append((t, None))
                    self._zero_since = None
                self.queue.append(job.id)
            self._start_jobs(t)
        self.clock = until

    def _complete(self, t: float, job_id: int) -> None:
        job = self.jobs[job_id]
        if job.finishes != t or job.pod is None:
            return  # interrupted before; a stale event
        pod = self.pods.get(job.pod)
        if pod is not None:
            pod.running.discard(job_id)
        job.completed, job.pod = t, None
        self.completed += 1

    def _deadline(self, t: float, name: str) -> None:
        pod = self.pods.get(name)
        if pod is not None and pod.deadline is not None and pod.deadline <= t:
            self._interrupt_all(t, pod)
            pod.ready = False

    def _interrupt_all(self, t: float, pod: _Pod) -> None:
        # Requeued at the front, oldest first: a worker that dies hands its jobs back (visibility timeout).
        for job_id in sorted(pod.running, reverse=True):
            job = self.jobs[job_id]
            job.pod, job.finishes, job.started = None, None, None
            job.interruptions += 1
            job.queued_at = t
            self.interrupted += 1
            self.queue.appendleft(job_id)
        pod.running.clear()

    def _apply_pods(self, t: float, states: Mapping[str, PodState]) -> None:
        for name in list(self.pods):
            if name not in states:
                self._interrupt_all(t, self.pods.pop(name))
        for name, st in states.items():
            pod = self.pods.get(name)
            if pod is None:
                pod = self.pods[name] = _Pod(name, st.ready, st.deadline, first_seen=t)
            else:
                pod.ready = st.ready
            if st.deadline is not None and pod.deadline is None:
                pod.deadline = st.deadline
                self._push(st.deadline, 1, name)
        ready = any(p.ready and p.deadline is None for p in self.pods.values())
        if ready and self.first_arrival_from_zero and self.first_arrival_from_zero[-1][1] is None:
            arrived, _ = self.first_arrival_from_zero[-1]
            self.first_arrival_from_zero[-1] = (arrived, t)
        if not self.pods and self._zero_since is None:
            self._zero_since = t

    def _start_jobs(self, t: float) -> None:
        if not self.queue:
            return
        free = [
            p
            for p in self.pods.values()
            if p.ready and p.deadline is None and not p.quiet and len(p.running) < self.jobs_per_pod
        ]
        while self.queue and free:
            # Spread over pods: the least busy first, as competing fetches roughly do.
            pod = min(free, key=lambda p: (len(p.running), p.name))
            job = self.jobs[self.queue.popleft()]
            job.waits.append(t - job.queued_at)
            job.started, job.pod = t, pod.name
            job.finishes = t + job.duration
            pod.running.add(job.id)
            self._push(job.finishes, 0, job.id)
            if len(pod.running) >= self.jobs_per_pod:
                free.remove(pod)

    def _record(self) -> None:
        active = sum(len(p.running) for p in self.pods.values())
        self.history.append(
            Point(
                self.clock,
                len(self.pods),
                sum(1 for p in self.pods.values() if p.ready and p.deadline is None),
                len(self.queue),
                active,
                self.completed,
            )
        )

    def _publish(self) -> None:
        if self.server is None:
            return
        point = self.history[-1]
        self.server.set_queue(
            self.queue_name, available=point.available, active=point.active, completed=point.completed
        )
        current: set[str] = set()
        for pod in self.pods.values():
            # The Go SDK's id (ojs-go-sdk worker.go): worker_<hostname>_<pid>_<unix nanos>; a pod's
            # hostname is its name, and the worker is the container's first process.
            worker_id = f"worker_{pod.name}_1_{int(pod.first_seen * 1e9)}"
            current.add(worker_id)
            # A quieted worker (drain) stops fetching, as the SDKs do on the quiet directive; read before
            # the heartbeat, which delivers (and may clear) it.
            pod.quiet = pod.quiet or self.server.worker_directive(worker_id) == "quiet"
            self.server.set_worker(worker_id, active_jobs=len(pod.running))
        for gone in self._published_workers - current:
            self.server.remove_worker(gone)
        self._published_workers = current


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]
