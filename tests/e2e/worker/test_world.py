"""The simulated job world on a real control plane: kwok worker pods become Ready after the stage delay and
process the jobs; a scale-down lets pods finish within their grace period."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.e2e.helpers import namespace
from tests.harness.controlplane import ControlPlane
from tests.ojsserver.kubeworld import PodWatcher, WorldDriver, api_client, selector_of, worker_deployment
from tests.ojsserver.server import OJSTestServer
from tests.ojsserver.world import Trace, World, fixed

STARTUP = 4.0


@pytest.fixture
def api(plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    client = api_client(plane.kubeconfig)
    try:
        yield client
    finally:
        client.close()


def wait_for(what: str, cond: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_kwok_pods_become_ready_after_the_stage_delay_and_process_jobs(
    plane: ControlPlane, api: k8s.ApiClient
) -> None:
    ns = namespace(plane, "world")
    dep = worker_deployment("sim", ns, replicas=2, startup_seconds=STARTUP, grace_seconds=3)
    trace = Trace("constant", 40.0, lambda _t: 2.0, 2.0, fixed(1.0), seed=5)
    apps = k8s.AppsV1Api(api)
    with OJSTestServer() as server:
        watcher = PodWatcher(api, ns, selector_of(dep)).start()
        world = World(trace, jobs_per_pod=2, start=time.time(), server=server)
        driver = WorldDriver(world, watcher, tick=0.25).start()
        try:
            created = time.time()
            apps.create_namespaced_deployment(ns, dep)
            wait_for("two pods", lambda: len(watcher.snapshot()) == 2)
            wait_for("two Ready pods", lambda: sum(p.ready for p in watcher.snapshot().values()) == 2)
            ready_after = time.time() - created
            # kwok's pod-ready stage waited the delay the pod annotation asks for.
            assert ready_after >= STARTUP - 0.5, ready_after
            # Jobs queued while no pod was Ready, then got processed.
            wait_for("jobs completed", lambda: world.completed >= 20)
            summary = world.summary()
            assert summary["wait_max"] >= STARTUP - 1.0  # the first jobs waited for the start-up
            assert summary["interrupted"] == 0
            # The double answers with the world's counts and one Go-style worker per pod.
            assert all(w.startswith("worker_sim-") for w in server._workers)
            # Scale to zero: pods terminate with their 3 s grace; one-second jobs finish within it.
            apps.patch_namespaced_deployment_scale("sim", ns, {"spec": {"replicas": 0}})
            wait_for("terminating pods", lambda: all(p.deadline for p in watcher.snapshot().values()))
            wait_for("pods gone", lambda: not watcher.snapshot(), timeout=60)
            # The world sees it at its next step.
            wait_for("the world without pods", lambda: world.history[-1].pods == 0, timeout=10)
            assert world.summary()["interrupted"] == 0
        finally:
            driver.stop()
            watcher.stop()
