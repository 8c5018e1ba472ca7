"""The stats poller's schedule (design.md §polling): polls on a grid, and a cluster's first poll only
once it has a server that can answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ojsctrl.controllers.stats import FIRST_POLL_RECHECK, PollResult, StatsPoller, aligned


@pytest.mark.parametrize(
    ("at", "interval", "expected"),
    [
        (130.37, 30.0, 130.0),  # a step of 1 s (the most) for any interval of 10 s or more
        (130.62, 30.0, 131.0),
        (7.37, 5.0, 7.5),  # a tenth of the interval below 10 s
        (1.02, 1.0, 1.0),
        (0.123, 0.05, 0.125),
        (42.0, 0.0, 42.0),  # no interval: no grid
    ],
)
def test_a_next_poll_falls_on_the_nearest_point_of_its_grid(
    at: float, interval: float, expected: float
) -> None:
    assert aligned(at, interval) == pytest.approx(expected)


def _wait(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("not reached")


def test_the_next_poll_is_due_on_the_grid_not_one_interval_after_the_last() -> None:
    """A poll at 100.37 with a 30 s interval: the next is due at 130.0 (the grid's nearest point), so the
    clusters polled within half a second of each other are polled together from then on."""
    clock = {"t": 100.37}
    lock = threading.Lock()
    polls: list[float] = []

    def fetch(url: str, api_key: str | None) -> dict[str, tuple[int, int]]:
        with lock:
            polls.append(clock["t"])
        return {"default": (0, 0)}

    poller = StatsPoller(fetch, workers=1, clock=lambda: clock["t"])
    poller.start()
    try:
        poller.register("ns/c", "http://x", None, 30.0, requester="cluster")
        _wait(lambda: poller.result("ns/c"))
        clock["t"] = 129.9
        time.sleep(1.2)  # the scheduler wakes at least every second
        assert len(polls) == 1
        clock["t"] = 130.05  # before 100.37 + 30: due only on the grid
        _wait(lambda: len(polls) == 2)
    finally:
        poller.stop()
    assert polls == [100.37, 130.05]


def test_a_clusters_first_poll_waits_for_a_server_then_every_poll_dials() -> None:
    """No ready server: not dialled, no result, no failure counted. A server: polled within
    FIRST_POLL_RECHECK. Then an outage (no server again) is dialled and counted as before."""
    state = {"serving": False, "up": True}
    asked: list[str] = []
    dialled: list[str] = []
    lock = threading.Lock()

    def serving(key: str) -> bool:
        with lock:
            asked.append(key)
        return state["serving"]

    def fetch(url: str, api_key: str | None) -> dict[str, tuple[int, int]]:
        with lock:
            dialled.append(url)
        if not state["up"]:
            raise RuntimeError("connection refused")
        return {"default": (3, 1)}

    poller = StatsPoller(fetch, workers=2)
    poller.wait_for_servers(serving)
    poller.start()
    try:
        poller.register("ns/c", "http://c", None, 0.2, requester="cluster")
        _wait(lambda: len(asked) >= 1)
        time.sleep(0.6)  # three intervals
        assert dialled == []
        assert poller.result("ns/c") is None
        assert poller.failure_counts() == []
        state["serving"] = True
        started = time.monotonic()
        first: PollResult = _wait(lambda: poller.result("ns/c"), FIRST_POLL_RECHECK + 3)
        assert time.monotonic() - started <= FIRST_POLL_RECHECK + 1
        assert first.ok and first.queues == {"default": (3, 1)}
        # Served once: an outage is dialled and counted, whatever the readiness check says.
        state["serving"], state["up"] = False, False
        failed: PollResult = _wait(lambda: (r := poller.result("ns/c")) is not None and r.failures >= 2 and r)
        assert not failed.ok and failed.consecutive_failures >= 2
    finally:
        poller.stop()


def test_a_readiness_check_that_fails_dials_anyway() -> None:
    dialled = threading.Event()

    def serving(key: str) -> bool:
        raise RuntimeError("cache not ready")

    def fetch(url: str, api_key: str | None) -> dict[str, tuple[int, int]]:
        dialled.set()
        return {}

    poller = StatsPoller(fetch, workers=1, serving=serving)
    poller.start()
    try:
        poller.register("ns/c", "http://c", None, 30.0, requester="cluster")
        assert dialled.wait(5)
    finally:
        poller.stop()


def test_a_re_registered_cluster_waits_for_a_server_again() -> None:
    """unregister drops the results: the next registration is a first poll again (a cluster recreated
    under the same name has a new rollout)."""
    state = {"serving": True}
    dialled: list[str] = []

    def fetch(url: str, api_key: str | None) -> dict[str, Any]:
        dialled.append(url)
        return {}

    poller = StatsPoller(fetch, workers=1, serving=lambda key: state["serving"])
    poller.start()
    try:
        poller.register("ns/c", "http://c", None, 30.0, requester="cluster")
        _wait(lambda: poller.result("ns/c"))
        poller.unregister("ns/c")
        state["serving"] = False
        poller.register("ns/c", "http://c", None, 0.1, requester="cluster")
        time.sleep(0.5)
        assert dialled == ["http://c"]
        assert poller.result("ns/c") is None
    finally:
        poller.stop()


def test_poll_soon_makes_a_waiting_first_poll_at_once() -> None:
    """The cluster's reconcile sees its server ready: the first poll follows at once, not at the next look
    at readiness (FIRST_POLL_RECHECK later)."""
    state = {"serving": False}
    asked = threading.Event()
    dialled = threading.Event()

    def serving(key: str) -> bool:
        asked.set()
        return state["serving"]

    def fetch(url: str, api_key: str | None) -> dict[str, tuple[int, int]]:
        dialled.set()
        return {}

    poller = StatsPoller(fetch, workers=1, serving=serving)
    poller.start()
    try:
        poller.register("ns/c", "http://c", None, 30.0, requester="cluster")
        assert asked.wait(5)
        time.sleep(0.1)
        assert not dialled.is_set()
        state["serving"] = True
        started = time.monotonic()
        poller.poll_soon("ns/c")
        assert dialled.wait(5)
        assert time.monotonic() - started < FIRST_POLL_RECHECK / 2
    finally:
        poller.stop()
