"""Unit tests for ojsctrl.runtime.workqueue (client-go workqueue semantics)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ojsctrl.runtime import metrics as runtime_metrics
from ojsctrl.runtime.workqueue import (
    LOW_PRIORITY_MAX_WAIT,
    BucketRateLimiter,
    DelayingQueue,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    Queue,
    RateLimitingQueue,
    default_controller_rate_limiter,
)

pytestmark = pytest.mark.timeout(30)

# Generous bound for "this should happen promptly" waits on a loaded 2-core machine; tests never wait this
# long unless something is broken.
PROMPT = 2.0


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._now = start

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Register queues to be shut down at teardown so no test leaks a delay thread."""
    queues: list[Queue[Any]] = []

    def register(q: Any) -> Any:
        queues.append(q)
        return q

    yield register
    for q in queues:
        q.shut_down()


# ----------------------------------------------------------------------------------------------------------
# Queue
# ----------------------------------------------------------------------------------------------------------


def test_duplicates_waiting_in_queue_collapse() -> None:
    q: Queue[str] = Queue()
    for item in ["a", "b", "a", "a", "b", "c"]:
        q.add(item)
    assert len(q) == 3
    assert q.len() == 3
    got = [q.get(timeout=PROMPT)[0] for _ in range(3)]
    assert got == ["a", "b", "c"]
    assert q.get(timeout=0.05) == (None, False)


def test_low_priority_items_wait_behind_normal_ones_and_a_normal_add_moves_them_up() -> None:
    """Bookkeeping (a child's status step, a resync) is added low: decisions are handed out first."""
    q: Queue[str] = Queue()
    q.add("status-1", low=True)
    q.add("status-2", low=True)
    q.add("decide-1")
    q.add("status-3", low=True)
    q.add("status-2")  # a normal ask for an item waiting low: moved up, behind the normal ones before it
    q.add("decide-1", low=True)  # a low ask never moves an item down
    q.add("decide-2")
    assert len(q) == 5
    got = [q.get(timeout=PROMPT)[0] for _ in range(5)]
    assert got == ["decide-1", "status-2", "decide-2", "status-1", "status-3"]
    assert len(q) == 0 and q.get(timeout=0.05) == (None, False)
    for item in got:
        q.done(item)
    assert q.get(timeout=0.05) == (None, False)  # moved-up items left no second entry behind


def test_a_low_item_readded_while_processing_comes_back_at_the_priority_asked() -> None:
    q: Queue[str] = Queue()
    q.add("a")
    q.add("b")
    assert q.get(timeout=PROMPT) == ("a", False)
    q.add("a", low=True)  # dirty while processing: back at low priority after done
    q.add("c")
    q.done("a")
    assert [q.get(timeout=PROMPT)[0] for _ in range(3)] == ["b", "c", "a"]
    q.done("a")
    assert q.get(timeout=0.05) == (None, False)  # nothing further waits
    # A normal ask during processing wins over a low one.
    q.add("a", low=True)
    assert q.get(timeout=PROMPT) == ("a", False)
    q.add("a", low=True)
    q.add("a")
    q.add("z", low=True)
    q.done("a")
    assert [q.get(timeout=PROMPT)[0] for _ in range(2)] == ["a", "z"]


def test_a_low_item_that_waited_long_enough_goes_before_normal_ones() -> None:
    """Bookkeeping is late under a load that never lets up, never starved."""
    clock = FakeClock()
    q: Queue[str] = Queue(clock=clock)
    q.add("status", low=True)
    clock.advance(LOW_PRIORITY_MAX_WAIT - 1)
    q.add("decide-1")
    q.add("decide-2")
    assert q.get(timeout=PROMPT) == ("decide-1", False)
    clock.advance(1)
    assert q.get(timeout=PROMPT) == ("status", False)
    assert q.get(timeout=PROMPT) == ("decide-2", False)


def test_delayed_adds_keep_their_priority_and_a_normal_ask_wins(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = closing(DelayingQueue(clock=clock, heartbeat=0.01))
    q.add_after("step", 1, low=True)
    q.add_after("step-then-decide", 1, low=True)
    q.add_after("step-then-decide", 3)  # a normal ask (later time): the wait stays, the priority rises
    q.add_after("decide", 2)
    clock.advance(5)
    deadline = time.monotonic() + PROMPT
    while len(q) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [q.get(timeout=PROMPT)[0] for _ in range(3)] == ["step-then-decide", "decide", "step"]


def test_get_times_out_without_items() -> None:
    q: Queue[str] = Queue()
    start = time.monotonic()
    assert q.get(timeout=0.05) == (None, False)
    assert time.monotonic() - start < PROMPT


def test_readd_while_processing_runs_exactly_once_more_after_done() -> None:
    q: Queue[str] = Queue()
    q.add("a")
    item, shutdown = q.get(timeout=PROMPT)
    assert (item, shutdown) == ("a", False)

    q.add("a")
    q.add("a")
    # Not handed out while a worker holds it.
    assert len(q) == 0
    assert q.get(timeout=0.05) == (None, False)

    q.done("a")
    assert len(q) == 1
    assert q.get(timeout=PROMPT) == ("a", False)
    q.done("a")
    assert q.get(timeout=0.05) == (None, False)


def test_done_without_readd_does_not_requeue_and_stray_done_is_harmless() -> None:
    q: Queue[str] = Queue()
    q.add("a")
    q.get(timeout=PROMPT)
    q.done("a")
    assert len(q) == 0
    q.add("b")
    q.done("b")  # never handed out: must not duplicate it
    assert len(q) == 1
    assert q.get(timeout=PROMPT) == ("b", False)
    assert q.get(timeout=0.05) == (None, False)


def test_no_parallel_processing_of_one_key_and_no_lost_adds() -> None:
    q: Queue[int] = Queue()
    keys = list(range(50))
    lock = threading.Lock()
    holders: dict[int, int] = dict.fromkeys(keys, 0)
    violations: list[int] = []
    seq = itertools.count()
    last_add: dict[int, int] = {}
    last_start: dict[int, int] = {}
    processed = [0]

    def worker() -> None:
        rng = random.Random()
        while True:
            key, shutdown = q.get(timeout=PROMPT)
            if shutdown:
                return
            if key is None:
                continue
            with lock:
                holders[key] += 1
                if holders[key] > 1:
                    violations.append(key)
                last_start[key] = next(seq)
                processed[0] += 1
            if rng.random() < 0.3:
                time.sleep(0.0005)
            with lock:
                holders[key] -= 1
            q.done(key)

    def producer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1000):
            key = rng.choice(keys)
            with lock:
                # Recorded before add: any processing that starts after this point sees this add.
                last_add[key] = next(seq)
            q.add(key)
            if rng.random() < 0.05:
                time.sleep(0.0002)

    workers = [threading.Thread(target=worker, name=f"wq-test-worker-{i}") for i in range(8)]
    producers = [threading.Thread(target=producer, args=(s,), name=f"wq-test-prod-{s}") for s in range(2)]
    for t in workers + producers:
        t.start()
    for t in producers:
        t.join(10)
    # Shutdown hands out nothing more, so wait for the workers to empty the queue first.
    give_up = time.monotonic() + 10
    while (q.len() or q._processing) and time.monotonic() < give_up:
        time.sleep(0.01)
    assert q.shut_down_with_drain(10)
    for t in workers:
        t.join(10)
        assert not t.is_alive()

    assert violations == []
    assert processed[0] > 0
    for key, added in last_add.items():
        assert last_start.get(key, -1) > added, f"key {key} added after its last processing start"


def test_shut_down_wakes_blocked_getters() -> None:
    q: Queue[str] = Queue()
    results: list[tuple[str | None, bool]] = []
    lock = threading.Lock()

    def getter() -> None:
        r = q.get()
        with lock:
            results.append(r)

    threads = [threading.Thread(target=getter, name=f"wq-test-getter-{i}") for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    q.shut_down()
    for t in threads:
        t.join(PROMPT)
        assert not t.is_alive()
    assert results == [(None, True)] * 4
    assert q.shutting_down()


@pytest.mark.parametrize("drain", [False, True])
def test_shut_down_hands_out_nothing_more_even_with_a_backlog(drain: bool) -> None:
    q: Queue[str] = Queue()
    q.add("a")
    q.add("b")
    if drain:
        assert q.shut_down_with_drain(PROMPT)  # nothing processing: returns at once
    else:
        q.shut_down()
    q.add("c")  # ignored
    assert q.get(timeout=PROMPT) == (None, True)
    assert q.get(timeout=PROMPT) == (None, True)


def test_shut_down_during_processing_stops_a_dirty_item_from_coming_back() -> None:
    q: Queue[str] = Queue()
    q.add("a")
    assert q.get(timeout=PROMPT) == ("a", False)
    q.add("a")  # dirty while processing
    q.add("b")
    q.shut_down()
    q.done("a")
    assert q.get(timeout=PROMPT) == (None, True)


def test_shut_down_with_drain_waits_for_in_flight_items() -> None:
    q: Queue[str] = Queue()
    q.add("a")
    assert q.get(timeout=PROMPT) == ("a", False)
    result: list[bool] = []
    drainer = threading.Thread(target=lambda: result.append(q.shut_down_with_drain(10)), name="wq-test-drain")
    drainer.start()
    time.sleep(0.1)
    assert drainer.is_alive(), "drain returned while an item was still processing"
    assert q.shutting_down()
    q.add("b")  # not accepted during drain
    q.done("a")
    drainer.join(PROMPT)
    assert not drainer.is_alive()
    assert result == [True]
    assert q.get(timeout=PROMPT) == (None, True)


def test_shut_down_with_drain_is_bounded_by_timeout() -> None:
    q: Queue[str] = Queue()
    q.add("stuck")
    q.get(timeout=PROMPT)
    start = time.monotonic()
    assert q.shut_down_with_drain(0.1) is False
    assert time.monotonic() - start < PROMPT


def test_shut_down_during_drain_cuts_it_short() -> None:
    q: Queue[str] = Queue()
    q.add("stuck")
    q.get(timeout=PROMPT)
    result: list[bool] = []
    drainer = threading.Thread(target=lambda: result.append(q.shut_down_with_drain(10)), name="wq-test-drain")
    drainer.start()
    time.sleep(0.05)
    q.shut_down()
    drainer.join(PROMPT)
    assert not drainer.is_alive()
    assert result == [False]


# ----------------------------------------------------------------------------------------------------------
# DelayingQueue
# ----------------------------------------------------------------------------------------------------------


def test_add_after_orders_by_ready_time(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = closing(DelayingQueue(clock=clock, heartbeat=0.01))
    q.add_after("a", 3)
    q.add_after("b", 1)
    q.add_after("c", 2)
    q.add_after("d", 4)
    assert q.get(timeout=0.05) == (None, False)

    clock.advance(1.5)
    assert q.get(timeout=PROMPT) == ("b", False)
    assert q.get(timeout=0.05) == (None, False)

    # Everything else falls due at once: it arrives in ready-time order.
    clock.advance(10)
    assert [q.get(timeout=PROMPT)[0] for _ in range(3)] == ["c", "a", "d"]


def test_add_after_earlier_time_wins(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = closing(DelayingQueue(clock=clock, heartbeat=0.01))
    q.add_after("x", 5)
    q.add_after("x", 1)  # earlier: moves x up
    q.add_after("y", 1)
    q.add_after("y", 5)  # later: ignored
    clock.advance(1.5)
    got = {q.get(timeout=PROMPT)[0], q.get(timeout=PROMPT)[0]}
    assert got == {"x", "y"}
    q.done("x")
    q.done("y")
    # Each item had a single heap entry: nothing arrives at the superseded times.
    clock.advance(10)
    assert q.get(timeout=0.1) == (None, False)


def test_supersede_drops_a_delayed_add_asked_before_a_reconcile_started(
    closing: Callable[[Any], Any],
) -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = closing(DelayingQueue(clock=clock, heartbeat=0.01))
    q.add_after("old", 5)  # asked at 1000
    q.add_after("fresh", 5)
    clock.advance(1)
    since = q.now()  # a reconcile of both starts at 1001 ...
    clock.advance(1)
    q.add_after("fresh", 30)  # ... and during it an event asks again for "fresh" (a later time: no new entry)
    assert q.supersede("old", since)
    assert not q.supersede("fresh", since)  # an ask during the reconcile: kept
    assert not q.supersede("absent", since)
    clock.advance(10)
    assert q.get(timeout=PROMPT) == ("fresh", False)
    assert q.get(timeout=0.1) == (None, False)  # "old" never comes
    # Once popped, nothing is left to supersede, and a new ask is honoured.
    assert not q.supersede("fresh", q.now())
    q.add_after("old", 1)
    clock.advance(2)
    assert q.get(timeout=PROMPT) == ("old", False)


def test_superseded_entries_keep_the_heap_bounded(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    q: DelayingQueue[int] = closing(DelayingQueue(clock=clock, heartbeat=0.01))
    for i in range(1000):
        q.add_after(i, 60)
        clock.advance(0.001)
        assert q.supersede(i, q.now())
    assert len(q._heap) <= 16 + 2 * len(q._waiting)
    assert q._asked == {}


def test_add_after_nonpositive_delay_adds_now(closing: Callable[[Any], Any]) -> None:
    q: DelayingQueue[str] = closing(DelayingQueue(clock=FakeClock(), heartbeat=0.01))
    q.add_after("now", 0)
    q.add_after("past", -1)
    assert len(q) == 2


def test_add_after_with_real_clock(closing: Callable[[Any], Any]) -> None:
    q: DelayingQueue[str] = closing(DelayingQueue())
    q.add_after("later", 0.02)
    assert q.get(timeout=PROMPT) == ("later", False)


def test_repeated_earlier_readds_keep_heap_bounded(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = closing(DelayingQueue(clock=clock, heartbeat=0.01))
    for i in range(1000):
        q.add_after("k", 10_000 - i)
    assert len(q._heap) < 50
    clock.advance(20_000)
    assert q.get(timeout=PROMPT) == ("k", False)
    q.done("k")
    assert q.get(timeout=0.05) == (None, False)


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"workqueue-delay-{name}"]


@pytest.mark.parametrize("how", ["shut_down", "shut_down_with_drain"])
def test_queue_threads_stop_on_shutdown(how: str) -> None:
    name = unique("threads")
    registry = CollectorRegistry(auto_describe=True)
    q: RateLimitingQueue[str] = RateLimitingQueue(name, registry=registry)
    q.add_after("pending", 3600)
    q.add_rate_limited("retry")
    assert [t.is_alive() for t in _threads_named(name)] == [True]
    if how == "shut_down":
        q.shut_down()
    else:
        assert q.shut_down_with_drain(1.0)
    deadline = time.monotonic() + 1.0
    while _threads_named(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads_named(name) == []
    q.add_after("ignored", 0.01)
    q.add_rate_limited("ignored")
    assert q.num_requeues("ignored") == 0


# ----------------------------------------------------------------------------------------------------------
# Rate limiters
# ----------------------------------------------------------------------------------------------------------


def test_exponential_backoff_figures_cap_and_forget() -> None:
    rl: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [rl.when("a") for _ in range(20)]
    expected = [min(0.005 * 2**n, 1000.0) for n in range(20)]
    assert delays == pytest.approx(expected)
    assert delays[:4] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert delays[-1] == 1000.0
    assert rl.num_requeues("a") == 20

    # Other items have their own count.
    assert rl.when("b") == pytest.approx(0.005)
    assert rl.num_requeues("b") == 1

    rl.forget("a")
    assert rl.num_requeues("a") == 0
    assert rl.when("a") == pytest.approx(0.005)


def test_exponential_backoff_does_not_overflow() -> None:
    rl: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    for _ in range(2000):
        last = rl.when("a")
    assert last == 1000.0


def test_bucket_burst_then_qps_spacing() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(qps=10, burst=100, clock=clock)
    assert [rl.when(i) for i in range(100)] == [0.0] * 100
    assert [rl.when(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert rl.num_requeues(0) == 0

    # 0.3 s refills the three reserved tokens; the next caller waits one interval again.
    clock.advance(0.3)
    assert rl.when("x") == pytest.approx(0.1)

    # A long pause refills only up to the burst.
    clock.advance(1000)
    assert [rl.when(i) for i in range(100)] == [0.0] * 100
    assert rl.when("y") == pytest.approx(0.1)


def test_max_of_rate_limiter() -> None:
    fast: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.001, 10)
    slow: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.5, 1)
    rl = MaxOfRateLimiter(fast, slow)
    assert rl.when("a") == pytest.approx(0.5)
    assert rl.when("a") == pytest.approx(1.0)
    assert rl.when("a") == pytest.approx(1.0)  # slow is capped; fast is at 0.004
    fast.when("a")
    assert rl.num_requeues("a") == 4
    rl.forget("a")
    assert fast.num_requeues("a") == 0
    assert slow.num_requeues("a") == 0


def test_default_controller_rate_limiter() -> None:
    clock = FakeClock()
    rl = default_controller_rate_limiter(clock)
    # Per-item backoff dominates while the bucket has tokens.
    assert rl.when("a") == pytest.approx(0.005)
    assert rl.when("a") == pytest.approx(0.01)
    for i in range(98):
        rl.when(f"other-{i}")
    # Bucket is empty now: a fresh item waits for the overall rate, not its own 5 ms.
    assert rl.when("fresh") == pytest.approx(0.1)
    assert rl.num_requeues("a") == 2
    rl.forget("a")
    assert rl.num_requeues("a") == 0


# ----------------------------------------------------------------------------------------------------------
# RateLimitingQueue
# ----------------------------------------------------------------------------------------------------------


def test_rate_limiting_queue_delays_by_limiter(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    registry = CollectorRegistry(auto_describe=True)
    rl: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(1.0, 60.0)
    q: RateLimitingQueue[str] = closing(
        RateLimitingQueue(unique("rlq"), rl, clock=clock, registry=registry, heartbeat=0.01)
    )
    q.add_rate_limited("k")  # 1 s
    q.add_rate_limited("k")  # 2 s, later than the waiting entry: ignored
    assert q.num_requeues("k") == 2
    assert q.get(timeout=0.05) == (None, False)
    clock.advance(1.5)
    assert q.get(timeout=PROMPT) == ("k", False)
    q.done("k")
    q.forget("k")
    assert q.num_requeues("k") == 0


def test_rate_limiting_queue_default_limiter_uses_queue_clock(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    registry = CollectorRegistry(auto_describe=True)
    q: RateLimitingQueue[str] = closing(
        RateLimitingQueue(unique("rlq"), clock=clock, registry=registry, heartbeat=0.01)
    )
    q.add_rate_limited("k")
    assert q.num_requeues("k") == 1
    clock.advance(0.006)
    assert q.get(timeout=PROMPT) == ("k", False)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


def _value(registry: CollectorRegistry, metric: str, name: str) -> float | None:
    return registry.get_sample_value(metric, {"name": name, "controller": name})


def test_metrics_depth_adds_durations_and_retries(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    registry = CollectorRegistry(auto_describe=True)
    name = unique("metrics")
    q: RateLimitingQueue[str] = closing(
        RateLimitingQueue(name, clock=clock, registry=registry, heartbeat=0.01)
    )

    q.add("x")
    q.add("y")
    q.add("x")  # deduped: not counted
    assert _value(registry, "workqueue_adds_total", name) == 2
    assert _value(registry, "workqueue_depth", name) == 2

    clock.advance(3)
    assert q.get(timeout=PROMPT) == ("x", False)
    assert _value(registry, "workqueue_depth", name) == 1
    assert _value(registry, "workqueue_queue_duration_seconds_count", name) == 1
    assert _value(registry, "workqueue_queue_duration_seconds_sum", name) == pytest.approx(3)

    assert q.get(timeout=PROMPT) == ("y", False)
    clock.advance(2)
    # In flight: x and y for 2 s each.
    assert _value(registry, "workqueue_unfinished_work_seconds", name) == pytest.approx(4)
    assert _value(registry, "workqueue_longest_running_processor_seconds", name) == pytest.approx(2)

    q.done("x")
    q.done("y")
    assert _value(registry, "workqueue_work_duration_seconds_count", name) == 2
    assert _value(registry, "workqueue_work_duration_seconds_sum", name) == pytest.approx(4)
    assert _value(registry, "workqueue_unfinished_work_seconds", name) == 0
    assert _value(registry, "workqueue_longest_running_processor_seconds", name) == 0

    q.add_rate_limited("z")
    q.add_rate_limited("z")
    assert _value(registry, "workqueue_retries_total", name) == 2
    # Buckets are 1e-8 .. 1e3 by factors of 10; x and y each waited 3 s.
    buckets = {
        s.labels["le"]: s.value
        for family in registry.collect()
        if family.name == "workqueue_queue_duration_seconds"
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["name"] == name
    }
    assert list(buckets) == [repr(10.0**e) for e in range(-8, 4)] + ["+Inf"]
    assert buckets["1.0"] == 0
    assert buckets["10.0"] == 2


def test_metrics_shared_registry_and_reused_names(closing: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    registry = CollectorRegistry(auto_describe=True)
    a, b = unique("a"), unique("b")
    qa1: Queue[str] = closing(Queue(a, clock=clock, registry=registry))
    qa2: Queue[str] = closing(Queue(a, clock=clock, registry=registry))  # same name: must not raise
    qb: DelayingQueue[str] = closing(DelayingQueue(b, clock=clock, registry=registry))
    qa1.add("1")
    qa2.add("1")
    qb.add("1")
    assert _value(registry, "workqueue_adds_total", a) == 2
    assert _value(registry, "workqueue_adds_total", b) == 1

    qa1.get(timeout=PROMPT)
    qa2.get(timeout=PROMPT)
    clock.advance(5)
    qb.get(timeout=PROMPT)
    clock.advance(1)
    assert _value(registry, "workqueue_unfinished_work_seconds", a) == pytest.approx(12)
    assert _value(registry, "workqueue_longest_running_processor_seconds", a) == pytest.approx(6)
    assert _value(registry, "workqueue_unfinished_work_seconds", b) == pytest.approx(1)


def test_unnamed_queue_exports_nothing_and_named_defaults_to_runtime_registry(
    closing: Callable[[Any], Any],
) -> None:
    name = unique("default-registry")
    q: Queue[str] = closing(Queue(name))
    q.add("k")
    assert _value(runtime_metrics.REGISTRY, "workqueue_adds_total", name) == 1

    registry = CollectorRegistry(auto_describe=True)
    anon: Queue[str] = closing(Queue(registry=registry))
    anon.add("k")
    assert _value(registry, "workqueue_adds_total", "") is None
