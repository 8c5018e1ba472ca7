"""OJS server faults (500s, slow and hung answers, malformed, huge and wrongly typed bodies): bounded in
time and memory, reported in status, and confined to the faulty cluster.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import FULL, cond_of, driver, wait_until
from tests.harness.ojs import CountingOJSServer
from tests.harness.operator import Shared, rss_mb, unexpected_failures
from tests.harness.storm import cluster_body, worker_body

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def test_ojs_server_faults_are_bounded_and_reported(
    crds: ControlPlane, shared: Shared, ojs: CountingOJSServer
) -> None:
    ns = shared.ns["faults"]
    client = driver(crds)
    op = shared.op
    queue = f"fq-{ns}"
    ojs.set_queue(queue, available=5, active=0)
    client.create(OJSCLUSTERS, cluster_body("faulty", ns), ns)
    client.create(OJSCLUSTERS, cluster_body("healthy", ns), ns)
    auto = {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 5,
        "targetJobsPerWorker": 10,
        "pollingInterval": "1s",
        "scaleDownDelay": "2s",
    }
    client.create(OJSWORKERS, worker_body("scaled", ns, "faulty", queues=[queue], autoScaling=auto), ns)
    client.create(OJSWORKERS, worker_body("control", ns, "healthy", queues=[queue], autoScaling=auto), ns)

    def replicas(name: str) -> int | None:
        return client.get(DEPLOYMENTS, name, ns)["spec"].get("replicas")

    def stats_ok(cluster: str) -> bool:
        return cond_of(client.get(OJSCLUSTERS, cluster, ns), "QueueStatsAvailable").get("status") == "True"

    wait_until("stats flowing", lambda: stats_ok("faulty") and stats_ok("healthy"), 60, 0.3)
    wait_until("one replica for 5 jobs", lambda: replicas("scaled-worker") == 1, 60, 0.3)
    rss_start = rss_mb(op.proc.pid)
    results: dict[str, dict[str, Any]] = {}
    faults: list[tuple[str, Callable[[], None]]] = [
        ("status_500", lambda: setattr(ojs.fail, "status_500", True)),
        ("slow_8s", lambda: setattr(ojs.fail, "slow", 8.0)),
        ("hang", lambda: (ojs._release.clear(), setattr(ojs.fail, "hang", True))),
        ("malformed_json", lambda: setattr(ojs.fail, "malformed_json", True)),
        (
            "huge_json_32MiB",
            lambda: (setattr(ojs.fail, "huge_bytes", 32 * 1024 * 1024), setattr(ojs.fail, "huge_json", True)),
        ),
        ("wrong_types", lambda: setattr(ojs.fail, "wrong_types", True)),
        ("negative_counts", lambda: setattr(ojs.fail, "negative_counts", True)),
    ]
    peak = rss_start
    try:
        for name, arm in faults:
            ojs.fail.paths = (f"/{ns}/faulty/",)
            control_before = ojs.poll_counts().get(f"/{ns}/healthy", 0)
            arm()
            armed = time.monotonic()
            time.sleep(0.3)  # a poll already past the fault check answers the old numbers
            # Garbage must never scale: the queue now says 45 jobs (5 replicas) but nobody can read it right.
            ojs.set_queue(queue, available=45)
            stop = threading.Event()
            samples: list[float] = []

            def sample(samples: list[float] = samples, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    samples.append(rss_mb(op.proc.pid))
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def reported() -> bool:
                c = cond_of(client.get(OJSCLUSTERS, "faulty", ns), "QueueStatsAvailable")
                return c.get("status") == "False" and c.get("reason") == "ServerUnreachable"

            wait_until(f"{name}: QueueStatsAvailable=False", reported, 45, 0.2)
            detected = time.monotonic() - armed
            msg = cond_of(client.get(OJSCLUSTERS, "faulty", ns), "QueueStatsAvailable")["message"]
            wcond = cond_of(client.get(OJSWORKERS, "scaled", ns), "Autoscaling")
            time.sleep(2)
            held = replicas("scaled-worker")
            control_polls = ojs.poll_counts().get(f"/{ns}/healthy", 0) - control_before
            stop.set()
            sampler.join()
            peak = max([peak, *samples])
            results[name] = {
                "condition_after_s": round(detected, 1),
                "message": msg[:120],
                "worker_reason": wcond.get("reason"),
                "replicas_held": held,
                "healthy_cluster_polls_meanwhile": control_polls,
                "rss_peak_mb": round(max(samples or [0.0]), 1),
            }
            assert held == 1, f"{name}: scaled on garbage to {held}"
            assert control_polls >= 2, f"{name}: the healthy cluster was not polled meanwhile"
            assert op.proc.poll() is None, f"{name}: the operator died"
            # Back to normal before the next fault (the queue first, so no poll sees 45).
            ojs.set_queue(queue, available=5)
            ojs.fail = type(ojs.fail)()
            ojs.release()
            wait_until(f"{name}: recovered", lambda: stats_ok("faulty"), 45, 0.2)
    finally:
        ojs.fail = type(ojs.fail)()
        ojs.release()
    assert peak - rss_start < 100, f"RSS grew from {rss_start:.0f} to {peak:.0f} MB"
    # After recovery the real depth scales as usual.
    ojs.set_queue(queue, available=45)
    wait_until("scales on real numbers again", lambda: replicas("scaled-worker") == 5, 60, 0.3)
    ojs.set_queue(queue, available=0)
    assert unexpected_failures(op) == []
    figure("ojs_faults", rss_start_mb=round(rss_start, 1), rss_peak_mb=round(peak, 1), faults=results)
