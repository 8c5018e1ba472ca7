"""The one token bucket of the runtime, used by the API client and by the workqueue's rate limiter.

A reservation may drive the bucket below zero, so a burst of callers gets evenly spaced delays, as
golang.org/x/time/rate's ``Reserve().Delay()`` (which client-go's flowcontrol and workqueue both build on).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``qps`` tokens per second refill a bucket of ``burst`` (at least 1); ``reserve`` takes one.

    A ``qps`` of zero, below zero or infinite means no limit: every reservation is free. ``now`` is the
    monotonic clock, injectable for tests.
    """

    def __init__(self, qps: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._now = now
        self._tokens = float(self.burst)
        self._last = now()
        self._lock = threading.Lock()

    @property
    def unlimited(self) -> bool:
        """True when the bucket never makes anyone wait."""
        return self.qps <= 0 or math.isinf(self.qps)

    def reserve(self) -> float:
        """Take a token; returns how long (seconds) the caller must wait before using it."""
        if self.unlimited:
            return 0.0
        with self._lock:
            now = self._now()
            self._tokens = self._refilled(now) - 1.0
            self._last = now
            return -self._tokens / self.qps if self._tokens < 0 else 0.0

    def _refilled(self, now: float) -> float:
        """The tokens at ``now`` (the lock held), the refill since the last reservation included."""
        # A clock that steps back must not mint tokens later for the same interval.
        last = min(self._last, now)
        return min(float(self.burst), self._tokens + (now - last) * self.qps)

    def wait_for(self, tokens: float) -> float:
        """Seconds until the bucket holds ``tokens`` (at most ``burst``) without taking any: 0 when it does
        now (or the bucket is unlimited). Lets a caller of low priority go only when others are not
        waiting."""
        if self.unlimited:
            return 0.0
        with self._lock:
            have = self._refilled(self._now())
        want = min(float(self.burst), tokens)
        return 0.0 if have >= want else (want - have) / self.qps
