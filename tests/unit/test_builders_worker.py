"""The OJSWorker builders, table-style."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from ojsctrl.api import OJSCluster, OJSWorker, validate_worker
from ojsctrl.builders import cluster as cb
from ojsctrl.builders import worker as wb
from ojsctrl.builders.common import CONFIG_HASH_ANNOTATION, config_hash
from tests.unit.readme_examples import readme_documents
from tests.unit.test_builders_common import (
    NS,
    make_cluster,
    make_worker,
    restricted_violations,
    with_identity,
)

CLUSTER = make_cluster({"backend": {"type": "redis", "embedded": True}})
ENDPOINT = f"http://c1-server.{NS}.svc.cluster.local:8080"


def deployment(spec: dict[str, Any], cluster: OJSCluster = CLUSTER, **kw: Any) -> dict[str, Any]:
    args = {"config_hash": "h", "replicas": 1, **kw}
    return wb.worker_deployment(make_worker(spec), cluster, **args)


def container(dep: dict[str, Any]) -> dict[str, Any]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = c
    return result


def env_pairs(dep: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e["name"], e.get("value", e.get("valueFrom"))) for e in container(dep)["env"]]


def field_ref(path: str) -> dict[str, Any]:
    return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}


def test_operator_env_in_order() -> None:
    dep = deployment({"jobTypes": ["a.b", "c.d"], "queues": ["q1", "q2"], "concurrency": 4})
    assert env_pairs(dep) == [
        ("OJS_URL", ENDPOINT),
        ("OJS_BACKEND_URL", ENDPOINT),
        ("OJS_QUEUES", "q1,q2"),
        ("OJS_QUEUE", "q1"),
        ("OJS_JOB_TYPES", "a.b,c.d"),
        ("OJS_CONCURRENCY", "4"),
        ("OJS_SHUTDOWN_TIMEOUT", "30"),
        ("OJS_AUTH_TOKEN", {"secretKeyRef": {"name": "c1-api-key", "key": "api-key"}}),
        ("POD_NAME", field_ref("metadata.name")),
        ("POD_NAMESPACE", field_ref("metadata.namespace")),
    ]


@pytest.mark.parametrize(
    ("spec", "auth", "present", "absent"),
    [
        ({}, {}, {"OJS_QUEUES": "default", "OJS_QUEUE": "default"}, {"OJS_CONCURRENCY"}),
        ({"concurrency": 0}, {}, {}, {"OJS_CONCURRENCY"}),
        ({"concurrency": 1}, {}, {"OJS_CONCURRENCY": "1"}, set()),
        ({"gracefulShutdown": {"timeoutSeconds": 90}}, {}, {"OJS_SHUTDOWN_TIMEOUT": "90"}, set()),
        ({}, {"disabled": True}, {}, {"OJS_AUTH_TOKEN"}),
        (
            {},
            {"apiKeySecretRef": {"name": "mine", "key": "tok"}},
            {"OJS_AUTH_TOKEN": {"secretKeyRef": {"name": "mine", "key": "tok"}}},
            set(),
        ),
    ],
)
def test_env_variants(
    spec: dict[str, Any], auth: dict[str, Any], present: dict[str, Any], absent: set[str]
) -> None:
    cluster = make_cluster({"backend": {"type": "nats", "url": "nats://n"}, "auth": auth})
    env = dict(env_pairs(deployment(spec, cluster)))
    assert present.items() <= env.items()
    assert not absent & set(env)


@pytest.mark.parametrize(
    ("user_env", "expected_tail", "overridden"),
    [
        ([{"name": "APP", "value": "1"}], [("APP", "1")], None),
        ([{"name": "OJS_URL", "value": "http://proxy:8080"}], [("OJS_URL", "http://proxy:8080")], "OJS_URL"),
        (
            [{"name": "OJS_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}],
            [("OJS_AUTH_TOKEN", {"secretKeyRef": {"name": "x", "key": "y"}})],
            "OJS_AUTH_TOKEN",
        ),
        (
            [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            [("NODE", {"fieldRef": {"fieldPath": "spec.nodeName"}})],
            None,
        ),
    ],
)
def test_user_env_replaces_operator_env(
    user_env: list[dict[str, Any]], expected_tail: list[tuple[str, Any]], overridden: str | None
) -> None:
    pairs = env_pairs(deployment({"env": user_env}))
    names = [n for n, _ in pairs]
    assert len(names) == len(set(names))
    assert pairs[-len(expected_tail) :] == expected_tail
    base = [n for n, _ in env_pairs(deployment({}))]
    assert names[: -len(expected_tail)] == [n for n in base if n != overridden]


def test_user_container_fields_verbatim() -> None:
    spec = {
        "command": ["/app/worker"],
        "args": ["--verbose"],
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec", "optional": True}}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "image": "example/w:v2",
    }
    c = container(deployment(spec))
    for key in ("command", "args", "envFrom", "resources", "image"):
        assert c[key] == spec[key]
    assert c["name"] == "worker"
    bare = container(deployment({}))
    assert not {"command", "args", "envFrom", "resources"} & set(bare)


@pytest.mark.parametrize(
    ("timeout", "grace"), [(None, 40), (0, 35), (10, 35), (24, 35), (25, 35), (26, 36), (30, 40), (600, 610)]
)
def test_termination_grace_period(timeout: int | None, grace: int) -> None:
    """timeoutSeconds + 10, never below the SDKs' fixed 25 s grace + 10 (design.md §drain)."""
    spec = {} if timeout is None else {"gracefulShutdown": {"timeoutSeconds": timeout}}
    assert deployment(spec)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_no_worker_id_env() -> None:
    """No SDK reads OJS_WORKER_ID (design.md §drain): the operator does not pretend to set the worker id."""
    for spec in ({}, {"gracefulShutdown": {"drainBeforeShutdown": True}}):
        names = [e["name"] for e in container(deployment(spec))["env"]]
        assert "OJS_WORKER_ID" not in names and "POD_NAME" in names


def test_deployment_shape() -> None:
    dep = deployment({"replicas": 3}, config_hash="wh", replicas=3)
    assert dep["metadata"]["name"] == "w1-worker"
    assert dep["spec"]["replicas"] == 3
    sel = {
        "app.kubernetes.io/name": "ojs-worker",
        "app.kubernetes.io/instance": "w1",
        "app.kubernetes.io/component": "worker",
    }
    assert dep["spec"]["selector"] == {"matchLabels": sel}
    tmpl = dep["spec"]["template"]
    assert sel.items() <= tmpl["metadata"]["labels"].items()
    assert tmpl["metadata"]["annotations"] == {CONFIG_HASH_ANNOTATION: "wh"}
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "OJSWorker"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-worker-w1"
    assert "strategy" not in dep["spec"]
    assert "replicas" not in deployment({}, replicas=None)["spec"]


def test_worker_and_cluster_with_the_same_name_never_select_each_other() -> None:
    cluster = make_cluster({"backend": {"type": "nats", "url": "n"}}, name="same")
    worker = make_worker({"clusterRef": "same"}, name="same")
    w_sel = wb.worker_deployment(worker, cluster, config_hash="h", replicas=1)["spec"]["selector"][
        "matchLabels"
    ]
    s_dep = cb.server_deployment(cluster, image="i", config_hash="h", replicas=1)
    s_sel = s_dep["spec"]["selector"]["matchLabels"]
    w_pod = wb.worker_deployment(worker, cluster, config_hash="h", replicas=1)["spec"]["template"]["metadata"]
    assert not w_sel.items() <= s_dep["spec"]["template"]["metadata"]["labels"].items()
    assert not s_sel.items() <= w_pod["labels"].items()


def test_selector_string() -> None:
    worker = make_worker({}, name="email")
    assert wb.worker_selector_string(worker) == (
        "app.kubernetes.io/component=worker,app.kubernetes.io/instance=email,app.kubernetes.io/name=ojs-worker"
    )


def test_worker_pod_settings() -> None:
    spec = {
        "nodeSelector": {"pool": "w"},
        "serviceAccountName": "worker-sa",
        "podLabels": {"team": "mail"},
        "podAnnotations": {"x": "y"},
        "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": False},
        "replicas": 5,
    }
    dep = deployment(spec)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "w"}
    assert pod["serviceAccountName"] == "worker-sa"
    assert "automountServiceAccountToken" not in pod
    # Workers get no default spreading; that is a server concern.
    assert "topologySpreadConstraints" not in pod
    assert "affinity" not in pod
    assert pod["securityContext"]["runAsUser"] == 1000
    assert container(dep)["securityContext"]["readOnlyRootFilesystem"] is False
    meta = dep["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "mail"
    assert meta["annotations"] == {"x": "y", CONFIG_HASH_ANNOTATION: "h"}


def test_cluster_in_another_namespace_is_refused() -> None:
    other = make_cluster({"backend": {"type": "lite"}}, namespace="elsewhere")
    with pytest.raises(ValueError, match="namespace"):
        deployment({}, other)


def test_config_hash_covers_the_api_key() -> None:
    worker = make_worker({})
    h1 = config_hash(worker.spec, cb.endpoint(CLUSTER), b"key-1")
    assert h1 == config_hash(worker.spec, cb.endpoint(CLUSTER), b"key-1")
    assert h1 != config_hash(worker.spec, cb.endpoint(CLUSTER), b"key-2")
    dep = wb.worker_deployment(worker, CLUSTER, config_hash=h1, replicas=1)
    text = json.dumps(dep)
    assert "key-1" not in text
    assert base64.b64encode(b"key-1").decode() not in text


# --- HPA ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        ({}, None),
        ({"enabled": True}, None),  # queueDepth: the operator scales, no HPA
        ({"enabled": False, "metric": "cpu"}, None),
        (
            {"enabled": True, "metric": "cpu"},
            {"min": 1, "max": 10, "cpu": 80, "window": 300},
        ),
        (
            {
                "enabled": True,
                "metric": "cpu",
                "minReplicas": 2,
                "maxReplicas": 7,
                "cpuUtilization": 65,
                "scaleDownDelay": "90s",
            },
            {"min": 2, "max": 7, "cpu": 65, "window": 90},
        ),
        (
            {"enabled": True, "metric": "cpu", "scaleDownDelay": "1h"},
            {"min": 1, "max": 10, "cpu": 80, "window": 3600},
        ),
        # Not admitted (CEL caps it at 1h), but the body stays valid if it slips through.
        (
            {"enabled": True, "metric": "cpu", "scaleDownDelay": "3h"},
            {"min": 1, "max": 10, "cpu": 80, "window": 3600},
        ),
        (
            {"enabled": True, "metric": "cpu", "minReplicas": 0},
            {"min": 1, "max": 10, "cpu": 80, "window": 300},
        ),
    ],
)
def test_worker_hpa(scaling: dict[str, Any], expected: dict[str, int] | None) -> None:
    worker = make_worker({"autoScaling": scaling})
    hpa = wb.worker_hpa(worker)
    if expected is None:
        assert hpa is None
        return
    assert hpa == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "w1-worker",
            "namespace": NS,
            "labels": wb.worker_labels(worker),
            "ownerReferences": [
                {
                    "apiVersion": "ojs.openjobspec.dev/v1alpha1",
                    "kind": "OJSWorker",
                    "name": "w1",
                    "uid": "uid-worker-w1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w1-worker"},
            "minReplicas": expected["min"],
            "maxReplicas": expected["max"],
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": expected["cpu"]},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": expected["window"]}},
        },
    }


# --- a grid: restricted profile, determinism, no secrets ---------------------------------------------------

_CLUSTERS = [
    make_cluster({"backend": {"type": "redis", "embedded": True}}),
    make_cluster({"backend": {"type": "lite"}, "auth": {"disabled": True}}),
    make_cluster(
        {"backend": {"type": "nats", "url": "n"}, "auth": {"apiKeySecretRef": {"name": "k", "key": "v"}}}
    ),
]
_WORKER_SPECS: list[dict[str, Any]] = [
    {},
    {"concurrency": 8, "queues": ["a", "b", "c"], "jobTypes": ["x", "y"]},
    {"env": [{"name": "OJS_QUEUE", "value": "b"}], "envFrom": [{"secretRef": {"name": "app"}}]},
    {"gracefulShutdown": {"timeoutSeconds": 0, "drainBeforeShutdown": True}},
    {"autoScaling": {"enabled": True, "metric": "cpu", "minReplicas": 2}},
]
_SECURITY: list[dict[str, Any] | None] = [
    None,
    {"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 1001},
    {"runAsNonRoot": False},
    {"runAsUser": 0, "readOnlyRootFilesystem": False},
]


def worker_grid() -> list[tuple[OJSCluster, OJSWorker]]:
    out = []
    for i, (cluster, spec, security) in enumerate(itertools.product(_CLUSTERS, _WORKER_SPECS, _SECURITY)):
        full = dict(spec)
        if security is not None:
            full["securityContext"] = security
        worker = make_worker(full, name=f"w{i}")
        assert validate_worker(worker.to_dict()).ok, validate_worker(worker.to_dict()).messages()
        out.append((cluster, worker))
    return out


WORKER_GRID = worker_grid()


@pytest.mark.parametrize(("cluster", "worker"), WORKER_GRID, ids=lambda x: x.metadata["name"])
def test_worker_pods_pass_the_restricted_profile(cluster: OJSCluster, worker: OJSWorker) -> None:
    dep = wb.worker_deployment(worker, cluster, config_hash="h", replicas=1)
    assert restricted_violations(dep["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize(("cluster", "worker"), WORKER_GRID, ids=lambda x: x.metadata["name"])
def test_worker_builders_are_deterministic(cluster: OJSCluster, worker: OJSWorker) -> None:
    def build(w: OJSWorker, c: OJSCluster) -> str:
        return json.dumps(
            [
                wb.worker_deployment(w, c, config_hash="h", replicas=2),
                wb.worker_hpa(w),
                wb.worker_selector_string(w),
            ]
        )

    again = build(OJSWorker.from_dict(worker.to_dict()), OJSCluster.from_dict(cluster.to_dict()))
    assert build(worker, cluster) == again


@pytest.mark.parametrize(("cluster", "worker"), WORKER_GRID, ids=lambda x: x.metadata["name"])
def test_worker_env_names_unique(cluster: OJSCluster, worker: OJSWorker) -> None:
    dep = wb.worker_deployment(worker, cluster, config_hash="h", replicas=1)
    names = [e["name"] for e in container(dep)["env"]]
    assert len(names) == len(set(names))
    assert names[0:2] == ["OJS_URL", "OJS_BACKEND_URL"] or "OJS_URL" in {
        e["name"] for e in worker.spec.env or ()
    }


# --- the reference README ----------------------------------------------------------------------------------


def _readme_pairs() -> list[tuple[OJSCluster, OJSWorker]]:
    docs = [with_identity(doc) for doc in readme_documents()]
    clusters = {d["metadata"]["name"]: OJSCluster.from_dict(d) for d in docs if d["kind"] == "OJSCluster"}
    return [
        (clusters[d["spec"]["clusterRef"]], OJSWorker.from_dict(d)) for d in docs if d["kind"] == "OJSWorker"
    ]


@pytest.mark.parametrize(("cluster", "worker"), _readme_pairs(), ids=lambda x: x.metadata["name"])
def test_readme_workers_build(cluster: OJSCluster, worker: OJSWorker) -> None:
    replicas = None if worker.spec.auto_scaling.enabled else worker.spec.replicas
    dep = wb.worker_deployment(worker, cluster, config_hash="h", replicas=replicas)
    assert dep["metadata"]["name"] == f"{worker.metadata['name']}-worker"
    assert restricted_violations(dep["spec"]["template"]["spec"]) == []
    env = dict(env_pairs(dep))
    assert env["OJS_URL"] == f"http://ojs-multi-server.{NS}.svc.cluster.local:8080"
    assert env["OJS_QUEUES"] == ",".join(worker.spec.queues)
    assert env["OJS_CONCURRENCY"] == str(worker.spec.concurrency)
    # queueDepth autoscaling is the operator's job: no HPA.
    assert wb.worker_hpa(worker) is None
