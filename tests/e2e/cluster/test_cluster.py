"""The OJSCluster reconciler against the real control plane."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ojsctrl.api.backends import contract
from ojsctrl.controllers.common import OJSCLUSTERS
from ojsctrl.runtime.client import CONFIGMAPS, DEPLOYMENTS, PDBS, SECRETS, SERVICES, Resource
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import (
    cond,
    configmap,
    create,
    driver,
    foreign_deployment,
    get,
    gone,
    mutating_by_operator,
    namespace,
    ojs_cluster,
    phase,
    sample,
    secret,
    wait_until,
)
from tests.harness.operator import OperatorProcess, start_ojsctrl


@pytest.fixture(scope="module")
def operator(crds: ControlPlane) -> Iterator[OperatorProcess]:
    # Nothing listens on this port: queue stats are unavailable, which these tests expect.
    op = start_ojsctrl(crds, f"http://127.0.0.1:{free_port()}", name="ojsctrl-cluster")
    yield op
    op.stop()


def test_minimal_example_converges_with_every_child(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "minimal")
    cr = create(client, sample("readme-minimal-cluster.yaml")[0], ns)
    wait_until("ojs-minimal Running", lambda: phase(client, ns, "ojs-minimal") == "Running", 90)

    dep = client.get(DEPLOYMENTS, "ojs-minimal-server", ns)
    ref = dep["metadata"]["ownerReferences"][0]
    assert ref["uid"] == cr["metadata"]["uid"] and ref["controller"] and ref["blockOwnerDeletion"]
    labels = dep["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "ojs-server"
    assert labels["app.kubernetes.io/instance"] == "ojs-minimal"
    assert labels["app.kubernetes.io/component"] == "server"
    assert labels["app.kubernetes.io/managed-by"] == "ojsctrl"
    assert labels["app.kubernetes.io/part-of"] == "ojs"
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["name"] == "ojs-server"
    env = {e["name"]: e for e in c["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "ojs-minimal-redis", "key": "url"}
    assert env["OJS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ojs-minimal-api-key"
    assert pod["terminationGracePeriodSeconds"] == 40
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "grpc": 9090}
    # gRPC has no authentication: the Service carries 9090 only when spec.grpc.enabled (design.md §exposure).
    svc = client.get(SERVICES, "ojs-minimal-server", ns)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8080}
    assert c["image"] == "ghcr.io/openjobspec/ojs-backend-redis:v0.3.0"
    assert client.get(CONFIGMAPS, "ojs-minimal-config", ns)
    for name in ("ojs-minimal-redis",):
        assert (
            client.get(DEPLOYMENTS, name, ns)["metadata"]["labels"]["app.kubernetes.io/component"]
            == "backend"
        )
        assert client.get(SERVICES, name, ns)
        redis_secret = client.get(SECRETS, name, ns)
        assert set(redis_secret["data"]) == {"password", "url"}
    key = client.get(SECRETS, "ojs-minimal-api-key", ns)
    assert base64.b64decode(key["data"]["api-key"])
    assert get(client, PDBS, ns, "ojs-minimal-server") is None  # one replica: no budget

    status = client.get(OJSCLUSTERS, "ojs-minimal", ns)["status"]
    assert status["endpoint"] == f"http://ojs-minimal-server.{ns}.svc.cluster.local:8080"
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    assert status["readyReplicas"] == 1
    assert cond(client, ns, "ojs-minimal", "QueueStatsAvailable")["status"] == "False"
    assert cond(client, ns, "ojs-minimal", "Ready")["status"] == "True"
    # No secret value leaks into the status or the ConfigMap.
    secret_values = [base64.b64decode(v).decode() for v in redis_secret["data"].values()]
    secret_values.append(base64.b64decode(key["data"]["api-key"]).decode())
    dumped = str(status) + str(client.get(CONFIGMAPS, "ojs-minimal-config", ns))
    assert not any(v in dumped for v in secret_values)

    # Steady state: an update that changes nothing (a label on the cluster) causes no child write.
    time.sleep(2)
    since = time.time()
    client.patch(OJSCLUSTERS, "ojs-minimal", {"metadata": {"labels": {"touched": "yes"}}}, ns)
    time.sleep(4)
    assert mutating_by_operator(crds, since, ns) == []

    client.patch(OJSCLUSTERS, "ojs-minimal", {"spec": {"grpc": {"enabled": True}}}, ns)
    wait_until(
        "grpc on the Service",
        lambda: (
            {p["name"] for p in client.get(SERVICES, "ojs-minimal-server", ns)["spec"]["ports"]}
            == {"http", "grpc"}
        ),
        60,
    )
    client.patch(OJSCLUSTERS, "ojs-minimal", {"spec": {"grpc": {"enabled": False}}}, ns)
    wait_until(
        "grpc off the Service",
        lambda: (
            {p["name"] for p in client.get(SERVICES, "ojs-minimal-server", ns)["spec"]["ports"]} == {"http"}
        ),
        60,
    )

    # Turning embedded Redis off (with a URL instead): without storage its data lives only in its pod, so
    # its objects are released (kept, no longer owned), not deleted (design.md §storage, docs/storage.md).
    client.patch(
        OJSCLUSTERS, "ojs-minimal", {"spec": {"backend": {"embedded": False, "url": "redis://ext:6379"}}}, ns
    )
    wait_until(
        "redis objects released",
        lambda: all(
            not (get(client, res, ns, "ojs-minimal-redis") or {}).get("metadata", {}).get("ownerReferences")
            for res in (DEPLOYMENTS, SERVICES, SECRETS)
        ),
        60,
    )

    def server_reads_the_url() -> bool:
        dep = client.get(DEPLOYMENTS, "ojs-minimal-server", ns)
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["REDIS_URL"].get("value") == "redis://ext:6379"

    wait_until("the server reads REDIS_URL from spec.backend.url", server_reads_the_url, 60)


def test_production_example_secret_rotation_monitoring_and_pdb(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "prod")
    create(client, sample("readme-production-cluster.yaml")[0], ns)
    wait_until(
        "Error while the Secret is missing", lambda: phase(client, ns, "ojs-production") == "Error", 60
    )
    bc = cond(client, ns, "ojs-production", "BackendReady")
    assert bc["status"] == "False" and "redis-credentials" in bc["message"]

    client.create(SECRETS, secret(ns, "redis-credentials", {"url": "redis://:pw-one@redis:6379/0"}), ns)
    wait_until("Running once the Secret exists", lambda: phase(client, ns, "ojs-production") == "Running", 90)
    dep = client.get(DEPLOYMENTS, "ojs-production-server", ns)
    assert dep["spec"]["replicas"] == 3
    assert dep["metadata"]["annotations"].get("ojs.openjobspec.dev/autoscaler") == "true"
    pdb = client.get(PDBS, "ojs-production-server", ns)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    dash = client.get(CONFIGMAPS, "ojs-production-dashboard", ns)
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    mr = cond(client, ns, "ojs-production", "MonitoringReady")
    assert mr["status"] == "False" and mr["reason"] == "CRDNotInstalled"

    # Rotating the referenced Secret rolls the pods (the template hash covers its data).
    before = dep["spec"]["template"]["metadata"]["annotations"]["ojs.openjobspec.dev/config-hash"]
    client.patch(SECRETS, "redis-credentials", {"stringData": {"url": "redis://:pw-two@redis:6379/0"}}, ns)
    wait_until(
        "config hash changed",
        lambda: (
            client.get(DEPLOYMENTS, "ojs-production-server", ns)["spec"]["template"]["metadata"][
                "annotations"
            ]["ojs.openjobspec.dev/config-hash"]
            != before
        ),
        60,
    )
    dumped = str(client.get(DEPLOYMENTS, "ojs-production-server", ns))
    assert "pw-two" not in dumped and "pw-one" not in dumped

    # The ServiceMonitor CRD appearing later is noticed without touching the cluster.
    # The real ServiceMonitor CRD, from the pinned prometheus-operator module.
    crds.kubectl("apply", "--server-side", "-f", str(binaries.servicemonitor_crd()))
    sm = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
    wait_until("ServiceMonitor created", lambda: get(client, sm, ns, "ojs-production-server") is not None, 60)
    # The real CRD keeps the bearer authorization (an unknown field would have been refused or pruned).
    endpoint = client.get(sm, "ojs-production-server", ns)["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "ojs-production-api-key", "key": "api-key"},
    }
    wait_until(
        "MonitoringReady",
        lambda: cond(client, ns, "ojs-production", "MonitoringReady").get("status") == "True",
        60,
    )


def test_name_conflict_and_user_edits(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "conflict")
    client.create(CONFIGMAPS, configmap(ns, "ojs-lite-config", mine="keep"), ns)
    create(client, sample("backend-lite.yaml")[0], ns)
    wait_until("Degraded with NameConflict", lambda: phase(client, ns, "ojs-lite") == "Degraded", 60)
    deg = cond(client, ns, "ojs-lite", "Degraded")
    assert deg["reason"] == "NameConflict" and "ojs-lite-config" in deg["message"]
    assert client.get(CONFIGMAPS, "ojs-lite-config", ns)["data"] == {"mine": "keep"}
    assert "ownerReferences" not in client.get(CONFIGMAPS, "ojs-lite-config", ns)["metadata"]

    client.delete(CONFIGMAPS, "ojs-lite-config", ns)
    wait_until("Running after the conflict is gone", lambda: phase(client, ns, "ojs-lite") == "Running", 90)
    dep = client.get(DEPLOYMENTS, "ojs-lite-server", ns)
    assert dep["spec"]["strategy"]["type"] == "Recreate"

    # A user's annotation is kept; an edit of an owned field is restored; a deleted child comes back.
    client.patch(
        SERVICES,
        "ojs-lite-server",
        {
            "metadata": {"annotations": {"team": "payments"}},
            "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 9999}]},
        },
        ns,
    )
    wait_until(
        "owned field restored",
        lambda: (
            {
                p["name"]: p.get("targetPort")
                for p in client.get(SERVICES, "ojs-lite-server", ns)["spec"]["ports"]
            }.get("http")
            in ("http", 8080)
        ),
        60,
    )
    assert client.get(SERVICES, "ojs-lite-server", ns)["metadata"]["annotations"]["team"] == "payments"
    client.delete(DEPLOYMENTS, "ojs-lite-server", ns)
    wait_until(
        "deleted child recreated", lambda: get(client, DEPLOYMENTS, ns, "ojs-lite-server") is not None, 60
    )

    # Deleting the cluster garbage-collects its children (no finalizer).
    client.delete(OJSCLUSTERS, "ojs-lite", ns)
    wait_until("children collected", lambda: gone(client, ns, "ojs-lite-server", DEPLOYMENTS, SERVICES), 90)


def test_invalid_spec_that_bypassed_admission_gets_a_condition(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "invalid")
    # requests > limits is a Python-only rule: CEL admits it, the reconciler must refuse it clearly.
    obj = sample("backend-nats.yaml")[0]
    obj["spec"]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    create(client, obj, ns)
    wait_until(
        "Error / InvalidSpec",
        lambda: cond(client, ns, "ojs-nats", "Ready").get("reason") == "InvalidSpec",
        60,
    )
    assert "spec.resources" in cond(client, ns, "ojs-nats", "Ready")["message"]
    assert phase(client, ns, "ojs-nats") == "Error"
    assert get(client, DEPLOYMENTS, ns, "ojs-nats-server") is None


def _ref(name: str, key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


# The env each real server reads its store from (ojsctrl.api.backends), as the samples configure it.
SAMPLE_ENV: dict[str, dict[str, dict[str, Any]]] = {
    "redis": {"REDIS_URL": {"value": "redis://redis.example.svc:6379/0"}},
    "postgres": {"DATABASE_URL": _ref("postgres-credentials", "url")},
    "nats": {"NATS_URL": {"value": "nats://nats.example.svc:4222"}},
    "kafka": {
        "KAFKA_BROKERS": {"value": "kafka-0.kafka.example.svc:9092,kafka-1.kafka.example.svc:9092"},
        "REDIS_URL": _ref("ojs-kafka-redis", "url"),  # the embedded state store
    },
    "sqs": {
        "AWS_REGION": {"value": "eu-west-1"},
        "DYNAMODB_TABLE": {"value": "ojs-jobs"},
        "SQS_QUEUE_PREFIX": {"value": "ojs"},
        "SQS_USE_FIFO": {"value": "false"},
    },
    "lite": {},
}
STORE_ENV = {n for env in SAMPLE_ENV.values() for n in env} | {"SQS_QUEUE_URL", "AWS_ENDPOINT_URL"}


def test_every_backend_sample_converges_with_the_env_its_server_reads(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "backends")
    for doc in sample("secrets.yaml"):
        client.create(SECRETS, {**doc, "metadata": {**doc["metadata"], "namespace": ns}}, ns)
    for t in SAMPLE_ENV:
        create(client, sample(f"backend-{t}.yaml")[0], ns)
    for t, expected in SAMPLE_ENV.items():
        wait_until(f"ojs-{t} Running", lambda t=t: phase(client, ns, f"ojs-{t}") == "Running", 120)
        c = client.get(DEPLOYMENTS, f"ojs-{t}-server", ns)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in c["env"]}
        assert {k: v for k, v in env.items() if k in STORE_ENV} == expected, (t, sorted(env))
        assert env["OJS_PORT"] == {"value": "8080"} and env["OJS_GRPC_PORT"] == {"value": "9090"}
        assert env["OJS_API_KEY"] == _ref(f"ojs-{t}-api-key", "api-key")
        assert c["image"] == f"ghcr.io/openjobspec/ojs-backend-{t}:{contract(t).tag}"
        assert c["readinessProbe"]["httpGet"]["path"] == "/ojs/v1/health"
        if t == "sqs":
            # AWS credentials from the user's envFrom, after the operator's ConfigMap.
            assert c["envFrom"] == [
                {"configMapRef": {"name": "ojs-sqs-config"}},
                {"secretRef": {"name": "aws-credentials"}},
            ]
    # Kafka's embedded state store is the embedded Redis: its Deployment, Service and Secret exist and are
    # what BackendReady waited for.
    for resource in (DEPLOYMENTS, SERVICES, SECRETS):
        assert (
            client.get(resource, "ojs-kafka-redis", ns)["metadata"]["ownerReferences"][0]["name"]
            == "ojs-kafka"
        )
    assert cond(client, ns, "ojs-kafka", "BackendReady")["message"] == "embedded Redis available"
    for t in ("redis", "nats", "postgres", "sqs", "lite"):
        assert get(client, DEPLOYMENTS, ns, f"ojs-{t}-redis") is None


def test_kafka_state_store_secret_rolls_the_servers(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "kafka-store")
    spec = {
        "backend": {
            "type": "kafka",
            "url": "k:9092",
            "stateStore": {"urlSecretRef": {"name": "kafka-redis", "key": "url"}},
        },
        "replicas": 1,
    }
    client.create(OJSCLUSTERS, ojs_cluster(ns, "k", spec), ns)
    wait_until("Error while the Secret is missing", lambda: phase(client, ns, "k") == "Error", 60)
    assert "spec.backend.stateStore.urlSecretRef" in cond(client, ns, "k", "BackendReady")["message"]
    client.create(SECRETS, secret(ns, "kafka-redis", {"url": "redis://:one@r:6379/0"}), ns)
    wait_until("Running once the Secret exists", lambda: phase(client, ns, "k") == "Running", 90)

    def template_hash() -> str:
        dep = client.get(DEPLOYMENTS, "k-server", ns)
        return str(dep["spec"]["template"]["metadata"]["annotations"]["ojs.openjobspec.dev/config-hash"])

    before = template_hash()
    client.patch(SECRETS, "kafka-redis", {"stringData": {"url": "redis://:two@r:6379/0"}}, ns)
    wait_until("config hash changed", lambda: template_hash() != before, 60)
    assert get(client, DEPLOYMENTS, ns, "k-redis") is None


def test_auth_disabled_pdb_variants_and_unowned_server_deployment(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "variants")
    spec = {"backend": {"type": "nats", "url": "nats://n:4222"}, "replicas": 3, "auth": {"disabled": True}}
    client.create(OJSCLUSTERS, ojs_cluster(ns, "v", spec), ns)
    wait_until("Running", lambda: phase(client, ns, "v") == "Running", 90)
    env = {
        e["name"]: e
        for e in client.get(DEPLOYMENTS, "v-server", ns)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["OJS_ALLOW_INSECURE_NO_AUTH"]["value"] == "true" and "OJS_API_KEY" not in env
    assert get(client, SECRETS, ns, "v-api-key") is None
    assert client.get(PDBS, "v-server", ns)["spec"]["maxUnavailable"] == 1
    client.patch(OJSCLUSTERS, "v", {"spec": {"podDisruptionBudget": {"minAvailable": 2}}}, ns)
    wait_until(
        "minAvailable 2",
        lambda: (
            (get(client, PDBS, ns, "v-server") or {}).get("spec", {}).get("minAvailable") == 2
            and "maxUnavailable" not in client.get(PDBS, "v-server", ns)["spec"]
        ),
        60,
    )
    client.patch(
        OJSCLUSTERS, "v", {"spec": {"podDisruptionBudget": {"enabled": False, "minAvailable": None}}}, ns
    )
    wait_until("PDB removed", lambda: get(client, PDBS, ns, "v-server") is None, 60)
    # An unrelated Secret changing does not roll the pods.
    before = client.get(DEPLOYMENTS, "v-server", ns)["spec"]["template"]["metadata"]["annotations"]
    client.create(SECRETS, secret(ns, "unrelated", {"x": "1"}), ns)
    client.patch(SECRETS, "unrelated", {"stringData": {"x": "2"}}, ns)
    time.sleep(3)
    assert client.get(DEPLOYMENTS, "v-server", ns)["spec"]["template"]["metadata"]["annotations"] == before

    # A pre-existing Deployment <name>-server that the operator does not own is left alone and reported.
    ns2 = namespace(crds, "foreign")
    client.create(DEPLOYMENTS, foreign_deployment(ns2, "f-server", "mine", "example.invalid/mine:1"), ns2)
    client.create(OJSCLUSTERS, ojs_cluster(ns2, "f", {"backend": {"type": "lite"}}), ns2)
    wait_until(
        "Degraded NameConflict",
        lambda: cond(client, ns2, "f", "Degraded").get("reason") == "NameConflict",
        60,
    )
    assert "f-server" in cond(client, ns2, "f", "Degraded")["message"]
    dep = client.get(DEPLOYMENTS, "f-server", ns2)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example.invalid/mine:1"
    assert "ownerReferences" not in dep["metadata"]
