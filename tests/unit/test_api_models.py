"""The OJSCluster/OJSWorker models: defaults, aliases, round trips, and the reference README's examples."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ojsctrl.api import (
    API_VERSION,
    DEFAULT_SERVER_RESOURCES,
    OJSCluster,
    OJSClusterSpec,
    OJSClusterStatus,
    OJSWorker,
    OJSWorkerSpec,
    OJSWorkerStatus,
    duration_seconds,
    parse_duration,
    validate_cluster,
    validate_worker,
)
from ojsctrl.api.durations import is_duration, parse_duration_ns
from ojsctrl.api.quantity import parse_quantity
from tests.unit.readme_examples import README_EXAMPLES, readme_documents

_REPO = Path(__file__).resolve().parents[2]
_README_CANDIDATES = [
    _REPO.parent / "shared" / "reference" / "seed-ojs-k8s-operator-README.txt",
    Path("/work/shared/reference/seed-ojs-k8s-operator-README.txt"),
]


def _readme_blocks(text: str) -> list[str]:
    # The README is stored as rendered text: each example starts at its apiVersion line and ends at a blank
    # line.
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and line.startswith("apiVersion: ojs.openjobspec.dev/"):
            current = [line]
        elif current is not None:
            if line.strip():
                current.append(line)
            else:
                blocks.append("\n".join(current))
                current = None
    if current:
        blocks.append("\n".join(current))
    return blocks


def test_embedded_examples_match_the_reference_readme() -> None:
    readme = next((p for p in _README_CANDIDATES if p.exists()), None)
    if readme is None:
        pytest.skip("reference README not available")
    assert _readme_blocks(readme.read_text(encoding="utf-8")) == [e.strip() for e in README_EXAMPLES]


@pytest.mark.parametrize("doc", readme_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_readme_examples_parse_and_validate(doc: dict[str, Any]) -> None:
    if doc["kind"] == "OJSCluster":
        model: OJSCluster | OJSWorker = OJSCluster.from_dict(doc)
        result = validate_cluster(doc)
    else:
        model = OJSWorker.from_dict(doc)
        result = validate_worker(doc, cluster_exists=True)
    assert result.errors == []
    assert model.metadata["name"] == doc["metadata"]["name"]
    # Everything the user wrote survives a round trip through the model.
    assert _contains(model.to_dict(), doc)


def test_readme_worker_with_latest_tag_gets_a_warning() -> None:
    workers = [d for d in readme_documents() if d["kind"] == "OJSWorker"]
    result = validate_worker(workers[0], cluster_exists=True)
    assert any("latest" in w for w in result.warnings)


def _contains(full: Any, part: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(full, dict) and all(k in full and _contains(full[k], v) for k, v in part.items())
    return bool(full == part)


def test_cluster_defaults() -> None:
    spec = OJSClusterSpec.from_dict({"backend": {"type": "redis", "embedded": True}})
    assert spec.replicas is None
    assert spec.effective_replicas() == 2
    assert spec.image is None
    assert spec.effective_image() == "ghcr.io/openjobspec/ojs-backend-redis:v0.3.0"
    assert spec.effective_image("mirror.example/ojs-{backend}:{tag}") == "mirror.example/ojs-redis:v0.3.0"
    pinned = OJSClusterSpec.from_dict({"backend": {"type": "lite"}, "image": "mine/ojs:v9"})
    assert pinned.effective_image("mirror.example/ojs-{backend}:{tag}") == "mine/ojs:v9"
    assert spec.grpc.enabled is False and spec.env is None and spec.env_from is None
    assert spec.backend.state_store is None and spec.backend.sqs is None
    assert spec.resources == DEFAULT_SERVER_RESOURCES
    assert spec.resources is not DEFAULT_SERVER_RESOURCES
    assert spec.backend.url is None and spec.backend.url_secret_ref is None and spec.backend.redis is None
    assert spec.auth.disabled is False and spec.auth.api_key_secret_ref is None
    auto = spec.auto_scaling
    assert (auto.enabled, auto.min_replicas, auto.max_replicas) == (False, 1, 10)
    assert (auto.scale_up_cooldown, auto.scale_down_cooldown) == ("60s", "300s")
    assert auto.target_queue_depth == 100 and auto.target_jobs_per_worker is None
    mon = spec.monitoring
    assert (mon.enabled, mon.service_monitor, mon.grafana_dashboard, mon.interval) == (
        False,
        False,
        False,
        "30s",
    )
    assert spec.pod_disruption_budget.enabled is None
    assert spec.pod_disruption_budget.budget() == ("maxUnavailable", 1)
    assert spec.pdb_enabled() is True


def test_cluster_backend_dependent_defaults() -> None:
    lite = OJSClusterSpec.from_dict({"backend": {"type": "lite"}})
    assert lite.effective_replicas() == 1
    assert lite.pdb_enabled() is False
    one = OJSClusterSpec.from_dict({"backend": {"type": "redis", "embedded": True}, "replicas": 1})
    assert one.pdb_enabled() is False
    scaled = OJSClusterSpec.from_dict(
        {"backend": {"type": "redis", "embedded": True}, "replicas": 3, "autoScaling": {"enabled": True}}
    )
    assert scaled.pdb_enabled() is False  # autoscaling may go down to 1
    forced = OJSClusterSpec.from_dict(
        {"backend": {"type": "redis", "embedded": True}, "podDisruptionBudget": {"enabled": False}}
    )
    assert forced.pdb_enabled() is False
    pdb = OJSClusterSpec.from_dict(
        {"backend": {"type": "redis", "embedded": True}, "podDisruptionBudget": {"minAvailable": "50%"}}
    )
    assert pdb.pod_disruption_budget.budget() == ("minAvailable", "50%")


def test_embedded_redis_defaults() -> None:
    spec = OJSClusterSpec.from_dict(
        {"backend": {"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi"}}}}
    )
    assert spec.backend.redis is not None
    assert spec.backend.redis.image == "redis:7-alpine"
    assert spec.backend.redis.storage is not None and spec.backend.redis.storage.size == "1Gi"


def test_worker_defaults() -> None:
    spec = OJSWorkerSpec.from_dict({"clusterRef": "c", "jobTypes": ["email.send"], "image": "w:v1"})
    assert spec.queues == ["default"]
    assert (spec.concurrency, spec.replicas) == (0, 1)
    auto = spec.auto_scaling
    assert (auto.enabled, auto.metric, auto.min_replicas, auto.max_replicas) == (False, "queueDepth", 1, 10)
    assert auto.target_jobs_per_worker is None
    assert auto.effective_target_jobs_per_worker(None) == 10
    assert auto.effective_target_jobs_per_worker(7) == 7
    assert (auto.scale_up_threshold, auto.scale_down_delay, auto.polling_interval) == (0, "5m", "30s")
    assert auto.cpu_utilization == 80
    assert (spec.graceful_shutdown.timeout_seconds, spec.graceful_shutdown.drain_before_shutdown) == (
        30,
        False,
    )
    own = OJSWorkerSpec.from_dict(
        {"clusterRef": "c", "jobTypes": ["a"], "image": "w:v1", "autoScaling": {"targetJobsPerWorker": 3}}
    )
    assert own.auto_scaling.effective_target_jobs_per_worker(7) == 3


def test_default_lists_are_not_shared() -> None:
    a = OJSWorkerSpec.from_dict({"clusterRef": "c", "jobTypes": ["a"], "image": "w:v1"})
    b = OJSWorkerSpec.from_dict({"clusterRef": "c", "jobTypes": ["a"], "image": "w:v1"})
    a.queues.append("x")
    assert b.queues == ["default"]


def test_aliases_are_camel_case_and_names_also_work() -> None:
    spec = OJSClusterSpec(
        backend={"type": "redis", "url_secret_ref": {"name": "s", "key": "url"}},  # type: ignore[arg-type]
        auto_scaling={"minReplicas": 2, "max_replicas": 4},  # type: ignore[arg-type]
        pod_disruption_budget={"maxUnavailable": 1},  # type: ignore[arg-type]
        service_account_name="sa",
        image_pull_secrets=[{"name": "pull"}],
        topology_spread_constraints=[],
    )
    out = spec.to_dict()
    assert out["backend"]["urlSecretRef"] == {"name": "s", "key": "url"}
    assert out["autoScaling"]["minReplicas"] == 2 and out["autoScaling"]["maxReplicas"] == 4
    assert out["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert out["serviceAccountName"] == "sa"
    assert out["imagePullSecrets"] == [{"name": "pull"}]
    assert out["topologySpreadConstraints"] == []
    for key in ("scaleUpCooldown", "scaleDownCooldown", "targetQueueDepth"):
        assert key in out["autoScaling"]
    assert "grafanaDashboard" in out["monitoring"] and "serviceMonitor" in out["monitoring"]
    assert "apiKeySecretRef" not in out["auth"]  # None is left out

    worker = OJSWorkerSpec.from_dict(
        {
            "clusterRef": "c",
            "jobTypes": ["a"],
            "image": "w:v1",
            "envFrom": [{"configMapRef": {"name": "cm"}}],
            "gracefulShutdown": {"drainBeforeShutdown": True},
            "autoScaling": {"scaleUpThreshold": 5, "pollingInterval": "10s", "cpuUtilization": 70},
        }
    )
    wout = worker.to_dict()
    assert wout["clusterRef"] == "c" and wout["jobTypes"] == ["a"]
    assert wout["envFrom"] == [{"configMapRef": {"name": "cm"}}]
    assert wout["gracefulShutdown"] == {"timeoutSeconds": 30, "drainBeforeShutdown": True}
    assert wout["autoScaling"]["scaleUpThreshold"] == 5
    assert wout["autoScaling"]["pollingInterval"] == "10s"
    assert wout["autoScaling"]["cpuUtilization"] == 70


def test_kubernetes_typed_fields_keep_unknown_subfields() -> None:
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP", "apiVersion": "v1"}}},
        {"name": "X", "value": "1"},
    ]
    affinity = {"nodeAffinity": {"someFutureField": {"deep": [1, {"x": "y"}]}}}
    security = {"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    worker = OJSWorker.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": "OJSWorker",
            "metadata": {"name": "w", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {
                "clusterRef": "c",
                "jobTypes": ["a"],
                "image": "w:v1",
                "env": env,
                "affinity": affinity,
                "securityContext": security,
                "command": ["/bin/worker"],
                "args": ["--verbose"],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "podAnnotations": {"a": "1"},
                "podLabels": {"team": "x"},
                "priorityClassName": "high",
            },
        }
    )
    out = worker.to_dict()
    assert out["spec"]["env"] == env
    assert out["spec"]["affinity"] == affinity
    assert out["spec"]["securityContext"] == security
    assert out["metadata"] == {"name": "w", "namespace": "ns", "labels": {"a": "b"}}
    assert out["apiVersion"] == "ojs.openjobspec.dev/v1alpha1" and out["kind"] == "OJSWorker"


def test_unknown_fields_are_ignored() -> None:
    spec = OJSClusterSpec.from_dict({"backend": {"type": "lite", "future": 1}, "future": {"x": 1}})
    assert "future" not in spec.to_dict()
    assert "future" not in spec.to_dict()["backend"]


def test_round_trip_with_status() -> None:
    obj = {
        "apiVersion": API_VERSION,
        "kind": "OJSCluster",
        "metadata": {"name": "c", "generation": 3},
        "spec": {
            "backend": {"type": "postgres", "url": "postgres://db/ojs"},
            "replicas": 3,
            "image": "ghcr.io/openjobspec/ojs-backend-postgres:v0.4.1",
            "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        },
        "status": {
            "phase": "Running",
            "replicas": 3,
            "readyReplicas": 3,
            "queueDepth": 12,
            "activeJobs": 4,
            "queues": [{"name": "default", "available": 12, "active": 4}],
            "endpoint": "http://c-server.ns.svc:8080",
            "image": "ghcr.io/openjobspec/ojs-backend-postgres:v0.4.1",
            "observedGeneration": 3,
            "lastScaleTime": "2026-01-02T03:04:05Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReplicasReady",
                    "message": "3/3 ready",
                    "lastTransitionTime": "2026-01-02T03:04:05Z",
                    "observedGeneration": 3,
                }
            ],
        },
    }
    cluster = OJSCluster.from_dict(obj)
    assert cluster.status is not None
    assert cluster.status.last_scale_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = cluster.to_dict()
    assert _contains(out, obj)
    assert OJSCluster.from_dict(out) == cluster
    assert out["status"]["lastScaleTime"] == "2026-01-02T03:04:05Z"
    # What the reconcilers parse: metadata and spec as above, the status left out (and the object read
    # is not modified).
    spec_only = OJSCluster.from_dict(obj, status=False)
    assert spec_only.status is None
    assert spec_only.spec == cluster.spec
    assert spec_only.metadata == cluster.metadata
    assert "status" in obj
    # A status the model would refuse does not stop a reconcile that does not read it.
    broken = {**obj, "status": {"phase": 7, "conditions": "not a list"}}
    with pytest.raises(ValueError):
        OJSCluster.from_dict(broken)
    assert OJSCluster.from_dict(broken, status=False).spec == cluster.spec


def test_status_timestamps_serialise_as_rfc3339_utc() -> None:
    status = OJSWorkerStatus(
        last_scale_time=datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), selector="a=b"
    )
    assert status.to_dict() == {"lastScaleTime": "2026-05-06T07:08:09Z", "selector": "a=b"}
    naive = OJSClusterStatus(last_scale_time=datetime(2026, 5, 6, 7, 8, 9))
    assert naive.to_dict() == {"lastScaleTime": "2026-05-06T07:08:09Z"}


def test_worker_status_round_trip() -> None:
    status = {
        "phase": "Draining",
        "replicas": 2,
        "readyReplicas": 2,
        "desiredReplicas": 1,
        "queueDepth": 0,
        "activeJobs": 3,
        "selector": (
            "app.kubernetes.io/component=worker,app.kubernetes.io/instance=w,app.kubernetes.io/name=ojs-worker"
        ),
        "observedGeneration": 2,
    }
    assert OJSWorkerStatus.from_dict(status).to_dict() == status


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("0s", 0),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("1h0m0s", 3600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds
    assert parse_duration(text).total_seconds() == seconds
    assert is_duration(text)


@pytest.mark.parametrize(
    "text", ["", "5", "-5s", "+5s", "5 s", "s", ".5s", "5.s", "5d", "1h 30m", "30s\n", "9999999h"]
)
def test_bad_durations(text: str) -> None:
    assert not is_duration(text)
    with pytest.raises(ValueError):
        parse_duration_ns(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100m", "0.1"),
        ("1", "1"),
        (2, "2"),
        ("128Mi", str(128 * 2**20)),
        ("1e3", "1000"),
        ("1.5Gi", str(int(1.5 * 2**30))),
    ],
)
def test_quantities(value: str | int, expected: str) -> None:
    assert parse_quantity(value) == Decimal(expected)


@pytest.mark.parametrize("value", ["", "1 Gi", "1gi", "abc", True, 1.5, None, "1e99999"])
def test_bad_quantities(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)


def test_sqs_settings_default_as_the_server_does() -> None:
    # ojs-backend-sqs internal/server/config.go: DYNAMODB_TABLE ojs-jobs, SQS_QUEUE_PREFIX ojs, FIFO off.
    spec = OJSClusterSpec.from_dict({"backend": {"type": "sqs", "sqs": {"region": "eu-west-1"}}})
    assert spec.backend.sqs is not None
    assert (spec.backend.sqs.dynamodb_table, spec.backend.sqs.queue_prefix) == ("ojs-jobs", "ojs")
    assert spec.backend.sqs.fifo is False and spec.backend.sqs.endpoint is None
    assert spec.backend.sqs.to_dict() == {
        "region": "eu-west-1",
        "dynamodbTable": "ojs-jobs",
        "queuePrefix": "ojs",
        "fifo": False,
    }


@pytest.mark.parametrize(
    ("backend", "embedded"),
    [
        ({"type": "redis", "embedded": True}, True),
        ({"type": "redis", "url": "redis://r"}, False),
        ({"type": "kafka", "url": "k:9092", "stateStore": {"embedded": True}}, True),
        ({"type": "kafka", "url": "k:9092", "stateStore": {"url": "redis://r"}}, False),
        ({"type": "postgres", "url": "postgres://db"}, False),
        ({"type": "lite"}, False),
    ],
)
def test_embedded_redis_for_redis_and_kafka_state_store(backend: dict[str, Any], embedded: bool) -> None:
    assert OJSClusterSpec.from_dict({"backend": backend}).embedded_redis() is embedded
