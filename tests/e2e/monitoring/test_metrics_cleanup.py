"""A deleted OJSCluster's and OJSWorker's series leave /metrics: queue gauges, poll errors, the desired
replicas gauge and the scale counters do not outlive the objects they describe."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import DEPLOYMENTS, Client
from tests.e2e.helpers import (
    OperatorProcess,
    driver,
    get,
    namespace,
    ojs_cluster,
    ojs_worker,
    replicas,
    start_ojsctrl,
    wait_until,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.ojs import keyed_ojs_server
from tests.ojsserver.server import OJSTestServer

OJS_URL = "/{namespace}/{name}"


@pytest.fixture(scope="module")
def ojs_server(crds: ControlPlane) -> Iterator[OJSTestServer]:
    server = keyed_ojs_server(driver(crds))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    op = start_ojsctrl(crds, ojs_server.base_url + OJS_URL, name="ojsctrl-metrics-cleanup")
    yield op
    op.stop()


def ojs_series(op: OperatorProcess, ns: str) -> set[tuple[str, str, str]]:
    """(sample name, object label, its value) of every ojs_* sample about namespace ``ns``."""
    out = set()
    for fam in text_string_to_metric_families(op.metrics()):
        for s in fam.samples:
            if s.name.startswith("ojs_") and s.labels.get("namespace") == ns:
                obj = next(k for k in ("cluster", "worker", "name") if k in s.labels)
                out.add((s.name, obj, s.labels[obj]))
    return out


def under_autoscaler(client: Client, ns: str, dep: str) -> bool:
    """The Deployment's replicas are the autoscaler's (its annotation says so)."""
    annotations = (get(client, DEPLOYMENTS, ns, dep) or {}).get("metadata", {}).get("annotations")
    return (annotations or {}).get("ojs.openjobspec.dev/autoscaler") == "true"


def test_deleted_cluster_and_worker_leave_metrics(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "metrics-gone")
    queue = f"q-{ns}"
    # A cluster whose servers autoscale on queue depth (its queue gauges and an OJSCluster scale counter)...
    client.create(
        OJSCLUSTERS,
        ojs_cluster(
            ns,
            "jobs",
            {
                "backend": {"type": "redis", "url": "redis://r:6379"},
                "autoScaling": {
                    "enabled": True,
                    "minReplicas": 1,
                    "maxReplicas": 3,
                    "targetQueueDepth": 100,
                    "scaleUpCooldown": "0s",
                },
            },
        ),
        ns,
    )
    # ...a second one whose server answers 500 (its poll-error counter)...
    ojs_server.fail.paths = (f"/{ns}/broken/",)
    ojs_server.fail.status_500 = True
    client.create(OJSCLUSTERS, ojs_cluster(ns, "broken", {"backend": {"type": "lite"}}), ns)
    # ...and a worker that autoscales on the same queue (desired replicas gauge, OJSWorker scale counter).
    spec = {
        "clusterRef": "jobs",
        "jobTypes": ["t.run"],
        "queues": [queue],
        "image": "example.invalid/w:1",
        "autoScaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 5,
            "targetJobsPerWorker": 100,
            "pollingInterval": "1s",
        },
    }
    client.create(OJSWORKERS, ojs_worker(ns, "scaler", spec), ns)
    try:
        wait_until("worker under the autoscaler", lambda: under_autoscaler(client, ns, "scaler-worker"), 60)
        wait_until("servers under the autoscaler", lambda: under_autoscaler(client, ns, "jobs-server"), 60)
        ojs_server.set_queue(queue, available=250, active=1)
        wait_until("3 workers", lambda: replicas(client, ns, "scaler-worker") == 3, 60)
        wait_until("3 servers", lambda: replicas(client, ns, "jobs-server") == 3, 60)
        expected = {
            ("ojs_cluster_queue_depth", "cluster", "jobs"),
            ("ojs_cluster_active_jobs", "cluster", "jobs"),
            ("ojs_queue_stats_errors_total", "cluster", "broken"),
            ("ojs_worker_desired_replicas", "worker", "scaler"),
            ("ojs_autoscaler_scale_total", "name", "jobs"),
            ("ojs_autoscaler_scale_total", "name", "scaler"),
        }
        wait_until("every series present", lambda: expected <= ojs_series(operator, ns), 60)

        for resource, name in ((OJSWORKERS, "scaler"), (OJSCLUSTERS, "jobs"), (OJSCLUSTERS, "broken")):
            client.delete(resource, name, ns)
        wait_until(
            "objects gone",
            lambda: all(
                get(client, res, ns, n) is None
                for res, n in ((OJSWORKERS, "scaler"), (OJSCLUSTERS, "jobs"), (OJSCLUSTERS, "broken"))
            ),
            60,
        )
        wait_until("no series of the namespace left", lambda: not ojs_series(operator, ns), 30)
    finally:
        ojs_server.fail.status_500 = False
        ojs_server.fail.paths = ()
        ojs_server.remove_queue(queue)
