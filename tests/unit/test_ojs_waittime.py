"""Wait-time autoscaling, fallback and pause decisions (ojsctrl.ojs.waittime), and the API parts they use."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from ojsctrl.api.worker import (
    AUTOSCALING_PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION,
    AutoscalingStatus,
    parse_pause_annotations,
)
from ojsctrl.ojs.autoscale import History, WorkerScaling
from ojsctrl.ojs.waittime import (
    MIN_COMPLETIONS,
    Estimate,
    Estimator,
    Sample,
    StartupTracker,
    WaitTimeScaling,
    autoscaling_status,
    fallback_decision,
    fallback_replicas,
    lasting_replicas,
    pause_decision,
    settle_provisional,
    wait_time_desired,
    wait_time_recommendation,
)
from tests.ojsserver.world import PodState, Trace, World, spike_then_idle

SCALING = WorkerScaling(min_replicas=0, max_replicas=50, target_jobs_per_worker=1, scale_down_delay=300)
WAIT = WaitTimeScaling(target_wait=30.0, slots_per_pod=4)


def feed(samples: list[tuple[float, int, int, int]], tau: float = 60.0) -> Estimator:
    est = Estimator(time_constant=tau)
    for at, available, active, completed in samples:
        est = est.observe(Sample(at, available, active, completed))
    return est


def steady(
    rate: float, service: float, *, seconds: int = 600, every: int = 15, backlog: int = 0
) -> Estimator:
    """A steady system: ``rate`` jobs/s arrive and complete, ``rate * service`` are active (Little)."""
    active = round(rate * service)
    return feed([(t, backlog, active, round(rate * t)) for t in range(0, seconds + 1, every)])


# ----------------------------------------------------------------------------------------------------
# Estimation


def test_steady_load_gives_rates_and_littles_law() -> None:
    e = steady(2.0, 10.0).estimate()
    assert e.arrival_rate == pytest.approx(2.0, rel=0.01)
    assert e.throughput == pytest.approx(2.0, rel=0.01)
    assert e.service_time == pytest.approx(10.0, rel=0.01)
    assert e.estimated_wait == 0.0
    assert e.recent_completions


def test_burst_raises_arrivals_and_wait_before_throughput() -> None:
    est = steady(1.0, 4.0)
    # 300 jobs arrive within 15 s; the pool completes as before.
    est = est.observe(Sample(615, 300, 4, 615))
    e = est.estimate()
    assert e.arrival_rate is not None and e.arrival_rate > 5.0
    assert e.throughput == pytest.approx(1.0, rel=0.05)
    assert e.estimated_wait == pytest.approx(300 / e.throughput)


def test_counter_reset_counts_completions_since_the_reset() -> None:
    est = steady(2.0, 5.0)
    before = est.estimate()
    # The server restarted: completed went from 1200 to 30 (what it completed since).
    est = est.observe(Sample(615, 0, 10, 30))
    after = est.estimate()
    assert after.throughput is not None and before.throughput is not None
    assert after.throughput == pytest.approx(before.throughput, rel=0.05)
    assert after.arrival_rate is not None and after.arrival_rate >= 0
    # And the estimator carries on from the new base.
    est = est.observe(Sample(630, 0, 10, 60))
    assert est.estimate().throughput == pytest.approx(2.0, rel=0.05)


def test_missed_polls_make_one_longer_interval_not_a_spike() -> None:
    regular = steady(2.0, 5.0, seconds=600)
    # Polls at 615..705 failed; the one at 720 sees six intervals' worth of completions.
    gap = regular.observe(Sample(720, 0, 10, 1440))
    assert gap.estimate().throughput == pytest.approx(2.0, rel=0.01)
    assert gap.estimate().arrival_rate == pytest.approx(2.0, rel=0.01)


def test_ewma_weight_follows_elapsed_time() -> None:
    est = feed([(0, 0, 0, 0), (10, 0, 0, 10)], tau=60)  # 1/s
    est = est.observe(Sample(70, 0, 0, 190))  # 3/s over 60 s: weight 1 - e^-1
    expected = 1 + (1 - math.exp(-1)) * (3 - 1)
    assert est.estimate().throughput == pytest.approx(expected)


def test_duplicate_or_backwards_sample_restarts_the_interval() -> None:
    est = steady(2.0, 5.0)
    rate = est.estimate().throughput
    est = est.observe(Sample(500, 0, 10, 99999))  # clock stepped back: no rate from it
    assert est.estimate().throughput == rate
    assert est.last == Sample(500, 0, 10, 99999)


def test_no_completions_keeps_the_last_service_time_and_unknown_wait() -> None:
    est = steady(1.0, 8.0)
    est = est.observe(Sample(615, 20, 8, 600))  # nothing completed in this interval
    e = est.estimate()
    assert e.service_time is not None and e.service_time > 0
    assert not e.recent_completions
    fresh = feed([(0, 5, 0, 0), (15, 9, 0, 0)]).estimate()
    assert fresh.service_time is None and fresh.estimated_wait is None


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="counts"):
        Estimator().observe(Sample(0, -1, 0, 0))


# ----------------------------------------------------------------------------------------------------
# Sizing


@pytest.mark.parametrize(
    ("name", "available", "active", "estimate", "ready", "startup", "expected"),
    [
        # 2/s x 10 s = 20 busy slots = 5 pods of 4.
        ("steady", 0, 20, Estimate(2.0, 2.0, 10.0, 0.0, True), 5, 0.0, 5),
        # Plus 120 waiting drained in 30 s: 120 x 10 / 30 = 40 slots -> 60 slots = 15 pods.
        ("backlog, pods ready", 120, 20, Estimate(2.0, 2.0, 10.0, 60.0, True), 20, 20.0, 15),
        # New pods come after 20 s of start-up: drain in 10 s -> 20 + 120 = 140 slots = 35 pods.
        ("backlog, start-up counts", 120, 20, Estimate(2.0, 2.0, 10.0, 60.0, True), 5, 20.0, 35),
        # Start-up longer than the target: a quarter of the target is left, 7.5 s, shorter than a job, so
        # one slot per waiting job (the fluid term would ask 160): 20 + 120 = 140 slots = 35 pods.
        ("start-up beyond target", 120, 20, Estimate(2.0, 2.0, 10.0, 60.0, True), 5, 60.0, 35),
        ("idle", 0, 0, Estimate(0.0, 0.0, 10.0, 0.0, False), 3, 0.0, 0),
        # Jobs complete between polls (nothing left waiting or active): keep one pod.
        ("recent completions", 0, 0, Estimate(0.1, 0.1, 1.0, 0.0, True), 1, 0.0, 1),
        # Never measured: one slot per job present.
        ("no service time", 9, 0, Estimate(None, None, None, None, False), 0, 0.0, 3),
        # Arrivals stopped while 10 long jobs run: keep their slots (3 pods), do not interrupt them.
        ("running jobs floor", 0, 10, Estimate(0.01, 0.05, 200.0, 0.0, True), 3, 0.0, 3),
    ],
)
def test_wait_time_recommendation(
    name: str, available: int, active: int, estimate: Estimate, ready: int, startup: float, expected: int
) -> None:
    n, why = wait_time_recommendation(
        available, active, estimate, ready=ready, startup_latency=startup, spec=WAIT
    )
    assert n == expected, (name, why)
    assert why


def test_idle_scales_to_zero_after_the_window() -> None:
    idle = Estimate(0.0, 0.0, 5.0, 0.0, False)
    h = History()
    d = wait_time_desired(0, 0, 3, SCALING, WAIT, idle, h, 0.0, ready=3, startup_latency=0.0)
    assert d.desired == 3 and d.reason == "ScaleDownStabilizing"
    for t in range(15, 301, 15):
        d = wait_time_desired(0, 0, 3, SCALING, WAIT, idle, d.history, float(t), ready=3, startup_latency=0.0)
    assert d.desired == 0 and d.reason == "ScaledDown"


def test_busy_never_scales_to_zero() -> None:
    busy = Estimate(0.0, 0.0, 5.0, 0.0, False)
    d = wait_time_desired(0, 1, 2, SCALING, WAIT, busy, History(), 0.0, ready=2, startup_latency=0.0)
    for t in range(15, 901, 15):
        d = wait_time_desired(
            0, 1, d.desired, SCALING, WAIT, busy, d.history, float(t), ready=2, startup_latency=0
        )
    assert d.desired == 1


def test_activation_from_zero_and_threshold() -> None:
    fresh = Estimate(None, None, None, None, False)
    spec = WorkerScaling(0, 10, 1, scale_up_threshold=5)
    d = wait_time_desired(3, 0, 0, spec, WAIT, fresh, History(), 0.0, ready=0, startup_latency=0.0)
    assert (d.desired, d.reason) == (1, "Activated")
    d = wait_time_desired(40, 0, 0, spec, WAIT, fresh, History(), 0.0, ready=0, startup_latency=0.0)
    assert (d.desired, d.reason) == (10, "Activated")
    est = Estimate(1.0, 1.0, 10.0, 5.0, True)
    d = wait_time_desired(5, 0, 1, spec, WAIT, est, History(), 0.0, ready=1, startup_latency=0.0)
    assert d.reason == "BelowScaleUpThreshold" and d.desired == 1


def test_burst_scales_up_at_once_and_bounds_apply() -> None:
    est = Estimate(20.0, 2.0, 10.0, 500.0, True)
    spec = WorkerScaling(1, 12, 1)
    d = wait_time_desired(1000, 20, 5, spec, WAIT, est, History(), 0.0, ready=5, startup_latency=10.0)
    assert d.direction == "up" and d.desired == 12 and d.reason == "ScaledUp"
    assert "busy slots" in d.message


def test_missing_data_holds() -> None:
    est = Estimate(20.0, 2.0, 10.0, 500.0, True)
    d = wait_time_desired(
        0, 0, 7, SCALING, WAIT, est, History(), 0.0, ready=7, startup_latency=0.0, stats_available=False
    )
    assert (d.desired, d.reason) == (7, "StatsUnavailable")


# ----------------------------------------------------------------------------------------------------
# Start-up latency


def test_startup_tracker_measures_decision_to_ready() -> None:
    t = StartupTracker().scaled_up(100.0, 5)
    t = t.observe(110.0, 3)
    assert t.latency is None and t.value(15.0) == 15.0
    t = t.observe(125.0, 5)
    assert t.latency == 25.0 and t.samples == 1 and t.pending_since is None
    t = t.scaled_up(200.0, 8).observe(215.0, 8)
    assert t.latency == pytest.approx(20.0)  # 25 and 15 weighed 1:1


def test_startup_tracker_follows_a_lowered_target() -> None:
    t = StartupTracker().scaled_up(0.0, 10).observe(30.0, 4, desired=4)
    assert t.latency == 30.0


# ----------------------------------------------------------------------------------------------------
# Fallback


@pytest.mark.parametrize(
    ("behavior", "current", "expected"),
    [
        ("static", 2, 6),
        ("static", 9, 6),
        ("currentReplicas", 2, 2),
        ("currentReplicasIfHigher", 9, 9),
        ("currentReplicasIfHigher", 2, 6),
        ("currentReplicasIfLower", 2, 2),
        ("currentReplicasIfLower", 9, 6),
    ],
)
def test_fallback_behaviors_follow_keda(behavior: str, current: int, expected: int) -> None:
    assert fallback_replicas(behavior, 6, current) == expected  # type: ignore[arg-type]
    d = fallback_decision(
        current,
        WorkerScaling(1, 8, 1),
        History(),
        0.0,
        consecutive_failures=4,
        failure_threshold=3,
        replicas=6,
        behavior=behavior,  # type: ignore[arg-type]
    )
    assert d is not None and d.reason == "Fallback"
    assert d.desired == min(expected, 8)


def test_fallback_waits_for_more_failures_than_the_threshold() -> None:
    args = {"failure_threshold": 3, "replicas": 1, "behavior": "static"}
    assert fallback_decision(5, SCALING, History(), 0.0, consecutive_failures=3, **args) is None  # type: ignore[arg-type]
    d = fallback_decision(5, SCALING, History(), 0.0, consecutive_failures=4, **args)  # type: ignore[arg-type]
    assert d is not None and d.desired == 1 and d.direction == "down"


def test_after_a_fallback_good_data_waits_a_window_before_scaling_down() -> None:
    d = fallback_decision(
        2, SCALING, History(), 0.0, consecutive_failures=4, failure_threshold=3, replicas=6, behavior="static"
    )
    assert d is not None and d.desired == 6
    idle = Estimate(0.0, 0.0, 5.0, 0.0, False)
    d = wait_time_desired(0, 0, 6, SCALING, WAIT, idle, d.history, 15.0, ready=6, startup_latency=0.0)
    assert d.desired == 6 and d.reason == "ScaleDownStabilizing"


# ----------------------------------------------------------------------------------------------------
# Pause


def test_pause_annotations_and_decision() -> None:
    until = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)
    p = parse_pause_annotations(
        {AUTOSCALING_PAUSED_ANNOTATION: "2026-12-05T13:00:00Z", PAUSED_REPLICAS_ANNOTATION: "3"}
    )
    assert (p.paused, p.until, p.replicas, p.error) == (True, until, 3, None)
    before, after = until.timestamp() - 60, until.timestamp() + 1
    out = pause_decision(7, History(), before, paused=p.paused, until=until.timestamp(), replicas=p.replicas)
    assert out.paused and out.decision is not None and out.decision.desired == 3
    assert out.reason == "PausedUntil" and "60s" in out.message
    out = pause_decision(7, History(), after, paused=p.paused, until=until.timestamp(), replicas=p.replicas)
    assert not out.paused and out.expired and out.decision is None and out.reason == "PauseExpired"


@pytest.mark.parametrize(
    ("annotations", "paused", "replicas", "error"),
    [
        ({}, False, None, None),
        ({AUTOSCALING_PAUSED_ANNOTATION: "true"}, True, None, None),
        ({AUTOSCALING_PAUSED_ANNOTATION: "false"}, False, None, None),
        ({PAUSED_REPLICAS_ANNOTATION: "0"}, True, 0, None),
        ({AUTOSCALING_PAUSED_ANNOTATION: "false", PAUSED_REPLICAS_ANNOTATION: "2"}, False, 2, None),
        ({AUTOSCALING_PAUSED_ANNOTATION: "tomorrow"}, False, None, AUTOSCALING_PAUSED_ANNOTATION),
        ({AUTOSCALING_PAUSED_ANNOTATION: "2026-12-05"}, False, None, AUTOSCALING_PAUSED_ANNOTATION),
        (
            {AUTOSCALING_PAUSED_ANNOTATION: "true", PAUSED_REPLICAS_ANNOTATION: "-1"},
            True,
            None,
            PAUSED_REPLICAS_ANNOTATION,
        ),
        ({PAUSED_REPLICAS_ANNOTATION: "many"}, False, None, PAUSED_REPLICAS_ANNOTATION),
        (
            {AUTOSCALING_PAUSED_ANNOTATION: "soon", PAUSED_REPLICAS_ANNOTATION: "2"},
            True,
            2,
            AUTOSCALING_PAUSED_ANNOTATION,
        ),
    ],
)
def test_parse_pause_annotations(
    annotations: dict[str, str], paused: bool, replicas: int | None, error: str | None
) -> None:
    p = parse_pause_annotations(annotations)
    assert (p.paused, p.replicas) == (paused, replicas)
    if error is None:
        assert p.error is None
    else:
        assert p.error is not None and error in p.error
        assert all(repr(v) in p.error for k, v in annotations.items() if k in p.error)


def test_pause_without_replicas_holds_current() -> None:
    out = pause_decision(4, History(), 0.0, paused=True)
    assert out.decision is not None and out.decision.desired == 4 and out.decision.direction == "none"
    assert out.reason == "Paused"
    assert not pause_decision(4, History(), 0.0, paused=False).paused


# ----------------------------------------------------------------------------------------------------
# Status


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.04, "0s"), (12.34, "12.3s"), (60.0, "1m0s"), (3725.06, "1h2m5.1s"), (-1.0, "0s")],
)
def test_status_durations_are_go_durations(seconds: float, text: str) -> None:
    from ojsctrl.api.durations import is_duration
    from ojsctrl.ojs.waittime import _duration

    assert _duration(seconds) == text and is_duration(text)


def test_status_block_validates_against_the_api_model() -> None:
    est = steady(2.0, 10.0).estimate()
    d = wait_time_desired(0, 20, 5, SCALING, WAIT, est, History(), 0.0, ready=5, startup_latency=12.34)
    block = autoscaling_status("waitTime", d, available=0, active=20, estimate=est, startup_latency=12.34)
    model = AutoscalingStatus.model_validate(block)
    assert model.desired_replicas == d.desired and model.reason == d.reason
    assert model.inputs is not None and model.inputs.service_time == "10s"
    assert model.inputs.startup_latency == "12.3s" and model.inputs.arrival_rate == "2"
    assert model.model_dump(by_alias=True, exclude_none=True) == block


def test_service_time_is_used_after_enough_completions() -> None:
    # 2 jobs/s of 10 s: the first completions come 10 s in, the tenth soon after.
    est = Estimator()
    at = 0.0
    seen_none_with_completions = False
    while est.estimate().service_time is None:
        at += 1.0
        done = max(0, round(2 * (at - 10)))
        est = est.observe(Sample(at, 0, min(20, round(2 * at)), done))
        seen_none_with_completions |= 0 < est.completions < MIN_COMPLETIONS
        assert at < 60
    assert seen_none_with_completions
    assert est.completions >= MIN_COMPLETIONS and est.estimate().measured_at == est.measured_at == at


def test_provisional_scale_up_settles_once_measured() -> None:
    spec = WorkerScaling(0, 50, 1, scale_down_delay=300)
    wait = WaitTimeScaling(30.0, 4)
    unmeasured = Estimate(None, None, None, None, False)
    # 40 jobs piled up while the first pods started: one slot per job, 10 pods.
    d = wait_time_desired(
        40, 0, 2, spec, wait, unmeasured, History(since=0.0), 20.0, ready=0, startup_latency=15.0
    )
    assert (d.direction, d.desired) == ("up", 10)
    # Measured at 25 s: 2/s x 2 s = 4 busy slots, one pod; down at once, not after 300 s.
    measured = Estimate(2.0, 2.0, 2.0, 0.0, True, measured_at=25.0)
    d2 = wait_time_desired(0, 4, 10, spec, wait, measured, d.history, 25.0, ready=10, startup_latency=15.0)
    assert (d2.direction, d2.desired) == ("down", 1), d2.message
    # From then on the window applies to measured recommendations: a dip below them holds.
    busier = Estimate(4.0, 4.0, 2.0, 0.0, True, measured_at=25.0)
    d3 = wait_time_desired(0, 8, 1, spec, wait, busier, d2.history, 30.0, ready=1, startup_latency=15.0)
    assert d3.desired == 2
    d4 = wait_time_desired(0, 4, 2, spec, wait, measured, d3.history, 35.0, ready=2, startup_latency=15.0)
    assert (d4.desired, d4.reason) == (2, "ScaleDownStabilizing")


def test_a_step_up_in_arrivals_is_seen_within_a_few_polls_a_rare_job_is_not() -> None:
    # 1 job/s for 10 minutes, then 10 jobs/s: three polls of 5 s later the rate reads at least 8/s.
    samples = [(float(t), 0, 2, t) for t in range(0, 601, 5)]
    samples += [(600.0 + t, 0, 2 + min(18, 2 * t), 600 + 10 * t) for t in range(5, 16, 5)]
    assert feed(samples).estimate().arrival_rate == pytest.approx(10.0, rel=0.2)
    # One job arriving in 5 s against 0.05/s: the fast window holds under 10 jobs, so it is ignored.
    quiet = [(float(t), 0, 9, t // 20) for t in range(0, 601, 5)] + [(605.0, 0, 10, 30)]
    assert (feed(quiet).estimate().arrival_rate or 0) < 0.1


def test_the_window_keeps_the_lasting_part_not_the_backlog() -> None:
    spec = WorkerScaling(0, 50, 1, scale_down_delay=300)
    wait = WaitTimeScaling(30.0, 4)
    steady = Estimate(2.0, 2.0, 2.0, 0.0, True, measured_at=0.0)
    history = History(since=-1000.0)
    # 120 waiting: drain slots 120 x 2 / 30 = 8 on top of 4 busy slots, 3 pods; keeps 1.
    d = wait_time_desired(120, 4, 1, spec, wait, steady, history, 100.0, ready=1, startup_latency=0.0)
    assert (d.direction, d.desired) == ("up", 3)
    assert lasting_replicas(4, steady, wait) == 1
    assert (
        lasting_replicas(4, Estimate(None, None, None, None, False), wait) is None
    )  # provisional: kept whole
    # Drained 20 s later: back to 1 pod at once, not after 300 s.
    d2 = wait_time_desired(0, 4, 3, spec, wait, steady, d.history, 120.0, ready=3, startup_latency=0.0)
    assert (d2.direction, d2.desired) == ("down", 1), d2.message
    # An arrival dip still waits for the window: the lasting part was 2 pods 20 s ago.
    busy = Estimate(4.0, 4.0, 2.0, 0.0, True, measured_at=0.0)
    long_ago = History(since=-1000.0)
    d3 = wait_time_desired(0, 8, 2, spec, wait, busy, long_ago, 200.0, ready=2, startup_latency=0.0)
    d4 = wait_time_desired(0, 4, 2, spec, wait, steady, d3.history, 220.0, ready=2, startup_latency=0.0)
    assert (d4.desired, d4.reason) == (2, "ScaleDownStabilizing")


def test_settle_leaves_other_histories_alone() -> None:
    provisional = History(since=0.0, last_scale_up=10.0).record(10.0, 8, 300)
    # Not measured yet, or measured before the last scale-up: unchanged.
    assert settle_provisional(provisional, None, 30.0, 300) is provisional
    assert settle_provisional(provisional, 5.0, 30.0, 300) is provisional
    # After an operator restart (good data since 100, no scale-up since): unchanged.
    restarted = History(since=100.0, last_scale_up=10.0).record(100.0, 8, 300)
    assert settle_provisional(restarted, 110.0, 120.0, 300) is restarted
    # The pool was raised on a guess in this run: the guess leaves the window, which counts as seen.
    settled = settle_provisional(provisional, 20.0, 30.0, 300)
    assert settled.recommendations == () and settled.covers(30.0, 300)
    assert settle_provisional(settled, 20.0, 35.0, 300) is settled


# ----------------------------------------------------------------------------------------------------
# Closed loop: the decisions driving the simulated world, pods Ready after a start-up delay


def closed_loop(trace: Trace, *, target: float, startup: float, grace: float, poll: float = 5.0) -> World:
    """Poll every ``poll`` s, decide with waitTime, create pods Ready ``startup`` s later, delete the least
    busy pods with a ``grace`` s deadline; the world steps every second."""
    world = World(trace, jobs_per_pod=4)
    spec = WorkerScaling(0, 50, 1, scale_down_delay=120)
    wait = WaitTimeScaling(target, 4)
    pods: dict[str, tuple[float, float | None]] = {}
    est, tracker, history = Estimator(), StartupTracker(), History()
    t, made = 0.0, 0
    while t <= trace.duration + 400:
        pods = {k: v for k, v in pods.items() if v[1] is None or v[1] > t}
        states = {k: PodState(ready_at <= t, deadline) for k, (ready_at, deadline) in pods.items()}
        world.step(t, states)
        if t % poll == 0:
            p = world.history[-1]
            live = sorted(k for k, (_, deadline) in pods.items() if deadline is None)
            ready = sum(1 for k in live if states[k].ready)
            est = est.observe(Sample(t, p.available, p.active, p.completed))
            tracker = tracker.observe(t, ready, len(live))
            d = wait_time_desired(
                p.available, p.active, len(live), spec, wait, est.estimate(), history, t,
                ready=ready, startup_latency=tracker.value(),
            )  # fmt: skip
            history = d.history
            if d.direction == "up":
                tracker = tracker.scaled_up(t, d.desired)
                for _ in range(d.desired - len(live)):
                    pods[f"p{made}"] = (t + startup, None)
                    made += 1
            elif d.direction == "down":
                idle_first = sorted(live, key=lambda k: len(world.pods[k].running) if k in world.pods else -1)
                for k in idle_first[: len(live) - d.desired]:
                    pods[k] = (pods[k][0], t + grace)
        t += 1.0
    return world


def test_closed_loop_bounds_waits_scales_to_zero_and_back() -> None:
    trace = spike_then_idle(rate=3.0, spike=90, idle=400, again=60, job=2.0)
    world = closed_loop(trace, target=30.0, startup=10.0, grace=30.0)
    s = world.summary()
    assert s["completed"] == s["jobs"] > 300
    assert s["wait_p95"] <= 30.0, s
    # Grace (30 s) far above the job length: nothing is interrupted.
    assert s["interrupted"] == 0
    # Idle in between: down to zero pods, then back for the second spike.
    assert any(p.pods == 0 for p in world.history if 200 < p.t < 490)
    assert len(s["first_ready_from_zero"]) == 2
