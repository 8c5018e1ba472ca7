"""The shared token bucket: injectable clock, unlimited rates, a clock stepping back."""

from __future__ import annotations

import math

import pytest

from ojsctrl.runtime.ratelimit import TokenBucket


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_spacing_follows_the_injected_clock() -> None:
    clock = _Clock()
    bucket = TokenBucket(qps=4.0, burst=2, now=clock)
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.25, 0.5])
    clock.t += 0.75  # pays the debt of 0.5 and refills 1 token
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.25)


@pytest.mark.parametrize("qps", [0.0, -3.0, math.inf])
def test_unlimited_rates_never_wait(qps: float) -> None:
    bucket = TokenBucket(qps=qps, burst=1, now=_Clock())
    assert bucket.unlimited
    assert all(bucket.reserve() == 0.0 for _ in range(100))


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    clock = _Clock()
    bucket = TokenBucket(qps=1.0, burst=1, now=clock)
    assert bucket.reserve() == 0.0
    clock.t -= 10.0
    assert bucket.reserve() == pytest.approx(1.0)
    # Time moving forward again from the earlier reading only pays back what really elapsed.
    clock.t += 1.0
    assert bucket.reserve() == pytest.approx(1.0)
