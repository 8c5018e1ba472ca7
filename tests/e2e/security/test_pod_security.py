"""Everything the operator creates is admitted in a namespace enforcing the `restricted` Pod Security
Standard.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
    PODS,
    ApiError,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import FULL, REPLICASETS, AuditLog, driver, wait_until
from tests.harness.operator import Shared
from tests.harness.storm import MANAGED, cluster_body, worker_body

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def test_everything_created_is_admitted_under_restricted_pod_security(
    crds: ControlPlane, shared: Shared
) -> None:
    ns = shared.ns["psa"]
    client = driver(crds)
    audit = AuditLog(crds)
    objs = [
        (OJSCLUSTERS, cluster_body("lite", ns)),
        (OJSCLUSTERS, cluster_body("redis", ns, backend={"type": "redis", "embedded": True}, replicas=2)),
        (
            OJSCLUSTERS,
            cluster_body(
                "pvc",
                ns,
                backend={"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi"}}},
                securityContext={"runAsUser": 2000, "fsGroup": 2000},
            ),
        ),
        (OJSWORKERS, worker_body("plain", ns, "lite")),
        (
            OJSWORKERS,
            worker_body("custom", ns, "redis", securityContext={"runAsUser": 1000, "runAsGroup": 1000}),
        ),
        (
            OJSWORKERS,
            worker_body(
                "drained",
                ns,
                "redis",
                replicas=2,
                gracefulShutdown={"drainBeforeShutdown": True, "timeoutSeconds": 5},
            ),
        ),
        (
            OJSWORKERS,
            worker_body(
                "cpu",
                ns,
                "lite",
                resources={"requests": {"cpu": "100m"}},
                autoScaling={"enabled": True, "metric": "cpu", "minReplicas": 1, "maxReplicas": 3},
            ),
        ),
    ]
    # The namespace really enforces: a pod without the restricted settings is refused.
    with pytest.raises(ApiError) as refused:
        client.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "probe"},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]},
            },
            ns,
            dry_run=True,
        )
    assert refused.value.status == 403 and "restricted" in refused.value.message
    for res, body in objs:
        client.create(res, body, ns)

    def all_pods_created() -> bool:
        deps = client.list(DEPLOYMENTS, ns, label_selector=MANAGED)[0]
        if len(deps) != 9:  # 3 servers, 2 redis, 4 workers
            return False
        pods = client.list(PODS, ns)[0]
        for d in deps:
            sel = d["spec"]["selector"]["matchLabels"]
            mine = [
                p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
            ]
            if len(mine) < (d["spec"].get("replicas") or 0):
                return False
        return True

    wait_until("every pod of every Deployment admitted", all_pods_created, 120, 1.0)
    failed = []
    for rs in client.list(REPLICASETS, ns)[0]:
        for c in (rs.get("status") or {}).get("conditions") or []:
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
                failed.append(f"{rs['metadata']['name']}: {c.get('message')}")
    assert failed == []
    violations = [
        f"{e['verb']} {e['requestURI']}: {e['annotations']['pod-security.kubernetes.io/audit-violations']}"
        for e in audit.events(ns)
        if "pod-security.kubernetes.io/audit-violations" in (e.get("annotations") or {})
        and "dryRun" not in e.get("requestURI", "")  # the probe above
    ]
    assert violations == []
    denied = [
        e["requestURI"]
        for e in audit.events(ns)
        if (e.get("responseStatus") or {}).get("code") == 403 and "dryRun" not in e.get("requestURI", "")
    ]
    assert denied == []
    pods = client.list(PODS, ns)[0]
    figure(
        "pod_security",
        namespace_labels="enforce/warn/audit=restricted",
        deployments=len(client.list(DEPLOYMENTS, ns, label_selector=MANAGED)[0]),
        pods_admitted=len(pods),
        audit_violations=len(violations),
        replicaset_failures=len(failed),
    )
