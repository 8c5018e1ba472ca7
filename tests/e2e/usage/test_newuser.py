"""What a new user trips over (issue 17), against the real control plane: Redis data kept through spec
changes, Ready while scaling, an HPA aimed at a worker Deployment, and what the operator logs at info."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.controllers.storage import RELEASED_ANNOTATION
from ojsctrl.runtime.client import DEPLOYMENTS, EVENTS, HPAS, JSON_PATCH, PVCS, SECRETS, SERVICES, Client
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import (
    cond_of,
    driver,
    get,
    namespace,
    ojs_cluster,
    ojs_worker,
    secret,
    status_of,
    wait_until,
)
from tests.harness.operator import OperatorProcess

MARKER = "example.com/data-marker"


@pytest.fixture(scope="module")
def operator(crds: ControlPlane) -> Iterator[OperatorProcess]:
    # At info, as a user runs it: the log test reads what this level shows. No OJS server answers.
    op = OperatorProcess(
        crds,
        "ojsctrl",
        "--ojs-url-template",
        f"http://127.0.0.1:{free_port()}",
        "--log-level",
        "info",
        name="ojsctrl-newuser",
    )
    wait_until("operator ready", op.ready, 60)
    yield op
    op.stop()


def owners(obj: dict[str, Any] | None) -> list[str]:
    return [r.get("uid") for r in ((obj or {}).get("metadata") or {}).get("ownerReferences") or ()]


def annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def events(client: Client, ns: str, name: str) -> list[dict[str, Any]]:
    items, _ = client.list(EVENTS, ns, field_selector=f"involvedObject.name={name}")
    return items


def released(client: Client, res: Any, ns: str, name: str) -> bool:
    obj = get(client, res, ns, name)
    return obj is not None and not owners(obj) and RELEASED_ANNOTATION in annotations(obj)


def test_redis_claim_and_secret_survive_spec_changes_and_deletion(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "keep")
    spec = {
        "replicas": 1,
        "backend": {"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi"}}},
    }
    cr = client.create(OJSCLUSTERS, ojs_cluster(ns, "c", spec), ns)
    uid = cr["metadata"]["uid"]
    wait_until("the claim", lambda: owners(get(client, PVCS, ns, "c-redis")) == [uid], 60)
    wait_until("the Redis Secret", lambda: owners(get(client, SECRETS, ns, "c-redis")) == [uid], 60)
    # The data marker: a label of the user's on the claim, checked after every step.
    client.patch(PVCS, "c-redis", {"metadata": {"labels": {MARKER: "keep-me"}}}, ns)
    # No provisioner in this plane: the claim stays unbound, and the status names it.
    wait_until(
        "the unbound claim named in the status",
        lambda: (
            "PersistentVolumeClaim c-redis is Pending"
            in cond_of(get(client, OJSCLUSTERS, ns, "c"), "Ready").get("message", "")
        ),
        60,
    )

    # 1. Remove the storage (the issue's exact command): the claim is released, not deleted.
    client.patch(
        OJSCLUSTERS, "c", [{"op": "remove", "path": "/spec/backend/redis/storage"}], ns, patch_type=JSON_PATCH
    )
    wait_until("claim released", lambda: released(client, PVCS, ns, "c-redis"), 30)
    pvc = client.get(PVCS, "c-redis", ns)
    assert pvc["metadata"]["labels"][MARKER] == "keep-me"
    assert "spec.backend.redis.storage was removed" in annotations(pvc)[RELEASED_ANNOTATION]
    wait_until(
        "a Warning event saying how to delete it",
        lambda: any(
            e["type"] == "Warning"
            and e["reason"] == "Released"
            and "kubectl delete persistentvolumeclaim c-redis" in e["message"]
            for e in events(client, ns, "c")
        ),
        30,
    )
    # Redis now runs on an emptyDir; the Secret stays the cluster's.
    wait_until(
        "Redis on an emptyDir",
        lambda: (
            "emptyDir" in client.get(DEPLOYMENTS, "c-redis", ns)["spec"]["template"]["spec"]["volumes"][0]
        ),
        30,
    )
    assert owners(client.get(SECRETS, "c-redis", ns)) == [uid]

    # 2. The same storage again: the claim is adopted back (data and marker kept).
    client.patch(OJSCLUSTERS, "c", {"spec": {"backend": {"redis": {"storage": {"size": "1Gi"}}}}}, ns)
    wait_until("claim adopted", lambda: owners(get(client, PVCS, ns, "c-redis")) == [uid], 30)
    pvc = client.get(PVCS, "c-redis", ns)
    assert RELEASED_ANNOTATION not in annotations(pvc) and pvc["metadata"]["labels"][MARKER] == "keep-me"

    # 3. A smaller size cannot be applied: a clear condition, not the API server's diff.
    client.patch(OJSCLUSTERS, "c", {"spec": {"backend": {"redis": {"storage": {"size": "512Mi"}}}}}, ns)
    wait_until(
        "StorageChangeRefused",
        lambda: (
            cond_of(get(client, OJSCLUSTERS, ns, "c"), "Degraded").get("reason") == "StorageChangeRefused"
        ),
        30,
    )
    msg = cond_of(client.get(OJSCLUSTERS, "c", ns), "Degraded")["message"]
    assert msg.startswith("spec.backend.redis.storage.size:") and "cannot shrink" in msg, msg
    client.patch(OJSCLUSTERS, "c", {"spec": {"backend": {"redis": {"storage": {"size": "1Gi"}}}}}, ns)

    # 4. Embedded off: the claim and the password Secret are released; Deployment and Service (which hold
    # no data when a claim does) are deleted.
    client.patch(
        OJSCLUSTERS,
        "c",
        {"spec": {"backend": {"embedded": False, "redis": None, "url": "redis://elsewhere.invalid:6379"}}},
        ns,
    )
    wait_until("claim released again", lambda: released(client, PVCS, ns, "c-redis"), 30)
    wait_until("Secret released", lambda: released(client, SECRETS, ns, "c-redis"), 30)
    wait_until(
        "Redis Deployment and Service deleted",
        lambda: (
            get(client, DEPLOYMENTS, ns, "c-redis") is None and get(client, SERVICES, ns, "c-redis") is None
        ),
        30,
    )
    assert (
        "embedded Redis was turned off"
        in annotations(client.get(SECRETS, "c-redis", ns))[RELEASED_ANNOTATION]
    )

    # 5. Deleting the cluster: its owned children go with it (garbage collection); released ones stay.
    client.delete(OJSCLUSTERS, "c", ns)
    wait_until("server Deployment collected", lambda: get(client, DEPLOYMENTS, ns, "c-server") is None, 180)
    time.sleep(3)
    pvc = get(client, PVCS, ns, "c-redis")
    assert pvc is not None and pvc["metadata"]["labels"][MARKER] == "keep-me"
    assert get(client, SECRETS, ns, "c-redis") is not None


def test_embedded_redis_without_storage_keeps_running_when_turned_off(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "keep-pod")
    spec = {"replicas": 1, "backend": {"type": "redis", "embedded": True}}
    client.create(OJSCLUSTERS, ojs_cluster(ns, "c", spec), ns)
    wait_until("the Redis Deployment", lambda: owners(get(client, DEPLOYMENTS, ns, "c-redis")) != [], 60)
    client.patch(
        OJSCLUSTERS,
        "c",
        {"spec": {"backend": {"embedded": False, "url": "redis://elsewhere.invalid:6379"}}},
        ns,
    )
    # Its data lives only in the pod: the Deployment, Service and Secret are kept (released), not deleted.
    for res in (DEPLOYMENTS, SERVICES, SECRETS):
        wait_until(f"{res.kind} released", lambda res=res: released(client, res, ns, "c-redis"), 30)
    # Back on: adopted again, not a name conflict.
    client.patch(OJSCLUSTERS, "c", {"spec": {"backend": {"embedded": True, "url": None}}}, ns)
    for res in (DEPLOYMENTS, SERVICES, SECRETS):
        wait_until(f"{res.kind} adopted", lambda res=res: owners(get(client, res, ns, "c-redis")) != [], 30)
    assert cond_of(client.get(OJSCLUSTERS, "c", ns), "Degraded").get("reason") != "NameConflict"


def lite_cluster_and_worker(client: Client, ns: str, worker_spec: dict[str, Any]) -> None:
    client.create(OJSCLUSTERS, ojs_cluster(ns, "jobs", {"backend": {"type": "lite"}}), ns)
    body = {"clusterRef": "jobs", "jobTypes": ["t.run"], "image": "example.invalid/w:1", **worker_spec}
    client.create(OJSWORKERS, ojs_worker(ns, "w", body), ns)
    wait_until(
        "worker Running",
        lambda: status_of(get(client, OJSWORKERS, ns, "w")).get("phase") == "Running",
        90,
    )


def test_ready_stays_true_while_scaling_a_worker(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "scale")
    lite_cluster_and_worker(client, ns, {"replicas": 2})
    # kubectl scale ojsw w --replicas=4: through the scale subresource.
    client.patch(OJSWORKERS, "w", {"spec": {"replicas": 4}}, ns, subresource="scale")
    seen: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        obj = client.get(OJSWORKERS, "w", ns)
        ready = cond_of(obj, "Ready")
        seen.append((status_of(obj).get("phase", ""), ready.get("status", ""), ready.get("message", "")))
        if status_of(obj).get("readyReplicas") == 4 and seen[-1][0] == "Running":
            break
        time.sleep(0.05)
    assert seen[-1][0] == "Running", seen[-5:]
    assert all(s[1] == "True" for s in seen), [s for s in seen if s[1] != "True"]
    assert not any(s[0] == "Pending" for s in seen), seen
    # And back down.
    client.patch(OJSWORKERS, "w", {"spec": {"replicas": 1}}, ns, subresource="scale")
    wait_until("scaled down", lambda: status_of(client.get(OJSWORKERS, "w", ns)).get("replicas") == 1, 60)
    assert cond_of(client.get(OJSWORKERS, "w", ns), "Ready")["status"] == "True"


def test_hpa_on_the_worker_deployment_is_reported_and_not_fought(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "hpa")
    lite_cluster_and_worker(client, ns, {"replicas": 2})
    before = client.get(DEPLOYMENTS, "w-worker", ns)
    # kubectl autoscale deploy w-worker --min=3 --max=3: the HPA enforces its bounds without metrics.
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "w-worker", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w-worker"},
            "minReplicas": 3,
            "maxReplicas": 3,
        },
    }
    client.create(HPAS, hpa, ns)
    wait_until(
        "ReplicasManaged False naming the HPA",
        lambda: (
            f"HorizontalPodAutoscaler {ns}/w-worker"
            in cond_of(get(client, OJSWORKERS, ns, "w"), "ReplicasManaged").get("message", "")
        ),
        30,
    )
    c = cond_of(client.get(OJSWORKERS, "w", ns), "ReplicasManaged")
    assert c["status"] == "False" and c["reason"] == "ForeignReplicaWriter"
    assert "kubectl scale ojsw w" in c["message"]
    wait_until(
        "the HPA's 3 replicas", lambda: client.get(DEPLOYMENTS, "w-worker", ns)["spec"]["replicas"] == 3, 60
    )
    # No fight: over 45 s (three HPA sync periods) the replicas stay the HPA's, and the only write to the
    # Deployment's spec or annotations (each bumps its generation) is the HPA's scale. ojsctrl writes
    # nothing at all: yielding, it sends the HPA's count, which is no change.
    seen = {before["metadata"]["generation"]: before}
    counts = set()
    end = time.monotonic() + 45
    while time.monotonic() < end:
        d = client.get(DEPLOYMENTS, "w-worker", ns)
        counts.add(d["spec"]["replicas"])
        seen.setdefault(d["metadata"]["generation"], d)
        time.sleep(1)
    assert counts == {3}
    gens = sorted(seen)
    assert gens == [gens[0], gens[0] + 1], spec_changes([seen[g] for g in gens])
    assert any(e["reason"] == "ForeignReplicaWriter" for e in events(client, ns, "w"))

    # The HPA goes: ojsctrl manages the replicas again (spec.replicas 2).
    client.delete(HPAS, "w-worker", ns)
    wait_until(
        "ReplicasManaged True",
        lambda: cond_of(get(client, OJSWORKERS, ns, "w"), "ReplicasManaged").get("status") == "True",
        30,
    )
    wait_until(
        "spec.replicas again", lambda: client.get(DEPLOYMENTS, "w-worker", ns)["spec"]["replicas"] == 2, 30
    )


def spec_changes(objs: list[dict[str, Any]]) -> str:
    """What changed in a Deployment's spec and annotations between the generations seen, and who wrote
    it lately (managedFields)."""
    out = []
    for before, after in itertools.pairwise(objs):
        old, new = dict(before["spec"]), dict(after["spec"])
        old["annotations"] = annotations(before)
        new["annotations"] = annotations(after)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        out.append(
            f"generation {before['metadata']['generation']} -> {after['metadata']['generation']}: "
            f"{', '.join(changed)}; "
            + "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            + "; managers: "
            + json.dumps(
                [
                    {k: m.get(k) for k in ("manager", "operation", "time", "subresource")}
                    for m in after["metadata"].get("managedFields") or ()
                ]
            )
        )
    return "\n".join(out)


def log_lines(op: OperatorProcess) -> list[dict[str, Any]]:
    out = []
    for line in op.logs().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_info_logs_carry_transitions_once(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "logs")
    spec = {"backend": {"type": "lite"}, "auth": {"apiKeySecretRef": {"name": "key", "key": "api-key"}}}
    client.create(OJSCLUSTERS, ojs_cluster(ns, "c", spec), ns)
    obj = f"{ns}/c"

    def lines(event: str) -> list[dict[str, Any]]:
        return [e for e in log_lines(operator) if e.get("event") == event and e.get("object") == obj]

    wait_until(
        "problem found logged",
        lambda: any(e.get("reason") == "SecretNotFound" for e in lines("problem found")),
        30,
    )
    wait_until(
        "a SecretNotFound event",
        lambda: any(
            e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in events(client, ns, "c")
        ),
        30,
    )
    # Reconciles meanwhile (a label change) log nothing new.
    client.patch(OJSCLUSTERS, "c", {"metadata": {"labels": {"touched": "1"}}}, ns)
    time.sleep(2)
    assert len([e for e in lines("problem found") if e.get("reason") == "SecretNotFound"]) == 1
    value = "s3cr3t-value-never-logged"
    client.create(SECRETS, secret(ns, "key", {"api-key": value}), ns)
    wait_until("problem cleared logged", lambda: lines("problem cleared") != [], 30)
    assert lines("problem cleared")[0]["previous_reason"] == "SecretNotFound"
    assert value not in operator.logs()
    # No event is a generic "Error".
    assert not any(e["reason"] == "Error" for e in events(client, ns, "c"))

    # A hand edit of a child is undone, and said so once.
    wait_until("the server Deployment", lambda: get(client, DEPLOYMENTS, ns, "c-server") is not None, 30)
    client.patch(DEPLOYMENTS, "c-server", {"metadata": {"labels": {"app.kubernetes.io/part-of": "mine"}}}, ns)
    wait_until(
        "label restored",
        lambda: (
            client.get(DEPLOYMENTS, "c-server", ns)["metadata"]["labels"]["app.kubernetes.io/part-of"]
            == "ojs"
        ),
        30,
    )
    wait_until(
        "restored edit logged",
        lambda: any(
            e.get("event") == "restored a hand edit"
            and e.get("cluster") == obj
            and e.get("name") == "c-server"
            for e in log_lines(operator)
        ),
        10,
    )
