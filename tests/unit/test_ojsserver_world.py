"""The simulated job world's bookkeeping, without a cluster: Ready pods are fed in directly."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from ojsctrl.ojs.client import OJSClient
from tests.ojsserver.server import OJSTestServer
from tests.ojsserver.world import (
    TRACES,
    Job,
    PodState,
    Trace,
    World,
    diurnal,
    fixed,
    long_jobs,
    spike_then_idle,
    step_burst,
)


def constant(rate: float, duration: float, job: float, seed: int = 7) -> Trace:
    return Trace("constant", duration, lambda _t: rate, rate, fixed(job), seed)


def run(world: World, pods: Any, until: float, every: float = 1.0) -> None:
    t = world.clock
    while t < until:
        t = min(until, t + every)
        world.step(t, pods(t) if callable(pods) else pods)


def test_traces_are_reproducible_and_follow_their_rate() -> None:
    for make in TRACES.values():
        a, b = make().arrivals(), make().arrivals()
        assert a == b and a
    burst = step_burst(base=1.0, factor=10.0, duration=900, at=300, length=300).arrivals()
    before = sum(1 for t, _ in burst if t < 300)
    during = sum(1 for t, _ in burst if 300 <= t < 600)
    assert 200 < before < 400 and 2500 < during < 3500
    assert all(t < 120 or 720 <= t < 780 for t, _ in spike_then_idle().arrivals())
    assert all(t < 1200 for t, _ in long_jobs().arrivals())
    assert len(diurnal().arrivals()) == pytest.approx(2.0 * 2400, rel=0.1)


def test_enough_capacity_means_no_wait() -> None:
    world = World(constant(2.0, 300, 1.0), jobs_per_pod=4)
    world.step(0.0, 3)  # the pods are there before the first job
    run(world, 3, 320)
    s = world.summary()
    assert s["completed"] == s["jobs"] > 400
    assert s["wait_max"] == 0.0 and s["interrupted"] == 0
    assert s["pod_seconds"] == pytest.approx(3 * 320)


def test_capacity_bounds_throughput_and_the_queue_grows() -> None:
    world = World(constant(2.0, 100, 1.0), jobs_per_pod=1)
    run(world, 1, 100)
    # One slot, one-second jobs: about one completion per second, the rest waits.
    assert 97 <= world.completed <= 100
    last = world.history[-1]
    assert last.available == pytest.approx(world.summary()["jobs"] - world.completed - last.active, abs=0)
    assert last.available > 80
    assert world.summary()["wait_p95"] > 30


def test_results_do_not_depend_on_the_step_size() -> None:
    fine, coarse = (World(constant(3.0, 200, 2.5), jobs_per_pod=2) for _ in range(2))
    for w in (fine, coarse):
        w.step(0.0, 2)
    run(fine, 2, 260, every=0.5)
    run(coarse, 2, 260, every=7.0)
    assert [j.first_wait for j in fine.jobs] == pytest.approx([j.first_wait for j in coarse.jobs])
    assert max(j.first_wait or 0.0 for j in fine.jobs) > 5  # a real queue, not a trivial case
    assert fine.completed == coarse.completed


def test_a_terminating_pod_finishes_within_its_grace_and_interrupts_beyond() -> None:
    world = World(Trace("two", 10, lambda _t: 0.0, 0.0, fixed(1.0)), jobs_per_pod=1)
    # Two jobs by hand: 5 s and 50 s long, on two pods.
    world.jobs = [Job(0, 0.0, 5.0), Job(1, 0.0, 50.0)]
    world.step(0.0, {"a": PodState(True), "b": PodState(True)})
    assert {j.pod for j in world.jobs} == {"a", "b"}
    # Both pods are deleted at t=1 with a 10 s grace period.
    world.step(
        1.0, {"a": PodState(True, deadline=11.0), "b": PodState(True, deadline=11.0), "c": PodState(False)}
    )
    world.step(11.0, {"c": PodState(False)})
    short, long_ = world.jobs
    assert short.completed == 5.0 and short.interruptions == 0
    assert long_.interruptions == 1 and long_.completed is None
    assert world.interrupted == 1 and world.history[-1].available == 1
    # The requeued job runs on the next Ready pod, its second wait counted from the interruption.
    world.step(20.0, {"c": PodState(True)})
    assert long_.pod == "c" and long_.waits == [0.0, 9.0]


def test_a_vanished_pod_interrupts_its_jobs_at_once() -> None:
    world = World(constant(1.0, 5, 100.0), jobs_per_pod=10)
    run(world, 1, 5)
    running = world.history[-1].active
    assert running > 0
    world.step(6.0, {})
    assert world.interrupted == running and world.history[-1].available == running


def test_first_ready_from_zero_is_measured() -> None:
    world = World(spike_then_idle(rate=2.0, spike=20, idle=100, again=20), jobs_per_pod=4)
    world.step(0.0, 0)

    def pods(t: float) -> int:
        # Nothing at first, one pod from 10 s until 60 s, none again until 150 s.
        return 1 if 10 <= t < 60 or t >= 150 else 0

    run(world, pods, 260)
    waits = world.summary()["first_ready_from_zero"]
    assert len(waits) == 2
    assert 0 < waits[0] <= 10 and 0 < waits[1] <= 30


def test_the_world_answers_the_operators_api_shapes() -> None:
    with OJSTestServer() as server:
        world = World(constant(4.0, 30, 3.0), jobs_per_pod=2, server=server, queue="default")
        run(world, {"w-abc": PodState(True), "w-def": PodState(True)}, 20)
        client = OJSClient()
        try:
            stats = client.queue_stats(server.base_url, None)
            workers = client.workers(server.base_url, None)
        finally:
            client.close()
        point = world.history[-1]
        (queue,) = stats.queues
        assert (queue.name, queue.available, queue.active) == ("default", point.available, point.active)
        with urllib.request.urlopen(f"{server.base_url}/ojs/v1/admin/queues") as resp:
            body = json.load(resp)
        assert body["items"][0]["counts"]["completed"] == world.completed > 0
        ids = sorted(w.id for w in workers)
        assert [i.split("_")[1] for i in ids] == ["w-abc", "w-def"]
        assert all(i.startswith("worker_w-") for i in ids)
        assert sum(w.active_jobs for w in workers) == point.active
        # Drain quiets a worker: its pod takes no new job.
        server.set_worker(ids[0], state="quiet")
        run(world, {"w-abc": PodState(True), "w-def": PodState(True)}, 30)
        assert all(j.pod != "w-abc" for j in world.jobs if j.started is not None and j.started > 21)
        # A pod that is gone disappears from the workers.
        world.step(31.0, {"w-def": PodState(True)})
        assert [w for w in server._workers if "w-abc" in w] == []
