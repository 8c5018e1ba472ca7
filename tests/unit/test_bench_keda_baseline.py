"""The KEDA baseline's decisions (bench/keda_baseline.py): KEDA's activation and cooldown, the HPA's formula,
tolerance, scale-up rate limit and scale-down stabilisation, on a simulated clock."""

from __future__ import annotations

from bench.keda_baseline import KedaHpa


def drive(policy: KedaHpa, metric: int | None, current: int, start: float, until: float) -> tuple[int, float]:
    """decide() every second from start to until with a constant metric; returns (replicas, last change)."""
    changed = start
    t = start
    while t <= until:
        new = policy.decide(t, metric, current)
        if new != current:
            current, changed = new, t
        t += 1.0
    return current, changed


def test_activation_then_hpa_scale_up_is_rate_limited() -> None:
    p = KedaHpa(target=10)
    # 0 -> 1 by KEDA, then the HPA in the same evaluation: at most max(2x, +4) per 15 s from 1.
    assert p.decide(0.0, 200, 0) == 5
    assert p.decide(1.0, 200, 5) == 5  # next HPA sync not due
    assert p.decide(15.0, 200, 5) == 10  # doubled
    assert p.decide(30.0, 200, 10) == 20  # ceil(200 / 10)
    assert p.decide(45.0, 200, 20) == 20


def test_tolerance_keeps_the_count() -> None:
    p = KedaHpa(target=10)
    p.last_poll = p.last_sync = None
    assert p.decide(0.0, 105, 10) == 10  # ratio 1.05, within 10 %
    assert p.decide(15.0, 120, 10) == 12


def test_scale_down_waits_for_the_300s_window() -> None:
    p = KedaHpa(target=10, min_replicas=1)
    assert p.decide(0.0, 100, 10) == 10
    replicas, changed = drive(p, 20, 10, 15.0, 400.0)
    assert replicas == 2
    assert 300.0 <= changed <= 316.0


def test_idle_scales_to_zero_after_cooldown() -> None:
    p = KedaHpa(target=10)
    assert p.decide(0.0, 30, 3) == 3
    replicas, changed = drive(p, 0, 3, 1.0, 700.0)
    assert replicas == 0
    # KEDA's cooldown (300 s since the last active poll), seen at a 30 s poll.
    assert 300.0 <= changed <= 331.0
    # The HPA alone would have gone to 1 after its window first.


def test_failed_metric_keeps_the_count() -> None:
    p = KedaHpa(target=10)
    assert p.decide(0.0, None, 4) == 4
    assert drive(p, None, 4, 1.0, 1000.0)[0] == 4
