"""The autoscaler's replica writes through the real API server: a decision is one apply without force (no
read of the Deployment first), and a field manager that set the replicas lately is found through the
API server's conflict answer and left alone (design.md §field-managers)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import DEPLOYMENTS
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import UA, driver, namespace, ojs_cluster, ojs_worker, replicas, wait_until, wcond
from tests.harness.ojs import keyed_ojs_server
from tests.harness.operator import OperatorProcess, start_ojsctrl
from tests.ojsserver.server import OJSTestServer


@pytest.fixture(scope="module")
def ojs_server(crds: ControlPlane) -> Iterator[OJSTestServer]:
    server = keyed_ojs_server(driver(crds))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    op = start_ojsctrl(
        crds, ojs_server.base_url + "/{namespace}/{name}", "--sync-period", "10h", name="ojsctrl-writers"
    )
    yield op
    op.stop()


def deployment_requests(crds: ControlPlane, ns: str, name: str, since: float) -> list[str]:
    """The operator's requests on Deployment ``name`` since then (wall clock), from the audit log."""
    out = []
    for e in crds.audit_events():
        ref = e.get("objectRef") or {}
        if not e.get("userAgent", "").startswith(UA) or ref.get("resource") != "deployments":
            continue
        if ref.get("namespace") != ns or ref.get("name") != name:
            continue
        ts = e.get("stageTimestamp", "")
        t = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone if ts else 0.0
        if t >= since:
            query = e["requestURI"].split("?", 1)[1] if "?" in e["requestURI"] else ""
            out.append(f"{e['verb']} {query}".strip())
    return out


def test_a_decision_is_one_apply_and_a_live_foreign_writer_is_found_by_its_conflict(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "writers")
    q = f"writers-{ns}"
    ojs_server.set_queue(q, available=0, active=0)
    client.create(OJSCLUSTERS, ojs_cluster(ns, "jobs", {"backend": {"type": "lite"}}), ns)
    body = {
        "clusterRef": "jobs",
        "jobTypes": ["t.run"],
        "queues": [q],
        "image": "example.invalid/w:1",
        "replicas": 1,
        "autoScaling": {
            "enabled": True,
            "pollingInterval": "1s",
            "minReplicas": 1,
            "maxReplicas": 6,
            "targetJobsPerWorker": 5,
        },
    }
    client.create(OJSWORKERS, ojs_worker(ns, "w", body), ns)
    dep = "w-worker"
    wait_until(
        "autoscaler holds replicas",
        lambda: (
            ((client.get(DEPLOYMENTS, dep, ns).get("metadata") or {}).get("annotations") or {}).get(
                "ojs.openjobspec.dev/autoscaler"
            )
            == "true"
        ),
        60,
    )
    time.sleep(2.0)  # the reconciles of the creation are over
    since = int(time.time())  # the audit log's times have whole seconds

    # A decision: one apply as the autoscaler's field manager, without force, and no read first.
    ojs_server.set_queue(q, available=10, active=0)
    wait_until("2 replicas for 10 jobs", lambda: replicas(client, ns, dep) == 2, 60)
    time.sleep(1.5)  # the audit log is written asynchronously
    writes = deployment_requests(crds, ns, dep, since)
    assert writes == ["patch fieldManager=ojsctrl-autoscaler"], writes

    # Another field manager sets the replicas; the next decision meets its conflict, names it and holds.
    client.apply(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": dep, "namespace": ns},
            "spec": {"replicas": 4},
        },
        field_manager="e2e-scaler",
        force=True,
    )
    ojs_server.set_queue(q, available=30, active=0)  # 6 wanted: a scale-up, written at once
    wait_until(
        "ReplicasManaged names the other writer",
        lambda: wcond(client, ns, "w", "ReplicasManaged").get("reason") == "ForeignReplicaWriter",
        60,
    )
    message = wcond(client, ns, "w", "ReplicasManaged").get("message", "")
    assert "e2e-scaler" in message, message
    held = wcond(client, ns, "w", "Autoscaling").get("message", "")
    assert "would scale to 6" in held, held
    time.sleep(3.0)  # several polls later, the other writer's count stands
    assert replicas(client, ns, dep) == 4
