"""Autoscaling decisions and drain planning: tables for the rules, hypothesis for the invariants."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojsctrl.ojs.autoscale import (
    IDLE_DELETION_COST,
    MAX_HISTORY,
    Decision,
    History,
    Recommendation,
    WorkerScaling,
    initial_replicas,
    plan_drain,
    server_desired,
    worker_desired,
)
from ojsctrl.ojs.model import WorkerInfo

# A history that has already watched for longer than any window in these tests.
SEASONED = History(since=-1e9)


def spec(
    lo: int = 0, hi: int = 10, target: int = 10, threshold: int = 0, delay: float = 300
) -> WorkerScaling:
    return WorkerScaling(lo, hi, target, threshold, delay)


# ---- worker: one decision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    load: int
    current: int
    spec: WorkerScaling
    desired: int
    reason: str
    available: bool = True


WORKER_ROWS = {
    "scale up to ceil(load/target)": Row(41, 1, spec(), 5, "ScaledUp"),
    "clamped to max": Row(10_000, 2, spec(hi=6), 6, "ScaledUp"),
    "at target": Row(30, 3, spec(), 3, "Stable"),
    "threshold blocks scale-up": Row(50, 2, spec(threshold=50), 2, "BelowScaleUpThreshold"),
    "above threshold scales": Row(51, 2, spec(threshold=50), 6, "ScaledUp"),
    "activation 0 -> 1 below threshold": Row(3, 0, spec(threshold=100), 1, "Activated"),
    "activation straight to recommendation": Row(35, 0, spec(threshold=10), 4, "Activated"),
    "no activation without load": Row(0, 0, spec(), 0, "Stable"),
    "max 0 never activates": Row(5, 0, spec(hi=0), 0, "Stable"),
    "below min is raised despite threshold": Row(0, 1, spec(lo=3, threshold=5), 3, "BelowMinReplicas"),
    "scale down once the window is covered": Row(0, 4, spec(), 0, "ScaledDown"),
    "above max, window covered": Row(0, 20, spec(lo=1, hi=5), 1, "ScaledDown"),
    "stats unavailable holds": Row(0, 7, spec(), 7, "StatsUnavailable", available=False),
    "stats unavailable never scales to zero": Row(0, 1, spec(lo=0), 1, "StatsUnavailable", available=False),
    "stats unavailable still clamps": Row(0, 15, spec(hi=9), 9, "AboveMaxReplicas", available=False),
}


@pytest.mark.parametrize("row", WORKER_ROWS.values(), ids=WORKER_ROWS.keys())
def test_worker_rules(row: Row) -> None:
    d = worker_desired(row.load, row.current, row.spec, SEASONED, 1000.0, stats_available=row.available)
    assert (d.desired, d.reason) == (row.desired, row.reason), d.message
    expected_direction = (
        "up" if row.desired > row.current else "down" if row.desired < row.current else "none"
    )
    assert d.direction == expected_direction


def test_above_max_is_lowered_at_once() -> None:
    d = worker_desired(0, 20, spec(lo=1, hi=5), History(), 0.0)
    assert (d.desired, d.reason, d.direction) == (5, "AboveMaxReplicas", "down")


def test_worker_scale_down_waits_for_the_window() -> None:
    s = spec(delay=300)
    d = worker_desired(100, 0, s, History(), 0.0)
    assert (d.desired, d.reason) == (10, "Activated") and not d.waits_on_time
    d = worker_desired(0, 10, s, d.history, 10.0)
    assert (d.desired, d.reason) == (10, "ScaleDownStabilizing") and d.waits_on_time
    d = worker_desired(0, 10, s, d.history, 299.0)
    assert d.desired == 10
    d = worker_desired(0, 10, s, d.history, 311.0)
    assert (d.desired, d.reason, d.direction) == (0, "ScaledDown", "down")
    assert d.history.last_scale_down == 311.0


def test_worker_window_uses_highest_recommendation() -> None:
    s = spec(delay=100)
    h = History(since=-1000.0)
    for t, load in [(0, 80), (40, 50), (80, 20)]:
        h = worker_desired(load, 8, s, h, float(t)).history
    d = worker_desired(10, 8, s, h, 110.0)  # 80 fell out of the window; 50 (at t=40) is the max
    assert (d.desired, d.reason) == (5, "ScaledDown")
    d = worker_desired(10, 5, s, d.history, 145.0)  # 50 out, 20 (t=80) is the max
    assert d.desired == 2


def test_fresh_history_never_scales_down_at_once() -> None:
    """After an operator restart the window starts again: no early scale-down."""
    d = worker_desired(0, 6, spec(delay=60), History(), 5000.0)
    assert (d.desired, d.reason) == (6, "ScaleDownStabilizing")
    d = worker_desired(0, 6, spec(delay=60), d.history, 5060.0)
    assert d.desired == 0


def test_outage_counts_as_holding() -> None:
    s = spec(delay=60)
    h = SEASONED
    for t in range(0, 600, 30):
        d = worker_desired(0, 5, s, h, float(t), stats_available=False)
        assert (d.desired, d.reason) == (5, "StatsUnavailable")
        h = d.history
    d = worker_desired(0, 5, s, h, 600.0)  # stats are back, low: wait a whole window first
    assert d.reason == "ScaleDownStabilizing"
    d = worker_desired(0, 5, s, d.history, 661.0)
    assert d.desired == 0


def test_initial_replicas() -> None:
    assert initial_replicas(1, 2, 5) == 2
    assert initial_replicas(9, 2, 5) == 5
    assert initial_replicas(0, 0, 5) == 0
    assert initial_replicas(3, 2, 5) == 3


@pytest.mark.parametrize(
    "args",
    [(-1, 5, 1, 0, 0), (3, 2, 1, 0, 0), (0, 5, 0, 0, 0), (0, 5, 1, -1, 0), (0, 5, 1, 0, -1)],
)
def test_worker_scaling_validates(args: tuple[int, int, int, int, float]) -> None:
    with pytest.raises(ValueError):
        WorkerScaling(*args)


# ---- server ----------------------------------------------------------------------------------------------


def server(depth: int, current: int, history: History, now: float, *, available: bool = True) -> Decision:
    return server_desired(
        depth,
        current,
        min_replicas=2,
        max_replicas=8,
        target_queue_depth=100,
        scale_up_cooldown=60,
        scale_down_cooldown=300,
        history=history,
        now=now,
        stats_available=available,
    )


def test_server_rules() -> None:
    assert server(450, 2, SEASONED, 0).desired == 5
    assert server(0, 5, SEASONED, 0).desired == 2
    assert server(10**9, 2, SEASONED, 0).desired == 8
    assert server(0, 1, SEASONED, 0).desired == 2  # below min
    assert server(0, 3, History(), 0).reason == "ScaleDownStabilizing"
    held = server(10**9, 4, SEASONED, 0, available=False)
    assert (held.desired, held.reason) == (4, "StatsUnavailable")


def test_server_scale_up_cooldown() -> None:
    d = server(300, 2, SEASONED, 0.0)
    assert (d.desired, d.reason, d.history.last_scale_up) == (3, "ScaledUp", 0.0)
    d = server(700, 3, d.history, 30.0)
    assert (d.desired, d.reason) == (3, "ScaleUpCooldown") and d.waits_on_time
    assert "30s left" in d.message
    d = server(700, 3, d.history, 60.0)
    assert (d.desired, d.reason) == (7, "ScaledUp")


def test_server_cooldown_never_blocks_min() -> None:
    h = History(since=-1e9, last_scale_up=0.0)
    d = server_desired(
        0,
        1,
        min_replicas=3,
        max_replicas=8,
        target_queue_depth=100,
        scale_up_cooldown=600,
        scale_down_cooldown=300,
        history=h,
        now=1.0,
    )
    assert (d.desired, d.reason) == (3, "BelowMinReplicas")


def test_server_validates() -> None:
    with pytest.raises(ValueError):
        server_desired(
            0,
            1,
            min_replicas=0,
            max_replicas=8,
            target_queue_depth=1,
            scale_up_cooldown=0,
            scale_down_cooldown=0,
            history=History(),
            now=0,
        )
    with pytest.raises(ValueError):
        server(-1, 2, History(), 0)


# ---- history ---------------------------------------------------------------------------------------------


def test_history_is_bounded_and_conservative() -> None:
    h = History()
    for i in range(200):
        h = h.record(float(i), 1000 - i, window=10_000)
    assert len(h.recommendations) <= MAX_HISTORY
    # Merging keeps higher values for longer: the window max never drops below the truth.
    assert h.window_max(199.0, 10_000) == 1000
    # Rising recommendations replace the ones they dominate.
    h2 = History().record(0, 1, 100).record(1, 2, 100).record(2, 5, 100)
    assert h2.recommendations == (Recommendation(2, 5),)


def test_clock_stepping_back_is_clamped() -> None:
    h = History(since=1000.0, last_scale_up=1000.0).record(1000.0, 9, 300)
    d = worker_desired(0, 9, spec(delay=300), h, 10.0)  # the clock went back 990 s
    assert d.desired == 9  # a restarted window, not a scale-down
    assert all(r.at <= 10.0 for r in d.history.recommendations)
    assert d.history.last_scale_up == 10.0


# ---- invariants ------------------------------------------------------------------------------------------

_steps = st.lists(
    st.tuples(
        st.integers(0, 400),  # load
        st.floats(0, 200, allow_nan=False),  # seconds since the previous step
        st.sampled_from([True, True, True, False]),  # stats available
    ),
    min_size=1,
    max_size=40,
)


@st.composite
def worker_specs(draw: st.DrawFn) -> WorkerScaling:
    lo = draw(st.integers(0, 4))
    return WorkerScaling(
        lo,
        draw(st.integers(lo, 12)),
        draw(st.integers(1, 30)),
        draw(st.integers(0, 60)),
        draw(st.sampled_from([0.0, 15.0, 60.0, 300.0])),
    )


@settings(max_examples=300, deadline=None)
@given(s=worker_specs(), start=st.integers(0, 15), steps=_steps)
def test_worker_invariants(s: WorkerScaling, start: int, steps: list[tuple[int, float, bool]]) -> None:
    current, history, now = start, History(), 0.0
    log: list[tuple[float, int]] = []
    first = None
    for load, dt, available in steps:
        now += dt
        first = now if first is None else first
        d = worker_desired(load, current, s, history, now, stats_available=available)
        log.append((now, d.recommended))
        assert s.min_replicas <= d.desired <= s.max_replicas
        assert len(d.history.recommendations) <= MAX_HISTORY
        if not available:
            assert d.desired == min(max(current, s.min_replicas), s.max_replicas)
        if d.direction == "up" and load <= s.scale_up_threshold:
            activating = current == 0 and d.desired == min(max(1, s.min_replicas), s.max_replicas)
            assert activating or (current < s.min_replicas and d.desired == s.min_replicas)
        if d.direction == "down" and current <= s.max_replicas:
            window = s.scale_down_delay
            assert now - first >= window
            assert max(r for t, r in log if t >= now - window) <= d.desired
        history, current = d.history, d.desired


@settings(max_examples=200, deadline=None)
@given(
    bounds=st.tuples(st.integers(1, 5), st.integers(0, 8)),
    target=st.integers(1, 200),
    cooldowns=st.tuples(st.sampled_from([0.0, 30.0, 120.0]), st.sampled_from([0.0, 60.0, 300.0])),
    start=st.integers(0, 15),
    steps=_steps,
)
def test_server_invariants(
    bounds: tuple[int, int],
    target: int,
    cooldowns: tuple[float, float],
    start: int,
    steps: list[tuple[int, float, bool]],
) -> None:
    lo, hi = bounds[0], bounds[0] + bounds[1]
    up_cooldown, window = cooldowns
    current, history, now = start, History(), 0.0
    log: list[tuple[float, int]] = []
    last_up: float | None = None
    first = None
    for depth, dt, available in steps:
        now += dt
        first = now if first is None else first
        d = server_desired(
            depth * 10,
            current,
            min_replicas=lo,
            max_replicas=hi,
            target_queue_depth=target,
            scale_up_cooldown=up_cooldown,
            scale_down_cooldown=window,
            history=history,
            now=now,
            stats_available=available,
        )
        log.append((now, d.recommended))
        assert lo <= d.desired <= hi
        if not available:
            assert d.desired == min(max(current, lo), hi)
        if d.reason == "ScaledUp":
            assert last_up is None or now - last_up >= up_cooldown
        if d.direction == "up":
            last_up = now
        if d.direction == "down" and current <= hi:
            assert now - first >= window
            assert max(r for t, r in log if t >= now - window) <= d.desired
        history, current = d.history, d.desired


# ---- drain planning --------------------------------------------------------------------------------------


def test_drain_picks_idle_pods_first() -> None:
    pods = ["w-a", "w-b", "w-c", "w-d"]
    workers = [
        WorkerInfo("w-a", 3),
        WorkerInfo("w-b", 0),
        WorkerInfo("w-c", 0, "quiet"),
        WorkerInfo("w-d", 1),
    ]
    plan = plan_drain(pods, workers, current=4, desired=1)
    assert plan.victims == ("w-c", "w-b")  # already quiet first
    assert plan.quiet == ("w-b",)
    assert plan.replicas == 2 and plan.draining and not plan.unmatched
    assert dict(plan.deletion_costs) == {
        "w-a": 3,
        "w-b": IDLE_DELETION_COST,
        "w-c": IDLE_DELETION_COST,
        "w-d": 1,
    }


def test_drain_shrinks_by_at_most_needed() -> None:
    workers = [WorkerInfo(f"w-{i}", 0) for i in range(5)]
    plan = plan_drain([w.id for w in workers], workers, current=5, desired=3)
    assert plan.replicas == 3 and not plan.draining
    assert plan.victims == ("w-0", "w-1")
    assert sorted(plan.deletion_costs.values()) == [IDLE_DELETION_COST, IDLE_DELETION_COST, 0, 0, 0]


def test_drain_removes_not_ready_idle_pods_first() -> None:
    # The ReplicaSet removes pods that are not ready before it weighs costs: idle ones among them go first.
    workers = [WorkerInfo("a", 0), WorkerInfo("b", 0), WorkerInfo("c", 2)]
    plan = plan_drain(["a", "b", "c"], workers, current=3, desired=2, not_ready=["b"])
    assert plan.victims == ("b",) and plan.replicas == 2


def test_drain_busy_pod_not_ready_limits_the_step() -> None:
    # A busy pod that is not ready would go before any ready idle pod whatever its cost, so the step
    # shrinks only by the idle pods that also rank before it.
    workers = [WorkerInfo("a", 0), WorkerInfo("b", 0), WorkerInfo("c", 3), WorkerInfo("d", 3)]
    plan = plan_drain(["a", "b", "c", "d"], workers, current=4, desired=1, not_ready=["b", "c", "d"])
    assert plan.victims == ("b",) and plan.replicas == 3 and plan.draining
    held = plan_drain(["a", "b", "c", "d"], workers, current=4, desired=1, not_ready=["c"])
    assert held.victims == () and held.replicas == 4 and held.draining


def test_drain_all_busy_holds() -> None:
    workers = [WorkerInfo("p1", 2), WorkerInfo("p2", 5)]
    plan = plan_drain(["p1", "p2", "p3"], workers, current=3, desired=1)
    assert plan.replicas == 3 and plan.draining and plan.victims == ()
    assert dict(plan.deletion_costs) == {"p1": 2, "p2": 5, "p3": 0}


def test_drain_unmatched_is_plain_scale_down() -> None:
    plan = plan_drain(["pod-1", "pod-2"], [WorkerInfo("hostname-x", 0)], current=2, desired=1)
    assert plan.unmatched and plan.replicas == 1
    assert plan.deletion_costs == {} and plan.quiet == ()


def test_drain_not_needed_when_not_shrinking() -> None:
    plan = plan_drain(["a"], [WorkerInfo("a", 0)], current=1, desired=3)
    assert plan.replicas == 3 and not plan.unmatched and plan.victims == ()


@settings(max_examples=200, deadline=None)
@given(
    jobs=st.lists(st.one_of(st.none(), st.integers(0, 3)), max_size=12),
    extra=st.lists(st.integers(0, 3), max_size=3),
    desired=st.integers(0, 12),
)
def test_drain_invariants(jobs: list[int | None], extra: list[int], desired: int) -> None:
    pods = [f"pod-{i}" for i in range(len(jobs))]
    workers = [WorkerInfo(p, n) for p, n in zip(pods, jobs, strict=True) if n is not None]
    workers += [WorkerInfo(f"elsewhere-{i}", n) for i, n in enumerate(extra)]
    current = len(pods)
    plan = plan_drain(pods, workers, current, desired)
    if desired >= current:
        assert plan.replicas == desired
        return
    if plan.unmatched:
        assert all(n is None for n in jobs) and plan.replicas == desired
        return
    assert desired <= plan.replicas <= current
    assert current - plan.replicas == len(plan.victims)
    busy = {w.id for w in workers if w.active_jobs > 0}
    assert not busy & set(plan.victims)
    assert set(plan.quiet) <= set(plan.victims)
    assert set(plan.deletion_costs) == set(pods)
    assert {p for p, c in plan.deletion_costs.items() if c == IDLE_DELETION_COST} == set(plan.victims)
    assert plan.draining == (plan.replicas > desired)
