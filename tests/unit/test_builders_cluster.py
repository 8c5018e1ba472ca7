"""The OJSCluster builders, table-style: one row per spec variant, the expected children beside it."""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import pytest

from ojsctrl.api import OJSCluster, validate_cluster
from ojsctrl.builders import cluster as b
from ojsctrl.builders.common import CONFIG_HASH_ANNOTATION, config_hash
from tests.unit.readme_examples import readme_documents
from tests.unit.test_builders_common import (
    NS,
    make_cluster,
    pod_specs,
    restricted_violations,
    with_identity,
)

API_KEY = "APIKEY-0123456789abcdef-secret"
REDIS_PASSWORD = "REDISPW-fedcba9876543210/+="
URL_SECRET_VALUE = "redis://:URLSECRET-pw@redis.example:6379/0"

SECRET_VALUES = [API_KEY, REDIS_PASSWORD, URL_SECRET_VALUE]


def build_all(cluster: OJSCluster, *, replicas: int | None = 2) -> list[dict[str, Any] | None]:
    """Every child of a cluster as the reconciler would build it (Secrets included when owned)."""
    objs: list[dict[str, Any] | None] = [
        b.server_config_map(cluster),
        b.server_deployment(cluster, image="img:v1", config_hash="h", replicas=replicas),
        b.server_service(cluster),
        b.pod_disruption_budget(cluster),
        b.service_monitor(cluster),
        b.dashboard_config_map(cluster),
    ]
    if b.generates_api_key(cluster):
        objs.append(b.api_key_secret(cluster, API_KEY))
    if b.embedded_redis_enabled(cluster):
        objs += [
            b.redis_secret(cluster, REDIS_PASSWORD),
            b.redis_deployment(cluster, config_hash="h"),
            b.redis_service(cluster),
            b.redis_pvc(cluster),
        ]
    return objs


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_map(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def server(spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    args = {"image": "img:v1", "config_hash": "h", "replicas": 2, **kw}
    return b.server_deployment(make_cluster(spec), **args)


def secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


# --- a grid of specs, all valid per the admission rules -----------------------------------------------------

_BACKENDS: list[dict[str, Any]] = [
    {"type": "redis", "url": "redis://redis:6379/0"},
    {"type": "redis", "urlSecretRef": {"name": "redis-creds", "key": "url"}},
    {"type": "redis", "embedded": True},
    {"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi", "storageClassName": "fast"}}},
    {"type": "postgres", "url": "postgres://db:5432/ojs"},
    {"type": "postgres", "urlSecretRef": {"name": "pg", "key": "dsn"}},
    {"type": "nats", "url": "nats://nats:4222"},
    {"type": "kafka", "urlSecretRef": {"name": "kafka", "key": "brokers"}, "stateStore": {"embedded": True}},
    {"type": "kafka", "url": "k:9092", "stateStore": {"urlSecretRef": {"name": "kredis", "key": "url"}}},
    {"type": "sqs", "sqs": {"region": "eu-west-1"}},
    {"type": "sqs", "sqs": {"region": "eu-west-1", "fifo": True, "endpoint": "http://localstack:4566"}},
    {"type": "lite"},
]
_AUTHS: list[dict[str, Any]] = [{}, {"disabled": True}, {"apiKeySecretRef": {"name": "mykey", "key": "k"}}]
_SECURITY: list[dict[str, Any] | None] = [
    None,
    {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
    {"runAsNonRoot": False, "readOnlyRootFilesystem": False},
    {"runAsUser": 0},
]
_EXTRAS: list[dict[str, Any]] = [
    {},
    {"replicas": 3, "monitoring": {"enabled": True, "serviceMonitor": True, "grafanaDashboard": True}},
    {
        "serviceAccountName": "sa",
        "podLabels": {"team": "a"},
        "autoScaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
    },
]


def grid() -> list[OJSCluster]:
    out = []
    for i, (backend, auth, security, extra) in enumerate(
        itertools.product(_BACKENDS, _AUTHS, _SECURITY, _EXTRAS)
    ):
        spec: dict[str, Any] = {"backend": backend, "auth": auth, **extra}
        if security is not None:
            spec["securityContext"] = security
        if backend["type"] == "lite":
            spec.pop("replicas", None)
            spec.pop("autoScaling", None)
        obj = make_cluster(spec, name=f"g{i}").to_dict()
        assert validate_cluster(obj).ok, (spec, validate_cluster(obj).messages())
        out.append(OJSCluster.from_dict(obj))
    return out


GRID = grid()


def test_grid_is_large() -> None:
    assert len(GRID) >= 300


@pytest.mark.parametrize("cluster", GRID, ids=lambda c: c.metadata["name"])
def test_every_pod_passes_the_restricted_profile(cluster: OJSCluster) -> None:
    pods = pod_specs(build_all(cluster))
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == []


@pytest.mark.parametrize("cluster", GRID, ids=lambda c: c.metadata["name"])
def test_no_secret_value_outside_the_two_secrets(cluster: OJSCluster) -> None:
    forms = set()
    for value in SECRET_VALUES:
        forms |= {value, base64.b64encode(value.encode()).decode(), value.encode().hex()}
    # The password appears percent-encoded in the Redis URL; make sure that form is caught too.
    forms.add("REDISPW-fedcba9876543210")
    for obj in build_all(cluster):
        if obj is None:
            continue
        text = json.dumps(obj)
        leaked = [f for f in forms if f in text]
        if obj["kind"] == "Secret":
            assert obj["metadata"]["name"] in (b.api_key_secret_name(cluster), b.redis_name(cluster))
            assert "stringData" not in obj
            continue
        assert leaked == [], (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("cluster", GRID[::7], ids=lambda c: c.metadata["name"])
def test_builders_are_deterministic(cluster: OJSCluster) -> None:
    first = json.dumps(build_all(cluster))
    again = json.dumps(build_all(OJSCluster.from_dict(cluster.to_dict())))
    assert first == again


@pytest.mark.parametrize("cluster", GRID, ids=lambda c: c.metadata["name"])
def test_every_child_is_owned_and_labelled(cluster: OJSCluster) -> None:
    for obj in build_all(cluster):
        if obj is None:
            continue
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "ojs.openjobspec.dev/v1alpha1",
                "kind": "OJSCluster",
                "name": cluster.metadata["name"],
                "uid": cluster.metadata["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/part-of"] == "ojs"
        assert labels["app.kubernetes.io/managed-by"] == "ojsctrl"
        assert labels["app.kubernetes.io/instance"] == cluster.metadata["name"]
        assert (labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]) in (
            ("ojs-server", "server"),
            ("redis", "backend"),
        )
        if obj["kind"] == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            assert set(selector) == {
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            }
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= template_labels.items()


# --- backend env --------------------------------------------------------------------------------------------


# Every env name any backend's store is configured by (the contract table's), so that a row can assert that
# no other backend's name leaks in (e.g. the SQS_QUEUE_URL no server reads).
STORE_ENV = {
    "REDIS_URL",
    "DATABASE_URL",
    "NATS_URL",
    "KAFKA_BROKERS",
    "AWS_REGION",
    "DYNAMODB_TABLE",
    "SQS_QUEUE_PREFIX",
    "SQS_USE_FIFO",
    "AWS_ENDPOINT_URL",
    "SQS_QUEUE_URL",
}


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ({"type": "redis", "url": "redis://r:6379"}, {"REDIS_URL": "redis://r:6379"}),
        ({"type": "postgres", "url": "postgres://p/db"}, {"DATABASE_URL": "postgres://p/db"}),
        ({"type": "nats", "url": "nats://n:4222"}, {"NATS_URL": "nats://n:4222"}),
        (
            {"type": "kafka", "url": "k1:9092,k2:9092", "stateStore": {"url": "redis://r:6379"}},
            {"KAFKA_BROKERS": "k1:9092,k2:9092", "REDIS_URL": "redis://r:6379"},
        ),
        (
            {"type": "kafka", "url": "k:9092", "stateStore": {"embedded": True}},
            {"KAFKA_BROKERS": "k:9092", "REDIS_URL": secret_ref("c1-redis", "url")},
        ),
        (
            {
                "type": "kafka",
                "urlSecretRef": {"name": "k", "key": "b"},
                "stateStore": {"urlSecretRef": {"name": "r", "key": "u"}},
            },
            {"KAFKA_BROKERS": secret_ref("k", "b"), "REDIS_URL": secret_ref("r", "u")},
        ),
        (
            {"type": "sqs", "sqs": {"region": "eu-west-1"}},
            {
                "AWS_REGION": "eu-west-1",
                "DYNAMODB_TABLE": "ojs-jobs",
                "SQS_QUEUE_PREFIX": "ojs",
                "SQS_USE_FIFO": "false",
            },
        ),
        (
            {
                "type": "sqs",
                "sqs": {
                    "region": "us-east-2",
                    "dynamodbTable": "jobs",
                    "queuePrefix": "team",
                    "fifo": True,
                    "endpoint": "http://localstack:4566",
                },
            },
            {
                "AWS_REGION": "us-east-2",
                "DYNAMODB_TABLE": "jobs",
                "SQS_QUEUE_PREFIX": "team",
                "SQS_USE_FIFO": "true",
                "AWS_ENDPOINT_URL": "http://localstack:4566",
            },
        ),
        (
            {"type": "redis", "urlSecretRef": {"name": "s", "key": "u"}},
            {"REDIS_URL": secret_ref("s", "u")},
        ),
        (
            {"type": "postgres", "urlSecretRef": {"name": "pg", "key": "dsn"}},
            {"DATABASE_URL": secret_ref("pg", "dsn")},
        ),
        ({"type": "nats", "urlSecretRef": {"name": "n", "key": "u"}}, {"NATS_URL": secret_ref("n", "u")}),
        ({"type": "redis", "embedded": True}, {"REDIS_URL": secret_ref("c1-redis", "url")}),
        ({"type": "lite"}, {}),
    ],
)
def test_backend_env(backend: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = {"backend": backend}
    assert validate_cluster(make_cluster(spec).to_dict()).ok
    env = env_map(server(spec, replicas=1))
    assert {k: v for k, v in env.items() if k in STORE_ENV} == expected
    assert env["OJS_PORT"] == "8080" and env["OJS_GRPC_PORT"] == "9090"


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({}, {"OJS_API_KEY": secret_ref("c1-api-key", "api-key"), "OJS_ALLOW_INSECURE_NO_AUTH": "false"}),
        (
            {"apiKeySecretRef": {"name": "mine", "key": "token"}},
            {"OJS_API_KEY": secret_ref("mine", "token"), "OJS_ALLOW_INSECURE_NO_AUTH": "false"},
        ),
        ({"disabled": True}, {"OJS_ALLOW_INSECURE_NO_AUTH": "true"}),
        (
            {"disabled": True, "apiKeySecretRef": {"name": "mine", "key": "token"}},
            {"OJS_ALLOW_INSECURE_NO_AUTH": "true"},
        ),
    ],
)
def test_auth_env(auth: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = {"backend": {"type": "nats", "url": "nats://n"}, "auth": auth}
    env = env_map(server(spec))
    got = {k: v for k, v in env.items() if k in ("OJS_API_KEY", "OJS_ALLOW_INSECURE_NO_AUTH")}
    assert got == expected
    cluster = make_cluster(spec)
    assert b.generates_api_key(cluster) == (auth == {})


def test_env_order_and_uniqueness() -> None:
    env = container(server({"backend": {"type": "redis", "url": "redis://r"}}))["env"]
    assert [e["name"] for e in env] == [
        "OJS_PORT",
        "OJS_GRPC_PORT",
        "REDIS_URL",
        "OJS_API_KEY",
        "OJS_ALLOW_INSECURE_NO_AUTH",
    ]


@pytest.mark.parametrize(
    ("backend", "auth", "refs"),
    [
        ({"type": "lite"}, {}, [("c1-api-key", "api-key")]),
        ({"type": "lite"}, {"disabled": True}, []),
        ({"type": "redis", "url": "redis://x"}, {"disabled": True}, []),
        ({"type": "redis", "embedded": True}, {}, [("c1-redis", "url"), ("c1-api-key", "api-key")]),
        (
            {"type": "nats", "urlSecretRef": {"name": "q", "key": "u"}},
            {"apiKeySecretRef": {"name": "k", "key": "v"}},
            [("q", "u"), ("k", "v")],
        ),
        (
            {"type": "kafka", "url": "k:9092", "stateStore": {"embedded": True}},
            {},
            [("c1-redis", "url"), ("c1-api-key", "api-key")],
        ),
        (
            {
                "type": "kafka",
                "urlSecretRef": {"name": "k", "key": "b"},
                "stateStore": {"urlSecretRef": {"name": "r", "key": "u"}},
            },
            {"disabled": True},
            [("k", "b"), ("r", "u")],
        ),
        ({"type": "sqs", "sqs": {"region": "eu-west-1"}}, {"disabled": True}, []),
    ],
)
def test_referenced_secret_keys(
    backend: dict[str, Any], auth: dict[str, Any], refs: list[tuple[str, str]]
) -> None:
    cluster = make_cluster({"backend": backend, "auth": auth})
    assert [(r.name, r.key) for r in b.referenced_secret_keys(cluster)] == refs


# --- server Deployment, Service, ConfigMap ------------------------------------------------------------------


def test_server_deployment_shape() -> None:
    dep = server({"backend": {"type": "redis", "url": "redis://r"}}, config_hash="abc", replicas=3)
    assert dep["apiVersion"] == "apps/v1"
    assert dep["metadata"]["name"] == "c1-server"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["annotations"] == {CONFIG_HASH_ANNOTATION: "abc"}
    pod = tmpl["spec"]
    assert pod["terminationGracePeriodSeconds"] == 40
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 65534
    assert pod["securityContext"]["runAsGroup"] == 65534
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    c = container(dep)
    assert c["name"] == "ojs-server"
    assert c["image"] == "img:v1"
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert c["envFrom"] == [{"configMapRef": {"name": "c1-config"}}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ojs/v1/health", "port": "http", "scheme": "HTTP"}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert c["startupProbe"]["tcpSocket"] == {"port": "http"}
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_server_replicas_none_is_omitted() -> None:
    dep = server({"backend": {"type": "nats", "url": "nats://n"}}, replicas=None)
    assert "replicas" not in dep["spec"]


@pytest.mark.parametrize(
    ("spec", "spread"),
    [
        ({"backend": {"type": "nats", "url": "n"}}, True),  # default replicas 2
        ({"backend": {"type": "nats", "url": "n"}, "replicas": 1}, False),
        ({"backend": {"type": "nats", "url": "n"}, "replicas": 3}, True),
        (
            {
                "backend": {"type": "nats", "url": "n"},
                "replicas": 1,
                "autoScaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
            },
            True,
        ),
        (
            {
                "backend": {"type": "nats", "url": "n"},
                "replicas": 3,
                "autoScaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1},
            },
            False,
        ),
        ({"backend": {"type": "lite"}}, False),
    ],
)
def test_default_spreading(spec: dict[str, Any], spread: bool) -> None:
    pod = server(spec)["spec"]["template"]["spec"]
    assert ("topologySpreadConstraints" in pod) is spread
    assert ("affinity" in pod) is spread
    # The decision follows the spec, not the live replicas the autoscaler passes in.
    assert server(spec, replicas=None) == {
        **server(spec),
        "spec": {k: v for k, v in server(spec)["spec"].items() if k != "replicas"},
    }


def test_user_pod_settings_are_applied() -> None:
    spec = {
        "backend": {"type": "nats", "url": "n"},
        "replicas": 3,
        "nodeSelector": {"pool": "jobs"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "jobs", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        ],
        "imagePullSecrets": [{"name": "regcred"}],
        "priorityClassName": "critical",
        "serviceAccountName": "ojs",
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "x"},
        "securityContext": {"runAsUser": 1234, "readOnlyRootFilesystem": False},
    }
    dep = server(spec)
    pod = dep["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "imagePullSecrets"):
        assert pod[key] == spec[key]
    assert pod["priorityClassName"] == "critical"
    assert pod["serviceAccountName"] == "ojs"
    assert "automountServiceAccountToken" not in pod
    assert pod["securityContext"]["runAsUser"] == 1234
    assert container(dep)["securityContext"]["readOnlyRootFilesystem"] is False
    meta = dep["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "x"
    assert meta["annotations"]["a"] == "b"
    # Only the pods carry podLabels; the Deployment's own labels are the operator's.
    assert "team" not in dep["metadata"]["labels"]


def test_lite_specifics() -> None:
    cluster = make_cluster({"backend": {"type": "lite"}})
    assert cluster.spec.effective_replicas() == 1
    dep = b.server_deployment(cluster, image="i", config_hash="h", replicas=1)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert b.pod_disruption_budget(cluster) is None
    assert b.server_config_map(cluster)["data"]["OJS_BACKEND_TYPE"] == "lite"
    assert b.redis_pvc(cluster) is None


@pytest.mark.parametrize("grpc", [None, {}, {"enabled": False}, {"enabled": True}])
def test_server_service_owns_only_its_fields(grpc: dict[str, Any] | None) -> None:
    spec: dict[str, Any] = {"backend": {"type": "lite"}}
    if grpc is not None:
        spec["grpc"] = grpc
    svc = b.server_service(make_cluster(spec))
    ports = [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    if grpc == {"enabled": True}:
        # gRPC has no authentication on any backend: exposed only when asked for (design.md §exposure).
        ports.append({"name": "grpc", "port": 9090, "targetPort": "grpc", "protocol": "TCP"})
    assert svc["metadata"]["name"] == "c1-server"
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": {
            "app.kubernetes.io/name": "ojs-server",
            "app.kubernetes.io/instance": "c1",
            "app.kubernetes.io/component": "server",
        },
        "ports": ports,
    }
    assert "clusterIP" not in svc["spec"]
    # The container keeps declaring both ports: toggling exposure must not roll the servers.
    dep = b.server_deployment(make_cluster(spec), image="i", config_hash="h", replicas=1)
    assert [p["name"] for p in container(dep)["ports"]] == ["http", "grpc"]


def test_config_map_holds_only_non_secret_settings() -> None:
    cm = b.server_config_map(make_cluster({"backend": {"type": "postgres", "url": "postgres://u:pw@db/x"}}))
    assert cm["metadata"]["name"] == "c1-config"
    assert cm["data"] == {"OJS_BACKEND_TYPE": "postgres", "OJS_GRPC_PORT": "9090", "OJS_PORT": "8080"}


def test_api_key_secret() -> None:
    secret = b.api_key_secret(make_cluster({"backend": {"type": "lite"}}), API_KEY)
    assert secret["metadata"]["name"] == "c1-api-key"
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["api-key"]).decode() == API_KEY


def test_endpoint() -> None:
    assert b.endpoint(make_cluster({"backend": {"type": "lite"}}, name="jobs")) == (
        f"http://jobs-server.{NS}.svc.cluster.local:8080"
    )


# --- config hash through the pod template -------------------------------------------------------------------


def _server_hash(cluster: OJSCluster, secrets: dict[tuple[str, str], bytes]) -> str:
    # What the reconciler does: the spec, the ConfigMap and every referenced Secret value, in a fixed order.
    values = [secrets[(r.name, r.key)] for r in b.referenced_secret_keys(cluster)]
    return config_hash(cluster.spec, b.server_config_map(cluster)["data"], *values)


def test_config_hash_follows_secret_values() -> None:
    cluster = make_cluster({"backend": {"type": "redis", "urlSecretRef": {"name": "s", "key": "u"}}})
    secrets = {("s", "u"): b"redis://one", ("c1-api-key", "api-key"): API_KEY.encode()}
    h1 = _server_hash(cluster, secrets)
    assert h1 == _server_hash(cluster, dict(secrets))
    rotated = {**secrets, ("c1-api-key", "api-key"): b"another-key"}
    moved = {**secrets, ("s", "u"): b"redis://two"}
    assert len({h1, _server_hash(cluster, rotated), _server_hash(cluster, moved)}) == 3
    dep = b.server_deployment(cluster, image="i", config_hash=h1, replicas=2)
    assert dep["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == h1
    for value in secrets.values():
        assert value.decode() not in json.dumps(dep)


# --- embedded Redis -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis", "pvc"),
    [
        (None, None),
        ({"image": "redis:7.2-alpine"}, None),
        ({"storage": {"size": "2Gi"}}, {"storage": "2Gi"}),
        ({"storage": {"size": "5Gi", "storageClassName": "ssd"}}, {"storage": "5Gi", "class": "ssd"}),
    ],
)
def test_embedded_redis(redis: dict[str, Any] | None, pvc: dict[str, str] | None) -> None:
    backend: dict[str, Any] = {"type": "redis", "embedded": True}
    if redis is not None:
        backend["redis"] = redis
    cluster = make_cluster({"backend": backend})
    dep = b.redis_deployment(cluster, config_hash="rh")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert dep["metadata"]["name"] == "c1-redis"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "redis",
        "app.kubernetes.io/instance": "c1",
        "app.kubernetes.io/component": "backend",
    }
    assert dep["spec"]["template"]["metadata"]["annotations"] == {CONFIG_HASH_ANNOTATION: "rh"}
    assert c["image"] == (redis or {}).get("image", "redis:7-alpine")
    assert c["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": secret_ref("c1-redis", "password")} in c["env"]
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["securityContext"]["runAsGroup"] == 999
    assert restricted_violations(pod) == []
    assert "readinessProbe" in c
    assert "livenessProbe" in c
    claim = b.redis_pvc(cluster)
    if pvc is None:
        assert claim is None
        assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        assert "fsGroup" not in pod["securityContext"]
    else:
        assert claim is not None
        assert claim["metadata"]["name"] == "c1-redis"
        assert claim["spec"]["resources"] == {"requests": {"storage": pvc["storage"]}}
        assert claim["spec"].get("storageClassName") == pvc.get("class")
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "c1-redis"}}]
        assert dep["spec"]["strategy"] == {"type": "Recreate"}
        assert pod["securityContext"]["fsGroup"] == 999


def test_redis_secret_and_service() -> None:
    cluster = make_cluster({"backend": {"type": "redis", "embedded": True}})
    secret = b.redis_secret(cluster, "p@ss/word")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "password": "p@ss/word",
        "url": f"redis://:p%40ss%2Fword@c1-redis.{NS}.svc.cluster.local:6379/0",
    }
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "backend"
    svc = b.redis_service(cluster)
    assert svc["metadata"]["name"] == "c1-redis"
    assert svc["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == b.redis_selector(cluster)


def test_redis_ignores_server_only_pod_settings() -> None:
    cluster = make_cluster(
        {
            "backend": {"type": "redis", "embedded": True},
            "nodeSelector": {"pool": "a"},
            "tolerations": [{"operator": "Exists"}],
            "serviceAccountName": "server-sa",
            "securityContext": {"runAsUser": 4242},
        }
    )
    pod = b.redis_deployment(cluster, config_hash="h")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 999


# --- PodDisruptionBudget ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "budget"),
    [
        ({}, {"maxUnavailable": 1}),  # default replicas 2
        ({"replicas": 1}, None),
        ({"replicas": 3, "podDisruptionBudget": {"enabled": False}}, None),
        ({"replicas": 1, "podDisruptionBudget": {"enabled": True}}, {"maxUnavailable": 1}),
        ({"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}}, {"minAvailable": 2}),
        ({"replicas": 3, "podDisruptionBudget": {"maxUnavailable": "50%"}}, {"maxUnavailable": "50%"}),
        ({"replicas": 3, "autoScaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 5}}, None),
        (
            {"replicas": 3, "autoScaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5}},
            {"maxUnavailable": 1},
        ),
    ],
)
def test_pod_disruption_budget(extra: dict[str, Any], budget: dict[str, Any] | None) -> None:
    pdb = b.pod_disruption_budget(make_cluster({"backend": {"type": "nats", "url": "n"}, **extra}))
    if budget is None:
        assert pdb is None
        return
    assert pdb is not None
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["name"] == "c1-server"
    assert pdb["spec"] == {
        **budget,
        "selector": {"matchLabels": b.server_selector(make_cluster({"backend": {"type": "lite"}}))},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


# --- monitoring ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitoring", "annotations", "monitor", "dashboard"),
    [
        ({}, False, False, False),
        ({"serviceMonitor": True, "grafanaDashboard": True}, False, False, False),  # gated by enabled
        ({"enabled": True}, True, False, False),
        ({"enabled": True, "serviceMonitor": True}, True, True, False),
        ({"enabled": True, "grafanaDashboard": True}, True, False, True),
    ],
)
def test_monitoring(monitoring: dict[str, Any], annotations: bool, monitor: bool, dashboard: bool) -> None:
    cluster = make_cluster({"backend": {"type": "lite"}, "monitoring": monitoring})
    dep = b.server_deployment(cluster, image="i", config_hash="h", replicas=1)
    pod_annotations = dep["spec"]["template"]["metadata"]["annotations"]
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    assert (scrape.items() <= pod_annotations.items()) is annotations
    assert (b.service_monitor(cluster) is not None) is monitor
    assert (b.dashboard_config_map(cluster) is not None) is dashboard


def test_service_monitor() -> None:
    cluster = make_cluster(
        {
            "backend": {"type": "lite"},
            "monitoring": {
                "enabled": True,
                "serviceMonitor": True,
                "interval": "15s",
                "labels": {"release": "prom", "app.kubernetes.io/managed-by": "someone"},
            },
        }
    )
    sm = b.service_monitor(cluster)
    assert sm is not None
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["name"] == "c1-server"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ojsctrl"
    # Lite's /metrics needs the API key: the endpoint carries it from the generated Secret.
    assert sm["spec"] == {
        "selector": {"matchLabels": b.server_selector(cluster)},
        "endpoints": [
            {
                "port": "http",
                "path": "/metrics",
                "interval": "15s",
                "authorization": {"type": "Bearer", "credentials": {"name": "c1-api-key", "key": "api-key"}},
            }
        ],
    }
    # The ServiceMonitor selects the Service by its labels.
    assert (
        sm["spec"]["selector"]["matchLabels"].items()
        <= b.server_service(cluster)["metadata"]["labels"].items()
    )


# --- Grafana dashboard: valid PromQL over real metric names -------------------------------------------------

ALLOWED_METRICS = {
    "ojs_cluster_queue_depth",
    "ojs_cluster_active_jobs",
    "ojs_worker_desired_replicas",
    "ojs_autoscaler_scale_total",
    "kube_deployment_status_replicas_available",
}
# Labels each metric really has (the operator's from controllers/metrics.py, kube-state-metrics' own).
METRIC_LABELS = {
    "ojs_cluster_queue_depth": {"namespace", "cluster", "queue"},
    "ojs_cluster_active_jobs": {"namespace", "cluster", "queue"},
    "ojs_worker_desired_replicas": {"namespace", "worker"},
    "ojs_autoscaler_scale_total": {"namespace", "kind", "name", "direction"},
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
}
_AGGREGATIONS = {"sum", "avg", "min", "max", "count"}
_FUNCTIONS = {"rate", "increase", "irate"}
_TOKEN = re.compile(
    r'\s*(?:(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)|(?P<string>"(?:[^"\\]|\\.)*")|(?P<duration>\[\d+[smhd]\])'
    r"|(?P<number>\d+(?:\.\d+)?)|(?P<op>=~|!~|!=|=|[(){},]))"
)


class PromQL:
    """A recursive-descent parser of the PromQL subset the dashboard uses; records metrics and labels."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            assert m is not None and m.end() > pos, f"cannot tokenise {text[pos:]!r}"
            kind = m.lastgroup
            assert kind is not None
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        self.selectors: list[tuple[str, set[str]]] = []

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        assert tok is not None, "unexpected end"
        assert value is None or tok[1] == value, f"expected {value}, got {tok}"
        assert kind is None or tok[0] == kind, f"expected {kind}, got {tok}"
        self.i += 1
        return tok[1]

    def parse(self) -> list[tuple[str, set[str]]]:
        self.expr()
        assert self.peek() is None, f"trailing {self.tokens[self.i :]}"
        return self.selectors

    def labels(self) -> None:
        self.take("(")
        self.take(kind="ident")
        while self.peek() == ("op", ","):
            self.take(",")
            self.take(kind="ident")
        self.take(")")

    def expr(self, *, range_vector: bool = False) -> None:
        tok = self.peek()
        assert tok is not None
        if tok[0] == "number":
            self.take()
            return
        name = self.take(kind="ident")
        if name in _AGGREGATIONS:
            if self.peek() in (("ident", "by"), ("ident", "without")):
                self.take()
                self.labels()
            self.take("(")
            self.expr()
            self.take(")")
            return
        if name in _FUNCTIONS:
            self.take("(")
            self.expr(range_vector=True)
            self.take(")")
            return
        assert self.peek() != ("op", "("), f"unknown function {name}"
        matched: set[str] = set()
        if self.peek() == ("op", "{"):
            self.take("{")
            while self.peek() != ("op", "}"):
                matched.add(self.take(kind="ident"))
                assert self.take(kind="op") in ("=", "!=", "=~", "!~")
                self.take(kind="string")
                if self.peek() == ("op", ","):
                    self.take(",")
            self.take("}")
        if range_vector:
            self.take(kind="duration")
        self.selectors.append((name, matched))


def dashboard_exprs(cluster: OJSCluster) -> list[str]:
    cm = b.dashboard_config_map(cluster)
    assert cm is not None
    (body,) = cm["data"].values()
    dashboard = json.loads(body)
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_dashboard_config_map() -> None:
    cluster = make_cluster(
        {"backend": {"type": "lite"}, "monitoring": {"enabled": True, "grafanaDashboard": True}}
    )
    cm = b.dashboard_config_map(cluster)
    assert cm is not None
    assert cm["metadata"]["name"] == "c1-dashboard"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(next(iter(cm["data"].values())))
    assert dashboard["panels"]
    assert len(dashboard["uid"]) <= 40
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))


def test_dashboard_promql_is_valid_and_uses_real_metrics() -> None:
    cluster = make_cluster(
        {"backend": {"type": "lite"}, "monitoring": {"enabled": True, "grafanaDashboard": True}}
    )
    used = set()
    for expr in dashboard_exprs(cluster):
        for metric, labels in PromQL(expr).parse():
            assert metric in ALLOWED_METRICS, expr
            assert labels <= METRIC_LABELS[metric], expr
            used.add(metric)
    assert used == ALLOWED_METRICS


@pytest.mark.parametrize(
    "expr",
    ["sum(", "rate(ojs_cluster_queue_depth)", "foo(ojs_cluster_queue_depth)", 'x{a="b"', "sum by (q x)"],
)
def test_promql_checker_rejects_invalid(expr: str) -> None:
    with pytest.raises(AssertionError):
        PromQL(expr).parse()


# --- the reference README ----------------------------------------------------------------------------------


def _readme_clusters() -> list[OJSCluster]:
    return [OJSCluster.from_dict(with_identity(d)) for d in readme_documents() if d["kind"] == "OJSCluster"]


@pytest.mark.parametrize("cluster", _readme_clusters(), ids=lambda c: c.metadata["name"])
def test_readme_clusters_build(cluster: OJSCluster) -> None:
    objs = build_all(cluster, replicas=None if cluster.spec.auto_scaling.enabled else 1)
    for pod in pod_specs(objs):
        assert restricted_violations(pod) == []
    name = cluster.metadata["name"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs if o}
    assert ("Deployment", f"{name}-server") in kinds
    assert ("Service", f"{name}-server") in kinds
    assert ("ConfigMap", f"{name}-config") in kinds
    assert ("Secret", f"{name}-api-key") in kinds
    if name == "ojs-production":
        assert ("ServiceMonitor", f"{name}-server") in kinds
        assert ("ConfigMap", f"{name}-dashboard") in kinds
        assert ("PodDisruptionBudget", f"{name}-server") in kinds
        env = env_map(b.server_deployment(cluster, image="i", config_hash="h", replicas=None))
        assert env["REDIS_URL"] == secret_ref("redis-credentials", "url")
    else:
        assert ("Deployment", f"{name}-redis") in kinds
        assert ("Secret", f"{name}-redis") in kinds


@pytest.mark.parametrize(
    ("auth", "authorization"),
    [
        ({}, {"type": "Bearer", "credentials": {"name": "c1-api-key", "key": "api-key"}}),
        (
            {"apiKeySecretRef": {"name": "mine", "key": "token"}},
            {"type": "Bearer", "credentials": {"name": "mine", "key": "token"}},
        ),
        ({"disabled": True}, None),
    ],
)
@pytest.mark.parametrize("backend", [{"type": "lite"}, {"type": "nats", "url": "nats://n"}])
def test_service_monitor_authorization_follows_auth(
    backend: dict[str, Any], auth: dict[str, Any], authorization: dict[str, Any] | None
) -> None:
    cluster = make_cluster(
        {"backend": backend, "auth": auth, "monitoring": {"enabled": True, "serviceMonitor": True}}
    )
    sm = b.service_monitor(cluster)
    assert sm is not None
    assert sm["spec"]["endpoints"][0].get("authorization") == authorization


# --- server env and envFrom from the spec (design.md §env-merge) ---------------------------------


def test_user_env_replaces_operator_entries_and_follows_them() -> None:
    spec = {
        "backend": {"type": "sqs", "sqs": {"region": "eu-west-1"}},
        "env": [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "id"}}},
            {"name": "SQS_USE_FIFO", "value": "true"},
            {"name": "OJS_SHUTDOWN_TIMEOUT", "value": "20s"},
        ],
        "envFrom": [{"secretRef": {"name": "aws-credentials"}}, {"configMapRef": {"name": "tuning"}}],
    }
    c = container(server(spec))
    assert [e["name"] for e in c["env"]] == [
        "OJS_PORT",
        "OJS_GRPC_PORT",
        "AWS_REGION",
        "DYNAMODB_TABLE",
        "SQS_QUEUE_PREFIX",
        "OJS_API_KEY",
        "OJS_ALLOW_INSECURE_NO_AUTH",
        "AWS_ACCESS_KEY_ID",
        "SQS_USE_FIFO",
        "OJS_SHUTDOWN_TIMEOUT",
    ]
    assert env_map(server(spec))["SQS_USE_FIFO"] == "true"
    # The operator's ConfigMap first, the user's sources after it (a later source wins in Kubernetes).
    assert c["envFrom"] == [
        {"configMapRef": {"name": "c1-config"}},
        {"secretRef": {"name": "aws-credentials"}},
        {"configMapRef": {"name": "tuning"}},
    ]


# --- images per backend -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "image", "template", "templated"),
    [
        (
            {"type": "redis", "embedded": True},
            "ghcr.io/openjobspec/ojs-backend-redis:v0.3.0",
            "m/{backend}:{tag}",
            "m/redis:v0.3.0",
        ),
        (
            {"type": "postgres", "url": "p"},
            "ghcr.io/openjobspec/ojs-backend-postgres:v0.4.1",
            "m/{backend}:v1",
            "m/postgres:v1",
        ),
        (
            {"type": "nats", "url": "n"},
            "ghcr.io/openjobspec/ojs-backend-nats:v0.3.0",
            "m/{backend}:{tag}",
            "m/nats:v0.3.0",
        ),
        (
            {"type": "kafka", "url": "k", "stateStore": {"embedded": True}},
            "ghcr.io/openjobspec/ojs-backend-kafka:v0.4.1",
            "m/ojs-backend-{backend}:{tag}",
            "m/ojs-backend-kafka:v0.4.1",
        ),
        (
            {"type": "sqs", "sqs": {"region": "eu-west-1"}},
            "ghcr.io/openjobspec/ojs-backend-sqs:v0.4.1",
            "m/{backend}",
            "m/sqs",
        ),
        (
            {"type": "lite"},
            "ghcr.io/openjobspec/ojs-backend-lite:v0.4.1",
            "m/{backend}:{tag}",
            "m/lite:v0.4.1",
        ),
    ],
)
def test_server_image_per_backend(backend: dict[str, Any], image: str, template: str, templated: str) -> None:
    spec = make_cluster({"backend": backend}).spec
    assert spec.effective_image(None) == image
    assert spec.effective_image(template) == templated
    # spec.image wins over the flag and the table.
    pinned = make_cluster({"backend": backend, "image": "mine/ojs:v9"}).spec
    assert pinned.effective_image(template) == pinned.effective_image(None) == "mine/ojs:v9"


# --- kafka's embedded state store reuses the embedded Redis objects -----------------------------------------


def test_kafka_embedded_state_store_builds_the_embedded_redis() -> None:
    kafka = make_cluster(
        {
            "backend": {
                "type": "kafka",
                "url": "k:9092",
                "stateStore": {"embedded": True},
                "redis": {"storage": {"size": "1Gi"}},
            }
        }
    )
    redis = make_cluster(
        {"backend": {"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi"}}}}
    )
    assert b.embedded_redis_enabled(kafka)
    for build in (b.redis_deployment, b.redis_service, b.redis_pvc, b.redis_secret):
        args: dict[str, Any] = {"config_hash": "h"} if build is b.redis_deployment else {}
        if build is b.redis_secret:
            made, same = build(kafka, REDIS_PASSWORD), build(redis, REDIS_PASSWORD)
        else:
            made, same = build(kafka, **args), build(redis, **args)
        # Same names, labels and specs as a redis cluster's embedded Redis (only the owner differs, and the
        # owner is the same object identity here).
        assert made == same
    assert env_map(server(kafka.to_dict()["spec"]))["REDIS_URL"] == secret_ref("c1-redis", "url")
    external = make_cluster(
        {"backend": {"type": "kafka", "url": "k:9092", "stateStore": {"url": "redis://r"}}}
    )
    assert not b.embedded_redis_enabled(external) and b.redis_pvc(external) is None


def test_config_hash_covers_the_state_store_secret() -> None:
    cluster = make_cluster(
        {
            "backend": {
                "type": "kafka",
                "url": "k:9092",
                "stateStore": {"urlSecretRef": {"name": "r", "key": "u"}},
            }
        }
    )
    secrets = {("r", "u"): b"redis://one", ("c1-api-key", "api-key"): API_KEY.encode()}
    rotated = {**secrets, ("r", "u"): b"redis://two"}
    assert _server_hash(cluster, secrets) != _server_hash(cluster, rotated)


@pytest.mark.parametrize("cluster", GRID[::7], ids=lambda c: c.metadata["name"])
def test_the_secrets_index_covers_every_referenced_secret(cluster: OJSCluster) -> None:
    # A change of any Secret the server pods read must enqueue the cluster (the reconciler's watch goes
    # through this index), or a rotation would wait for the next resync.
    from ojsctrl.controllers.cluster import referenced_secrets

    indexed = set(referenced_secrets(cluster.to_dict()))
    for ref in b.referenced_secret_keys(cluster):
        assert f"{NS}/{ref.name}" in indexed, ref


def test_the_secrets_index_of_an_unparsable_cluster_holds_its_generated_names() -> None:
    from ojsctrl.controllers.cluster import referenced_secrets

    obj = {"metadata": {"namespace": NS, "name": "broken"}, "spec": {"backend": {"type": 7}}}
    assert set(referenced_secrets(obj)) == {f"{NS}/broken-api-key", f"{NS}/broken-redis"}


def test_the_secrets_index_has_the_users_secrets() -> None:
    from ojsctrl.controllers.cluster import referenced_secrets

    cluster = make_cluster(
        {
            "backend": {"type": "redis", "urlSecretRef": {"name": "redis-url", "key": "url"}},
            "auth": {"apiKeySecretRef": {"name": "my-key", "key": "k"}},
        }
    )
    indexed = set(referenced_secrets(cluster.to_dict()))
    assert {f"{NS}/redis-url", f"{NS}/my-key"} <= indexed


def test_the_secrets_index_follows_a_spec_change_and_not_a_status_write() -> None:
    # The names are remembered per generation: a status write re-indexes the cluster without a parse,
    # and a spec change (a new generation) gives the new names.
    from ojsctrl.controllers.cluster import referenced_secrets

    obj = make_cluster(
        {"backend": {"type": "redis", "urlSecretRef": {"name": "redis-one", "key": "url"}}}
    ).to_dict()
    obj["metadata"].update(uid="uid-memo", generation=1)
    assert f"{NS}/redis-one" in set(referenced_secrets(obj))
    with_status = {**obj, "status": {"phase": "Running"}}
    assert set(referenced_secrets(with_status)) == set(referenced_secrets(obj))
    changed = make_cluster(
        {"backend": {"type": "redis", "urlSecretRef": {"name": "redis-two", "key": "url"}}}
    ).to_dict()
    changed["metadata"].update(uid="uid-memo", generation=2)
    indexed = set(referenced_secrets(changed))
    assert f"{NS}/redis-two" in indexed and f"{NS}/redis-one" not in indexed
