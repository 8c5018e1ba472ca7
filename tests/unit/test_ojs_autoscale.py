"""Autoscaling decisions, hold samples across outages, and drain planning (matching OJS workers to pods):
tables for the rules, hypothesis for the invariants."""

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
from ojsctrl.ojs.drain import (
    IDLE_KEPT_DELETION_COST,
    UNMATCHED_DELETION_COST,
    match_workers,
    pod_of,
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


def test_a_load_longer_than_the_window_still_holds_the_pool_a_whole_window_after_it_ends() -> None:
    """An OJSWorker is evaluated when its counts move, not on a timer: the recommendation made when the
    load came stays in force until the poll that showed it gone (``inputs_since``), so the window runs
    from then, not from the last evaluation (which may be far older than the window)."""
    s = spec(lo=1, hi=2, delay=10)
    d = worker_desired(15, 1, s, History(since=-100.0), 0.0)
    assert (d.desired, d.reason) == (2, "ScaledUp")
    # 40 s of the same load with no evaluation; the idle counts were first seen at 40, read at 41.
    d = worker_desired(0, 2, s, d.history, 41.0, inputs_since=40.0)
    assert (d.desired, d.reason) == (2, "ScaleDownStabilizing")
    assert d.retry_at == 50.0, "comes back when the 2 made until 40 leaves the 10 s window"
    d = worker_desired(0, 2, s, d.history, 50.0, inputs_since=40.0)
    assert d.desired == 2, "the window compares with >=: still in it at exactly 50"
    d = worker_desired(0, 2, s, d.history, 50.05, inputs_since=40.0)
    assert (d.desired, d.reason, d.retry_at) == (1, "ScaledDown", None)
    # Without ``inputs_since`` (a caller evaluating on a timer) the old point samples stand.
    d = worker_desired(15, 1, s, History(since=-100.0), 0.0)
    assert worker_desired(0, 2, s, d.history, 41.0).desired == 1


def test_carried_retimes_only_the_newest_recommendation_and_only_forward() -> None:
    h = History(recommendations=(Recommendation(0.0, 5), Recommendation(10.0, 3)), since=0.0)
    assert h.carried(5.0) is h
    assert h.carried(30.0).recommendations == (Recommendation(0.0, 5), Recommendation(30.0, 3))
    assert History().carried(30.0) == History()


def test_next_drop_is_the_oldest_higher_recommendation_leaving_or_the_window_covered() -> None:
    h = History(recommendations=(Recommendation(0.0, 5), Recommendation(10.0, 3)), since=-50.0)
    assert h.next_drop(12.0, 20.0, below=2) == 20.0  # the 5 leaves first
    assert h.next_drop(21.0, 20.0, below=2) == 30.0  # then the 3
    assert h.next_drop(31.0, 20.0, below=2) is None
    assert h.next_drop(12.0, 20.0, below=4) == 20.0  # the 3 is not above 4
    fresh = History(recommendations=(Recommendation(0.0, 1),), since=0.0)
    assert fresh.next_drop(5.0, 20.0, below=1) == 20.0  # nothing higher: the window comes to be covered


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


def test_one_failed_poll_holds_across_a_long_outage() -> None:
    """design.md §stabilisation: the only evaluation during an outage longer than the window is its start (the
    poller reports a change once); the first good poll after it must not scale down at once."""
    s = spec(delay=60)
    d = worker_desired(30, 3, s, SEASONED, 0.0)
    assert (d.desired, d.reason) == (3, "Stable")
    d = worker_desired(0, 3, s, d.history, 10.0, stats_available=False)
    assert (d.desired, d.reason) == (3, "StatsUnavailable")
    d = worker_desired(0, 3, s, d.history, 1000.0)  # 990 s later the server answers again, idle
    assert (d.desired, d.reason) == (3, "ScaleDownStabilizing")
    d = worker_desired(0, 3, s, d.history, 1059.0)
    assert d.desired == 3, "scaled down before a whole window of good data"
    d = worker_desired(0, 3, s, d.history, 1060.0)
    assert (d.desired, d.reason) == (0, "ScaledDown")


def test_outage_missed_between_reconciles_counts_as_a_hold() -> None:
    """The poller failed and recovered before the reconcile ran: the grown failure count is a hold."""
    s = spec(delay=60)
    d = worker_desired(30, 3, s, SEASONED, 0.0, failed_polls=0)
    d = worker_desired(0, 3, s, d.history, 500.0, failed_polls=2)  # two failures nobody saw
    assert (d.desired, d.reason) == (3, "ScaleDownStabilizing")
    d = worker_desired(0, 3, s, d.history, 559.0, failed_polls=2)
    assert d.desired == 3
    d = worker_desired(0, 3, s, d.history, 560.0, failed_polls=2)  # the hold sample is still in the window
    assert d.desired == 3
    d = worker_desired(0, 3, s, d.history, 561.0, failed_polls=2)
    assert d.desired == 0
    # Without a failure in between the same history scales down once the window passed.
    d = worker_desired(30, 3, s, SEASONED, 0.0, failed_polls=0)
    assert worker_desired(0, 3, s, d.history, 500.0, failed_polls=0).desired == 0
    # A count that went back (the cluster was registered anew) is no outage; a scale-up is never held.
    d = worker_desired(30, 3, s, SEASONED, 0.0, failed_polls=5)
    assert worker_desired(0, 3, s, d.history, 500.0, failed_polls=0).desired == 0
    assert worker_desired(90, 3, s, d.history, 500.0, failed_polls=9).desired == 9


def test_server_outage_holds_then_waits_a_window() -> None:
    d = server(500, 5, SEASONED, 0.0)
    assert d.desired == 5
    d = server(0, 5, d.history, 10.0, available=False)
    assert (d.desired, d.reason) == (5, "StatsUnavailable")
    d = server(0, 5, d.history, 5000.0)
    assert (d.desired, d.reason) == (5, "ScaleDownStabilizing")
    d = server(0, 5, d.history, 5300.0)
    assert (d.desired, d.reason) == (2, "ScaledDown")
    missed = server_desired(
        0,
        5,
        min_replicas=2,
        max_replicas=8,
        target_queue_depth=100,
        scale_up_cooldown=60,
        scale_down_cooldown=300,
        history=History(since=-1e9, failed_polls=0),
        now=1000.0,
        failed_polls=1,
    )
    assert (missed.desired, missed.reason) == (5, "ScaleDownStabilizing")


def test_history_hold_restarts_the_good_data_run() -> None:
    h = History(since=0.0).hold(100.0, 4, 60)
    assert h.since is None and h.window_max(100.0, 60) == 4
    assert not h.covers(1000.0, 60)
    h = h.record(1000.0, 1, 60)
    assert h.since == 1000.0 and not h.covers(1059.0, 60) and h.covers(1060.0, 60)


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


_ok_fail_missed = st.lists(
    st.tuples(
        st.integers(0, 400),  # load
        st.floats(0, 200, allow_nan=False),  # seconds since the previous step
        st.sampled_from(["ok", "ok", "ok", "fail", "missed"]),  # a poll seen failing / failures missed
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(s=worker_specs(), start=st.integers(0, 15), steps=_ok_fail_missed)
def test_no_scale_down_without_a_window_of_good_data(
    s: WorkerScaling, start: int, steps: list[tuple[int, float, str]]
) -> None:
    """design.md §stabilisation as an invariant: every scale-down (within the bounds) follows a whole window
    of good data, whether the failures were seen by an evaluation or only counted by the poller."""
    current, history, now, failures = start, History(), 0.0, 0
    good_since: float | None = None
    for load, dt, kind in steps:
        now += dt
        if kind != "ok":
            failures += 1
        available = kind != "fail"
        good_since = (
            None if kind == "fail" else now if (kind == "missed" or good_since is None) else good_since
        )
        d = worker_desired(load, current, s, history, now, stats_available=available, failed_polls=failures)
        if d.direction == "down" and current <= s.max_replicas:
            assert good_since is not None and now - good_since >= s.scale_down_delay
        history, current = d.history, d.desired


# ---- drain planning --------------------------------------------------------------------------------------

NANOS = 1_733_000_000_000_000_000


def go(pod: str, jobs: int | list[str] = 0, state: str = "running", pid: int = 1) -> WorkerInfo:
    """A worker as the Go SDK names it: worker_<hostname>_<pid>_<unixnano> (ojs-go-sdk worker.go)."""
    n = len(jobs) if isinstance(jobs, list) else jobs
    return WorkerInfo(f"worker_{pod}_{pid}_{NANOS + pid}", n, state)


def py(jobs: int = 0, **kw: str) -> WorkerInfo:
    """A worker as the Python SDK names it: worker_<16 hex of a uuid4> (ojs-python-sdk worker.py)."""
    py.n = getattr(py, "n", 0) + 1  # type: ignore[attr-defined]
    return WorkerInfo(f"worker_{py.n:016x}", jobs, **kw)  # type: ignore[attr-defined]


JS_ID = "worker_1b4e28ba-2fa1-41d2-883f-0016d3cca427"  # worker_<crypto.randomUUID()> (ojs-js-sdk worker.ts)


@pytest.mark.parametrize(
    ("worker", "pod"),
    [
        (go("web-1"), "web-1"),
        (go("web-12"), "web-12"),
        (go("web-1-abc"), None),  # not one of ours
        (WorkerInfo("worker_web-1", 0), None),  # no `_` after the hostname
        (WorkerInfo("worker_web-1_", 0), None),  # nothing after it
        (WorkerInfo("web-1", 0), None),  # a bare pod name is no SDK's id (OJS_WORKER_ID is gone)
        (WorkerInfo("worker_00000000000000ab", 0), None),  # Python
        (WorkerInfo(JS_ID, 0), None),  # JS
        (WorkerInfo(JS_ID, 0, hostname="web-12"), "web-12"),  # JS id, hostname reported by the server
        (WorkerInfo("worker_00000000000000ab", 0, pod="web-1"), "web-1"),  # metadata.kubernetes_pod
        (WorkerInfo("worker_00000000000000ab", 0, pod="other", hostname="web-1"), "web-1"),
        (WorkerInfo(JS_ID, 0, hostname="web-1.example.org"), None),
    ],
)
def test_pod_of(worker: WorkerInfo, pod: str | None) -> None:
    assert pod_of(worker, {"web-1", "web-12", "web-2"}) == pod


def test_prefix_pod_names_never_take_each_others_workers() -> None:
    """worker_web-1_… and worker_web-12_…: a pod name that prefixes another pod name matches its own only."""
    pods = ["web-1", "web-12", "web-123"]
    workers = [go("web-1", 0, pid=7), go("web-12", 4, pid=7), go("web-123", 2, pid=12)]
    m = match_workers(pods, workers)
    assert {p: [w.id for w in pw.workers] for p, pw in m.items()} == {
        "web-1": [workers[0].id],
        "web-12": [workers[1].id],
        "web-123": [workers[2].id],
    }
    plan = plan_drain(pods, workers, current=3, desired=1)
    assert plan.victims == ("web-1",) and plan.replicas == 2 and plan.draining
    assert dict(plan.deletion_costs) == {"web-1": IDLE_DELETION_COST, "web-12": 4, "web-123": 2}


def test_restarted_container_stale_records_are_gone() -> None:
    """Several workers per pod: a restart leaves the old record stale; busyness sums the live ones."""
    pods = ["a", "b", "c"]
    workers = [
        go("a", 5, state="stale", pid=1),  # the crashed process: its jobs no longer run here
        go("a", 0, pid=2),
        go("b", 1, pid=1),
        go("b", 2, pid=2),  # two live processes (say, two containers)
        go("c", 3, state="stale"),  # only a stale record: nothing known about c
    ]
    m = match_workers(pods, workers)
    assert m["a"].active_jobs == 0 and m["b"].active_jobs == 3 and "c" not in m
    plan = plan_drain(pods, workers, current=3, desired=1)
    assert plan.victims == ("a", "c") and plan.replicas == 1 and not plan.draining
    assert plan.quiet == (workers[1].id,)  # the live worker of the idle victim; c has nobody to tell
    assert dict(plan.deletion_costs) == {"a": IDLE_DELETION_COST, "b": 3, "c": IDLE_DELETION_COST}
    assert plan.unmatched_pods == ("c",) and plan.matched == 2


def test_drain_picks_idle_pods_first() -> None:
    pods = ["w-a", "w-b", "w-c", "w-d"]
    workers = [go("w-a", 3), go("w-b", 0), go("w-c", 0, "quiet"), go("w-d", 1)]
    plan = plan_drain(pods, workers, current=4, desired=1)
    assert plan.victims == ("w-c", "w-b")  # already quiet first
    assert plan.quiet == (workers[1].id,)
    assert plan.replicas == 2 and plan.draining and not plan.unmatched
    assert dict(plan.deletion_costs) == {
        "w-a": 3,
        "w-b": IDLE_DELETION_COST,
        "w-c": IDLE_DELETION_COST,
        "w-d": 1,
    }


def test_quiet_directive_counts_as_quiet() -> None:
    """Servers report a quiet call as the directive at once; asking again changes nothing."""
    told = WorkerInfo(go("a").id, 0, "running", directive="quiet")
    plan = plan_drain(["a", "b"], [told, go("b")], current=2, desired=1)
    assert plan.victims == ("a",) and plan.quiet == ()


def test_unmatched_pods_rank_between_idle_and_busy() -> None:
    pods = ["busy", "idle-1", "idle-2", "new"]
    workers = [go("busy", 2), go("idle-1"), go("idle-2"), py(0)]  # `new` has no live worker (yet)
    one = plan_drain(pods, workers, current=4, desired=3)
    assert one.victims == ("idle-1",)
    assert dict(one.deletion_costs) == {
        "busy": 2,
        "idle-1": IDLE_DELETION_COST,
        "idle-2": IDLE_KEPT_DELETION_COST,
        "new": UNMATCHED_DELETION_COST,
    }
    assert IDLE_DELETION_COST < IDLE_KEPT_DELETION_COST < UNMATCHED_DELETION_COST < 1
    three = plan_drain(pods, workers, current=4, desired=1)
    assert three.victims == ("idle-1", "idle-2", "new") and three.replicas == 1 and not three.draining
    assert three.quiet == (workers[1].id, workers[2].id)
    assert three.deletion_costs["busy"] == 2
    assert set(three.deletion_costs.values()) == {IDLE_DELETION_COST, 2}


def test_busy_cost_is_capped_to_int32() -> None:
    plan = plan_drain(["a", "b"], [go("a", 2**40), go("b")], current=2, desired=1)
    assert plan.deletion_costs["a"] == 2**31 - 1


def test_drain_shrinks_by_at_most_needed() -> None:
    pods = [f"w-{i}" for i in range(5)]
    plan = plan_drain(pods, [go(p) for p in pods], current=5, desired=3)
    assert plan.replicas == 3 and not plan.draining
    assert plan.victims == ("w-0", "w-1")
    assert sorted(plan.deletion_costs.values()) == [IDLE_DELETION_COST] * 2 + [IDLE_KEPT_DELETION_COST] * 3


def test_drain_removes_not_ready_idle_pods_first() -> None:
    # The ReplicaSet removes pods that are not ready before it weighs costs: idle ones among them go first.
    workers = [go("a"), go("b"), go("c", 2)]
    plan = plan_drain(["a", "b", "c"], workers, current=3, desired=2, not_ready=["b"])
    assert plan.victims == ("b",) and plan.replicas == 2


def test_drain_busy_pod_not_ready_limits_the_step() -> None:
    # A busy pod that is not ready would go before any ready idle pod whatever its cost, so the step
    # shrinks only by the idle pods that also rank before it.
    workers = [go("a"), go("b"), go("c", 3), go("d", 3)]
    plan = plan_drain(["a", "b", "c", "d"], workers, current=4, desired=1, not_ready=["b", "c", "d"])
    assert plan.victims == ("b",) and plan.replicas == 3 and plan.draining
    held = plan_drain(["a", "b", "c", "d"], workers, current=4, desired=1, not_ready=["c"])
    assert held.victims == () and held.replicas == 4 and held.draining


def test_drain_all_busy_holds() -> None:
    workers = [go("p1", 2), go("p2", ["j1", "j2", "j3", "j4", "j5"])]
    plan = plan_drain(["p1", "p2"], workers, current=2, desired=1)
    assert plan.replicas == 2 and plan.draining and plan.victims == ()
    assert dict(plan.deletion_costs) == {"p1": 2, "p2": 5}


@pytest.mark.parametrize(
    "workers",
    [
        [],  # nobody reported yet
        [py(0), py(3), WorkerInfo(JS_ID, 1)],  # Python/JS SDK ids: random
        [go("pod-1", state="stale"), go("pod-2", 2, state="stale")],  # only stale records
        [go("pod-9")],  # Go ids of other pods
    ],
)
def test_drain_unmatched_is_plain_scale_down(workers: list[WorkerInfo]) -> None:
    plan = plan_drain(["pod-1", "pod-2"], workers, current=2, desired=1)
    assert plan.unmatched and plan.replicas == 1
    assert plan.deletion_costs == {} and plan.quiet == () and plan.victims == ()
    assert plan.unmatched_pods == ("pod-1", "pod-2") and plan.matched == 0


def test_drain_not_needed_when_not_shrinking() -> None:
    plan = plan_drain(["a"], [go("a")], current=1, desired=3)
    assert plan.replicas == 3 and not plan.unmatched and plan.victims == () and plan.matched == 1


def test_drain_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        plan_drain([], [], current=-1, desired=0)


@settings(max_examples=200, deadline=None)
@given(
    jobs=st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 3), st.booleans(), st.booleans())), max_size=12
    ),
    extra=st.lists(st.integers(0, 3), max_size=3),
    desired=st.integers(0, 12),
    not_ready=st.sets(st.integers(0, 11), max_size=4),
)
def test_drain_invariants(
    jobs: list[tuple[int, bool, bool] | None], extra: list[int], desired: int, not_ready: set[int]
) -> None:
    """Per pod: no worker, or a Go-style worker with (active jobs, stale, identified by hostname)."""
    pods = [f"pod-{i}" for i in range(len(jobs))]
    workers: list[WorkerInfo] = []
    for p, j in zip(pods, jobs, strict=True):
        if j is None:
            continue
        n, stale, by_hostname = j
        state = "stale" if stale else "running"
        workers.append(WorkerInfo(f"worker_{p}x", n, state, hostname=p) if by_hostname else go(p, n, state))
    workers += [WorkerInfo(f"worker_elsewhere-{i}_1_2", n) for i, n in enumerate(extra)]
    current = len(pods)
    plan = plan_drain(pods, workers, current, desired, [f"pod-{i}" for i in not_ready])
    live = {w.hostname or w.id.split("_")[1]: w for w in workers if not w.stale}
    if desired >= current:
        assert plan.replicas == desired
        return
    if plan.unmatched:
        assert not any(p in live for p in pods) and plan.replicas == desired
        return
    assert desired <= plan.replicas <= current
    assert current - plan.replicas == len(plan.victims)
    busy = {p for p in pods if p in live and live[p].active_jobs > 0}
    assert not busy & set(plan.victims)
    assert set(plan.deletion_costs) == set(pods)
    assert {p for p, c in plan.deletion_costs.items() if c == IDLE_DELETION_COST} == set(plan.victims)
    assert set(plan.quiet) == {live[p].id for p in plan.victims if p in live}
    assert set(plan.unmatched_pods) == {p for p in pods if p not in live}
    # Ranking: every idle matched pod kept costs less than every unmatched pod, which costs less than busy.
    idle_kept = [
        c for p, c in plan.deletion_costs.items() if p in live and p not in busy and p not in plan.victims
    ]
    unmatched_kept = [c for p, c in plan.deletion_costs.items() if p not in live and p not in plan.victims]
    assert all(c == IDLE_KEPT_DELETION_COST for c in idle_kept)
    assert all(c == UNMATCHED_DELETION_COST for c in unmatched_kept)
    assert all(plan.deletion_costs[p] >= 1 for p in busy)
    # No unmatched pod goes while an idle matched pod of the same readiness stays.
    for v in plan.victims:
        if v not in live:
            assert not [
                p
                for p in pods
                if p in live
                and p not in busy
                and p not in plan.victims
                and (p in plan.deletion_costs)
                and ((pods.index(p) in not_ready) == (pods.index(v) in not_ready))
            ]
    assert plan.draining == (plan.replicas > desired)


# ------------------------------------------------------------------------ silent workers (design.md §drain)
def test_silent_workers_count_as_stale_by_their_heartbeat_age() -> None:
    from ojsctrl.ojs.drain import SILENT_WORKER_SECONDS, mark_silent, match_workers
    from ojsctrl.ojs.model import WorkerInfo

    now = 1_800_000_000.0
    fresh = WorkerInfo("worker_web-1_7_1", 2, state="running", last_heartbeat=now - 5)
    silent = WorkerInfo(
        "worker_web-2_7_1", 2, state="running", last_heartbeat=now - SILENT_WORKER_SECONDS - 1
    )
    unknown = WorkerInfo("worker_web-3_7_1", 2, state="running")
    marked = {w.id: w for w in mark_silent([fresh, silent, unknown], now)}
    assert not marked[fresh.id].stale
    assert marked[silent.id].stale
    assert not marked[unknown.id].stale  # no heartbeat time reported: only the server's word counts
    matched = match_workers(["web-1", "web-2", "web-3"], marked.values())
    assert set(matched) == {"web-1", "web-3"}  # web-2's only worker went silent: the pod is unmatched
