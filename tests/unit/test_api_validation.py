"""The validation rules: each rule rejects its bad input naming the field; junk never raises."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ojsctrl.api import (
    FieldError,
    OJSClusterSpec,
    OJSWorkerSpec,
    ValidationResult,
    validate_cluster,
    validate_worker,
)

_DELETE = object()

CLUSTER: dict[str, Any] = {
    "apiVersion": "ojs.openjobspec.dev/v1alpha1",
    "kind": "OJSCluster",
    "metadata": {"name": "ojs", "namespace": "ns"},
    "spec": {
        "backend": {"type": "redis", "embedded": True},
        "image": "ghcr.io/openjobspec/ojs-backend-redis:v0.3.0",
    },
}
WORKER: dict[str, Any] = {
    "apiVersion": "ojs.openjobspec.dev/v1alpha1",
    "kind": "OJSWorker",
    "metadata": {"name": "email", "namespace": "ns"},
    "spec": {
        "clusterRef": "ojs",
        "jobTypes": ["email.send"],
        "image": "example/worker:v1",
        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    },
}


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with dotted paths set (or removed with _DELETE); missing parents are created."""
    obj = copy.deepcopy(base)
    for dotted, value in changes.items():
        parent = obj
        *parents, last = dotted.split(".")
        for key in parents:
            parent = parent.setdefault(key, {})
        if value is _DELETE:
            parent.pop(last, None)
        else:
            parent[last] = value
    return obj


def _rules(result: ValidationResult) -> set[tuple[str, str]]:
    return {(e.path, e.rule) for e in result.errors}


def test_bases_are_valid_and_quiet() -> None:
    assert validate_cluster(CLUSTER) == ValidationResult()
    assert validate_worker(WORKER, cluster_exists=True) == ValidationResult()


CLUSTER_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("spec missing", {"spec": _DELETE}, "spec", "required"),
    ("spec not an object", {"spec": ["x"]}, "spec", "type"),
    ("metadata not an object", {"metadata": "x"}, "metadata", "type"),
    ("name too long for <name>-server", {"metadata.name": "a" * 57}, "metadata.name", "name"),
    ("name starts with a digit", {"metadata.name": "1ojs"}, "metadata.name", "name"),
    ("name with a dot", {"metadata.name": "ojs.prod"}, "metadata.name", "name"),
    ("backend missing", {"spec.backend": _DELETE}, "spec.backend", "required"),
    ("backend type missing", {"spec.backend.type": _DELETE}, "spec.backend.type", "required"),
    ("backend type unknown", {"spec.backend.type": "mysql"}, "spec.backend.type", "enum"),
    ("url and embedded", {"spec.backend.url": "redis://r:6379"}, "spec.backend", "exactlyOne"),
    ("no connection", {"spec.backend.embedded": False}, "spec.backend", "exactlyOne"),
    (
        "url and urlSecretRef",
        {
            "spec.backend": {
                "type": "postgres",
                "url": "postgres://db",
                "urlSecretRef": {"name": "db", "key": "url"},
            }
        },
        "spec.backend",
        "exactlyOne",
    ),
    (
        "embedded postgres",
        {"spec.backend": {"type": "postgres", "embedded": True}},
        "spec.backend.embedded",
        "embeddedRedisOnly",
    ),
    ("lite with url", {"spec.backend": {"type": "lite", "url": "x"}}, "spec.backend.url", "liteBackend"),
    (
        "lite embedded",
        {"spec.backend": {"type": "lite", "embedded": True}},
        "spec.backend.embedded",
        "liteBackend",
    ),
    (
        "lite with two replicas",
        {"spec.backend": {"type": "lite"}, "spec.replicas": 2},
        "spec.replicas",
        "liteReplicas",
    ),
    (
        "lite autoscaled",
        {"spec.backend": {"type": "lite"}, "spec.autoScaling": {"enabled": True}},
        "spec.autoScaling.enabled",
        "liteAutoScaling",
    ),
    ("url empty", {"spec.backend": {"type": "nats", "url": ""}}, "spec.backend.url", "minLength"),
    ("url not a string", {"spec.backend": {"type": "nats", "url": 5}}, "spec.backend.url", "type"),
    (
        "urlSecretRef without key",
        {"spec.backend": {"type": "nats", "urlSecretRef": {"name": "s"}}},
        "spec.backend.urlSecretRef.key",
        "required",
    ),
    (
        "urlSecretRef with empty name",
        {"spec.backend": {"type": "postgres", "urlSecretRef": {"name": "", "key": "url"}}},
        "spec.backend.urlSecretRef.name",
        "minLength",
    ),
    (
        "urlSecretRef bad key",
        {"spec.backend": {"type": "postgres", "urlSecretRef": {"name": "s", "key": "a key"}}},
        "spec.backend.urlSecretRef.key",
        "pattern",
    ),
    ("embedded not a boolean", {"spec.backend.embedded": "true"}, "spec.backend.embedded", "type"),
    (
        "redis storage size not a quantity",
        {"spec.backend.redis": {"storage": {"size": "big"}}},
        "spec.backend.redis.storage.size",
        "quantity",
    ),
    (
        "redis storage without size",
        {"spec.backend.redis": {"storage": {"storageClassName": "fast"}}},
        "spec.backend.redis.storage.size",
        "required",
    ),
    ("replicas zero", {"spec.replicas": 0}, "spec.replicas", "minimum"),
    ("replicas as a string", {"spec.replicas": "2"}, "spec.replicas", "type"),
    ("replicas as a boolean", {"spec.replicas": True}, "spec.replicas", "type"),
    ("replicas beyond int32", {"spec.replicas": 2**31}, "spec.replicas", "maximum"),
    ("image empty", {"spec.image": ""}, "spec.image", "minLength"),
    ("image with a space", {"spec.image": "ojs server"}, "spec.image", "pattern"),
    (
        "autoscaling max below min",
        {"spec.autoScaling": {"minReplicas": 5, "maxReplicas": 3}},
        "spec.autoScaling.maxReplicas",
        "maxGteMin",
    ),
    (
        "autoscaling min above the default max",
        {"spec.autoScaling": {"minReplicas": 20}},
        "spec.autoScaling.maxReplicas",
        "maxGteMin",
    ),
    (
        "autoscaling min zero",
        {"spec.autoScaling": {"minReplicas": 0}},
        "spec.autoScaling.minReplicas",
        "minimum",
    ),
    (
        "targetQueueDepth zero",
        {"spec.autoScaling": {"targetQueueDepth": 0}},
        "spec.autoScaling.targetQueueDepth",
        "minimum",
    ),
    (
        "scaleUpCooldown not a duration",
        {"spec.autoScaling": {"scaleUpCooldown": "1 minute"}},
        "spec.autoScaling.scaleUpCooldown",
        "duration",
    ),
    (
        "negative scaleDownCooldown",
        {"spec.autoScaling": {"scaleDownCooldown": "-5m"}},
        "spec.autoScaling.scaleDownCooldown",
        "duration",
    ),
    (
        "scaleDownCooldown as a number",
        {"spec.autoScaling": {"scaleDownCooldown": 300}},
        "spec.autoScaling.scaleDownCooldown",
        "type",
    ),
    (
        "monitoring interval zero",
        {"spec.monitoring": {"interval": "0s"}},
        "spec.monitoring.interval",
        "durationMinimum",
    ),
    (
        "monitoring label key",
        {"spec.monitoring": {"labels": {"bad key": "x"}}},
        "spec.monitoring.labels[bad key]",
        "labelKey",
    ),
    (
        "pdb min and max",
        {"spec.podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "spec.podDisruptionBudget",
        "exclusive",
    ),
    (
        "pdb percentage above 100",
        {"spec.podDisruptionBudget": {"minAvailable": "150%"}},
        "spec.podDisruptionBudget.minAvailable",
        "intOrPercent",
    ),
    (
        "pdb negative",
        {"spec.podDisruptionBudget": {"maxUnavailable": -1}},
        "spec.podDisruptionBudget.maxUnavailable",
        "intOrPercent",
    ),
    (
        "pdb plain number string",
        {"spec.podDisruptionBudget": {"maxUnavailable": "1"}},
        "spec.podDisruptionBudget.maxUnavailable",
        "intOrPercent",
    ),
    (
        "reserved pod label",
        {"spec.podLabels": {"app.kubernetes.io/name": "x"}},
        "spec.podLabels[app.kubernetes.io/name]",
        "reservedLabel",
    ),
    ("bad pod label key", {"spec.podLabels": {"a b": "x"}}, "spec.podLabels[a b]", "labelKey"),
    ("pod label value too long", {"spec.podLabels": {"a": "x" * 64}}, "spec.podLabels[a]", "labelValue"),
    ("pod label value not a string", {"spec.podLabels": {"a": 1}}, "spec.podLabels[a]", "type"),
    (
        "bad pod annotation key",
        {"spec.podAnnotations": {"/x": "1"}},
        "spec.podAnnotations[/x]",
        "annotationKey",
    ),
    ("bad node selector value", {"spec.nodeSelector": {"a": "-x"}}, "spec.nodeSelector[a]", "labelValue"),
    (
        "negative runAsUser",
        {"spec.securityContext": {"runAsUser": -1}},
        "spec.securityContext.runAsUser",
        "minimum",
    ),
    (
        "runAsGroup not an integer",
        {"spec.securityContext": {"runAsGroup": "1000"}},
        "spec.securityContext.runAsGroup",
        "type",
    ),
    (
        "runAsNonRoot as root",
        {"spec.securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
        "spec.securityContext.runAsUser",
        "runAsNonRoot",
    ),
    (
        "readOnlyRootFilesystem not a boolean",
        {"spec.securityContext": {"readOnlyRootFilesystem": "yes"}},
        "spec.securityContext.readOnlyRootFilesystem",
        "type",
    ),
    ("securityContext not an object", {"spec.securityContext": []}, "spec.securityContext", "type"),
    (
        "requests above limits",
        {"spec.resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        "spec.resources.requests[cpu]",
        "requestsWithinLimits",
    ),
    (
        "limit not a quantity",
        {"spec.resources": {"limits": {"memory": "lots"}}},
        "spec.resources.limits[memory]",
        "quantity",
    ),
    (
        "negative request",
        {"spec.resources": {"requests": {"memory": "-1Gi"}}},
        "spec.resources.requests[memory]",
        "nonNegativeQuantity",
    ),
    ("requests not an object", {"spec.resources": {"requests": [1]}}, "spec.resources.requests", "type"),
    ("tolerations not a list", {"spec.tolerations": {"key": "x"}}, "spec.tolerations", "type"),
    ("toleration not an object", {"spec.tolerations": [1]}, "spec.tolerations[0]", "type"),
    ("affinity not an object", {"spec.affinity": "anywhere"}, "spec.affinity", "type"),
    ("image pull secret not an object", {"spec.imagePullSecrets": ["x"]}, "spec.imagePullSecrets[0]", "type"),
    (
        "bad service account name",
        {"spec.serviceAccountName": "Bad_Name"},
        "spec.serviceAccountName",
        "pattern",
    ),
    ("priority class too long", {"spec.priorityClassName": "a" * 254}, "spec.priorityClassName", "maxLength"),
    ("auth disabled not a boolean", {"spec.auth": {"disabled": 1}}, "spec.auth.disabled", "type"),
    # kafka's state store (design.md §backends)
    (
        "kafka without a state store",
        {"spec.backend": {"type": "kafka", "url": "k:9092"}},
        "spec.backend.stateStore",
        "stateStoreRequired",
    ),
    (
        "state store on redis",
        {"spec.backend.stateStore": {"url": "redis://r"}},
        "spec.backend.stateStore",
        "stateStoreOnly",
    ),
    (
        "state store with url and embedded",
        {
            "spec.backend": {
                "type": "kafka",
                "url": "k:9092",
                "stateStore": {"url": "redis://r", "embedded": True},
            }
        },
        "spec.backend.stateStore",
        "exactlyOne",
    ),
    (
        "empty state store",
        {"spec.backend": {"type": "kafka", "url": "k:9092", "stateStore": {}}},
        "spec.backend.stateStore",
        "exactlyOne",
    ),
    (
        "state store secret without key",
        {"spec.backend": {"type": "kafka", "url": "k:9092", "stateStore": {"urlSecretRef": {"name": "r"}}}},
        "spec.backend.stateStore.urlSecretRef.key",
        "required",
    ),
    (
        "state store url empty",
        {"spec.backend": {"type": "kafka", "url": "k:9092", "stateStore": {"url": ""}}},
        "spec.backend.stateStore.url",
        "minLength",
    ),
    (
        "kafka embedded instead of a state store",
        {
            "spec.backend": {
                "type": "kafka",
                "url": "k:9092",
                "embedded": True,
                "stateStore": {"embedded": True},
            }
        },
        "spec.backend.embedded",
        "embeddedRedisOnly",
    ),
    # sqs settings (design.md §backends)
    ("sqs without settings", {"spec.backend": {"type": "sqs"}}, "spec.backend.sqs", "sqsRequired"),
    (
        "sqs with url",
        {
            "spec.backend": {
                "type": "sqs",
                "url": "https://sqs.eu-west-1.amazonaws.com/1/q",
                "sqs": {"region": "eu-west-1"},
            }
        },
        "spec.backend.url",
        "sqsSettings",
    ),
    (
        "sqs with urlSecretRef",
        {
            "spec.backend": {
                "type": "sqs",
                "urlSecretRef": {"name": "q", "key": "u"},
                "sqs": {"region": "eu-west-1"},
            }
        },
        "spec.backend.urlSecretRef",
        "sqsSettings",
    ),
    (
        "sqs embedded",
        {"spec.backend": {"type": "sqs", "embedded": True, "sqs": {"region": "eu-west-1"}}},
        "spec.backend.embedded",
        "embeddedRedisOnly",
    ),
    ("sqs settings on redis", {"spec.backend.sqs": {"region": "eu-west-1"}}, "spec.backend.sqs", "sqsOnly"),
    (
        "sqs without region",
        {"spec.backend": {"type": "sqs", "sqs": {}}},
        "spec.backend.sqs.region",
        "required",
    ),
    (
        "sqs region with spaces",
        {"spec.backend": {"type": "sqs", "sqs": {"region": "EU West"}}},
        "spec.backend.sqs.region",
        "pattern",
    ),
    (
        "sqs table too short",
        {"spec.backend": {"type": "sqs", "sqs": {"region": "eu-west-1", "dynamodbTable": "ab"}}},
        "spec.backend.sqs.dynamodbTable",
        "minLength",
    ),
    (
        "sqs prefix with a dot",
        {"spec.backend": {"type": "sqs", "sqs": {"region": "eu-west-1", "queuePrefix": "ojs.jobs"}}},
        "spec.backend.sqs.queuePrefix",
        "pattern",
    ),
    (
        "sqs endpoint not a URL",
        {"spec.backend": {"type": "sqs", "sqs": {"region": "eu-west-1", "endpoint": "localstack:4566"}}},
        "spec.backend.sqs.endpoint",
        "pattern",
    ),
    (
        "sqs fifo not a boolean",
        {"spec.backend": {"type": "sqs", "sqs": {"region": "eu-west-1", "fifo": "true"}}},
        "spec.backend.sqs.fifo",
        "type",
    ),
    # server env, envFrom and gRPC exposure (design.md §backends, §exposure)
    ("grpc enabled not a boolean", {"spec.grpc": {"enabled": "yes"}}, "spec.grpc.enabled", "type"),
    ("server env name with =", {"spec.env": [{"name": "A=B"}]}, "spec.env[0].name", "envName"),
    (
        "server env duplicate",
        {"spec.env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "spec.env[1].name",
        "unique",
    ),
    ("server env not a list", {"spec.env": {"name": "A"}}, "spec.env", "type"),
    ("server envFrom not a list", {"spec.envFrom": {"secretRef": {"name": "x"}}}, "spec.envFrom", "type"),
]


@pytest.mark.parametrize(
    ("case", "changes", "path", "rule"), CLUSTER_CASES, ids=[c[0] for c in CLUSTER_CASES]
)
def test_cluster_rule(case: str, changes: dict[str, Any], path: str, rule: str) -> None:
    result = validate_cluster(_with(CLUSTER, changes))
    assert (path, rule) in _rules(result), result.errors
    error = next(e for e in result.errors if (e.path, e.rule) == (path, rule))
    assert error.message and str(error).startswith(path)


WORKER_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("spec missing", {"spec": _DELETE}, "spec", "required"),
    ("name too long for a label value", {"metadata.name": "w" * 64}, "metadata.name", "name"),
    ("clusterRef missing", {"spec.clusterRef": _DELETE}, "spec.clusterRef", "required"),
    ("clusterRef empty", {"spec.clusterRef": ""}, "spec.clusterRef", "minLength"),
    (
        "clusterRef namespace/name",
        {"spec.clusterRef": "ojs-system/ojs-production"},
        "spec.clusterRef",
        "clusterRef",
    ),
    ("clusterRef uppercase", {"spec.clusterRef": "OJS"}, "spec.clusterRef", "clusterRef"),
    ("clusterRef with a trailing newline", {"spec.clusterRef": "ojs\n"}, "spec.clusterRef", "clusterRef"),
    ("jobTypes missing", {"spec.jobTypes": _DELETE}, "spec.jobTypes", "required"),
    ("jobTypes empty", {"spec.jobTypes": []}, "spec.jobTypes", "minItems"),
    ("jobTypes not a list", {"spec.jobTypes": "email.send"}, "spec.jobTypes", "type"),
    ("empty job type", {"spec.jobTypes": ["a", ""]}, "spec.jobTypes[1]", "minLength"),
    ("job type with a comma", {"spec.jobTypes": ["a,b"]}, "spec.jobTypes[0]", "pattern"),
    ("duplicate job type", {"spec.jobTypes": ["a", "b", "a"]}, "spec.jobTypes[2]", "unique"),
    ("too many job types", {"spec.jobTypes": [f"t{i}" for i in range(101)]}, "spec.jobTypes", "maxItems"),
    ("queues empty", {"spec.queues": []}, "spec.queues", "minItems"),
    ("empty queue", {"spec.queues": ["", "x"]}, "spec.queues[0]", "minLength"),
    ("queue with whitespace", {"spec.queues": ["a b"]}, "spec.queues[0]", "pattern"),
    ("queue not a string", {"spec.queues": [1]}, "spec.queues[0]", "type"),
    ("duplicate queue", {"spec.queues": ["x", "x"]}, "spec.queues[1]", "unique"),
    ("negative concurrency", {"spec.concurrency": -1}, "spec.concurrency", "minimum"),
    ("negative replicas", {"spec.replicas": -1}, "spec.replicas", "minimum"),
    ("image missing", {"spec.image": _DELETE}, "spec.image", "required"),
    (
        "scale to zero on cpu",
        {"spec.autoScaling": {"metric": "cpu", "minReplicas": 0}},
        "spec.autoScaling.minReplicas",
        "scaleToZero",
    ),
    (
        "max below min",
        {"spec.autoScaling": {"minReplicas": 4, "maxReplicas": 2}},
        "spec.autoScaling.maxReplicas",
        "maxGteMin",
    ),
    (
        "max zero",
        {"spec.autoScaling": {"minReplicas": 0, "maxReplicas": 0}},
        "spec.autoScaling.maxReplicas",
        "minimum",
    ),
    ("unknown metric", {"spec.autoScaling": {"metric": "memory"}}, "spec.autoScaling.metric", "enum"),
    (
        "targetJobsPerWorker zero",
        {"spec.autoScaling": {"targetJobsPerWorker": 0}},
        "spec.autoScaling.targetJobsPerWorker",
        "minimum",
    ),
    (
        "negative scaleUpThreshold",
        {"spec.autoScaling": {"scaleUpThreshold": -1}},
        "spec.autoScaling.scaleUpThreshold",
        "minimum",
    ),
    (
        "pollingInterval below 1s",
        {"spec.autoScaling": {"pollingInterval": "500ms"}},
        "spec.autoScaling.pollingInterval",
        "durationMinimum",
    ),
    (
        "pollingInterval not a duration",
        {"spec.autoScaling": {"pollingInterval": "often"}},
        "spec.autoScaling.pollingInterval",
        "duration",
    ),
    (
        "scaleDownDelay with a day unit",
        {"spec.autoScaling": {"scaleDownDelay": "1d"}},
        "spec.autoScaling.scaleDownDelay",
        "duration",
    ),
    (
        "HPA window above 1h",
        {"spec.autoScaling": {"metric": "cpu", "scaleDownDelay": "2h"}},
        "spec.autoScaling.scaleDownDelay",
        "hpaWindow",
    ),
    (
        "cpuUtilization zero",
        {"spec.autoScaling": {"cpuUtilization": 0}},
        "spec.autoScaling.cpuUtilization",
        "minimum",
    ),
    (
        "negative shutdown timeout",
        {"spec.gracefulShutdown": {"timeoutSeconds": -1}},
        "spec.gracefulShutdown.timeoutSeconds",
        "minimum",
    ),
    (
        "drain flag not a boolean",
        {"spec.gracefulShutdown": {"drainBeforeShutdown": "yes"}},
        "spec.gracefulShutdown.drainBeforeShutdown",
        "type",
    ),
    (
        "duplicate env",
        {"spec.env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "spec.env[1].name",
        "unique",
    ),
    ("env without name", {"spec.env": [{"value": "1"}]}, "spec.env[0].name", "required"),
    ("env name with =", {"spec.env": [{"name": "A=B"}]}, "spec.env[0].name", "envName"),
    ("env value not a string", {"spec.env": [{"name": "A", "value": 1}]}, "spec.env[0].value", "type"),
    (
        "env value and valueFrom",
        {
            "spec.env": [
                {"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ]
        },
        "spec.env[0].valueFrom",
        "valueOrValueFrom",
    ),
    ("env item not an object", {"spec.env": ["A=1"]}, "spec.env[0]", "type"),
    ("envFrom not a list", {"spec.envFrom": {"configMapRef": {"name": "x"}}}, "spec.envFrom", "type"),
    ("command item not a string", {"spec.command": ["run", 1]}, "spec.command[1]", "type"),
    ("args not a list", {"spec.args": "--x"}, "spec.args", "type"),
    (
        "requests above limits",
        {"spec.resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}},
        "spec.resources.requests[memory]",
        "requestsWithinLimits",
    ),
    (
        "reserved pod label",
        {"spec.podLabels": {"app.kubernetes.io/component": "x"}},
        "spec.podLabels[app.kubernetes.io/component]",
        "reservedLabel",
    ),
    (
        "runAsNonRoot as root",
        {"spec.securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
        "spec.securityContext.runAsUser",
        "runAsNonRoot",
    ),
]


@pytest.mark.parametrize(("case", "changes", "path", "rule"), WORKER_CASES, ids=[c[0] for c in WORKER_CASES])
def test_worker_rule(case: str, changes: dict[str, Any], path: str, rule: str) -> None:
    result = validate_worker(_with(WORKER, changes), cluster_exists=True)
    assert (path, rule) in _rules(result), result.errors


VALID_CLUSTERS: list[tuple[str, dict[str, Any]]] = [
    ("lite", {"spec.backend": {"type": "lite"}}),
    ("lite with one replica", {"spec.backend": {"type": "lite"}, "spec.replicas": 1}),
    ("postgres url", {"spec.backend": {"type": "postgres", "url": "postgres://db/ojs"}}),
    ("nats secret", {"spec.backend": {"type": "nats", "urlSecretRef": {"name": "nats", "key": "url"}}}),
    (
        "kafka with an embedded state store",
        {"spec.backend": {"type": "kafka", "url": "b1:9092,b2:9092", "stateStore": {"embedded": True}}},
    ),
    (
        "kafka with a state store Secret",
        {
            "spec.backend": {
                "type": "kafka",
                "urlSecretRef": {"name": "kafka", "key": "brokers"},
                "stateStore": {"urlSecretRef": {"name": "redis", "key": "url"}},
                "redis": None,
            }
        },
    ),
    ("sqs region only", {"spec.backend": {"type": "sqs", "sqs": {"region": "eu-west-1"}}}),
    (
        "sqs every setting",
        {
            "spec.backend": {
                "type": "sqs",
                "sqs": {
                    "region": "us-gov-west-1",
                    "dynamodbTable": "team.ojs_jobs-1",
                    "queuePrefix": "team_ojs-1",
                    "fifo": True,
                },
            },
            "spec.serviceAccountName": "ojs-sqs",
        },
    ),
    (
        "server env, envFrom and gRPC",
        {
            "spec.env": [
                {"name": "OJS_SHUTDOWN_TIMEOUT", "value": "20s"},
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "id"}}},
            ],
            "spec.envFrom": [{"configMapRef": {"name": "ojs-tuning"}}],
            "spec.grpc": {"enabled": False},
        },
    ),
    ("redis url", {"spec.backend": {"type": "redis", "url": "redis://r:6379", "embedded": False}}),
    (
        "embedded redis with storage",
        {
            "spec.backend.redis": {
                "image": "redis:7.2",
                "storage": {"size": "10Gi", "storageClassName": "fast"},
            }
        },
    ),
    ("pdb percent", {"spec.podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}}),
    ("pdb zero", {"spec.podDisruptionBudget": {"maxUnavailable": 0}}),
    (
        "autoscaling",
        {
            "spec.autoScaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 2,
                "scaleUpCooldown": "1m30s",
                "scaleDownCooldown": "0",
                "targetJobsPerWorker": 20,
            }
        },
    ),
    ("monitoring", {"spec.monitoring": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}}),
    (
        "pod settings",
        {
            "spec.securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000},
            "spec.podLabels": {"team": "jobs", "example.com/tier": "backend"},
            "spec.podAnnotations": {"example.com/note": "anything at all"},
            "spec.nodeSelector": {"kubernetes.io/os": "linux"},
            "spec.tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ojs", "effect": "NoSchedule"}
            ],
            "spec.imagePullSecrets": [{"name": "regcred"}],
            "spec.serviceAccountName": "ojs-server",
            "spec.priorityClassName": "high-priority",
            "spec.resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": 2, "memory": "1Gi"},
            },
        },
    ),
    ("nulls count as absent", {"spec.backend": {"type": "redis", "embedded": True, "url": None}}),
    ("generated name", {"metadata": {"generateName": "ojs-"}}),
]


@pytest.mark.parametrize(("case", "changes"), VALID_CLUSTERS, ids=[c[0] for c in VALID_CLUSTERS])
def test_valid_clusters(case: str, changes: dict[str, Any]) -> None:
    obj = _with(CLUSTER, changes)
    assert validate_cluster(obj).errors == []
    OJSClusterSpec.from_dict(obj["spec"])


VALID_WORKERS: list[tuple[str, dict[str, Any]]] = [
    ("scale to zero on queue depth", {"spec.autoScaling": {"enabled": True, "minReplicas": 0}}),
    ("zero replicas", {"spec.replicas": 0}),
    ("cpu with a 1h window", {"spec.autoScaling": {"metric": "cpu", "scaleDownDelay": "1h"}}),
    ("queue depth with a long delay", {"spec.autoScaling": {"scaleDownDelay": "24h"}}),
    (
        "env from the downward API",
        {
            "spec.env": [
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "OJS_QUEUES", "value": "a,b"},
            ],
            "spec.envFrom": [{"secretRef": {"name": "worker-secrets"}, "prefix": "APP_"}],
        },
    ),
    ("queues", {"spec.queues": ["default", "emails.high", "data-processing"]}),
    ("command and args", {"spec.command": ["/worker"], "spec.args": ["--concurrency", "4"]}),
    ("graceful shutdown", {"spec.gracefulShutdown": {"timeoutSeconds": 0, "drainBeforeShutdown": True}}),
]


@pytest.mark.parametrize(("case", "changes"), VALID_WORKERS, ids=[c[0] for c in VALID_WORKERS])
def test_valid_workers(case: str, changes: dict[str, Any]) -> None:
    obj = _with(WORKER, changes)
    assert validate_worker(obj, cluster_exists=True).errors == []
    OJSWorkerSpec.from_dict(obj["spec"])


def test_cluster_ref_is_immutable() -> None:
    moved = _with(WORKER, {"spec.clusterRef": "other"})
    assert ("spec.clusterRef", "immutable") in _rules(validate_worker(moved, old=WORKER))
    assert validate_worker(WORKER, old=WORKER).errors == []
    assert validate_worker(moved).errors == []  # a create has no old object


def test_errors_are_reported_once_per_field_and_rule() -> None:
    obj = _with(CLUSTER, {"spec.resources": {"requests": {"cpu": "x"}}})
    errors = [(e.path, e.rule) for e in validate_cluster(obj).errors]
    assert len(errors) == len(set(errors))


def test_non_objects_are_rejected() -> None:
    for junk in (None, 1, "x", [], [CLUSTER]):
        assert validate_cluster(junk).errors == [FieldError("", "type", "must be an object")]
        assert not validate_worker(junk).ok


# --- warnings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "warns"),
    [
        ("ghcr.io/openjobspec/ojs-server:latest", True),
        ("ghcr.io/openjobspec/ojs-server", True),
        ("localhost:5000/ojs-server", True),
        ("localhost:5000/ojs-server:v1", False),
        ("ojs-server:v0.5.0", False),
        ("ghcr.io/openjobspec/ojs-server:latest@sha256:" + "a" * 64, False),
        ("ghcr.io/openjobspec/ojs-server@sha256:" + "a" * 64, False),
    ],
)
def test_latest_or_untagged_image_warns(image: str, warns: bool) -> None:
    cluster = validate_cluster(_with(CLUSTER, {"spec.image": image}))
    worker = validate_worker(_with(WORKER, {"spec.image": image}), cluster_exists=True)
    for result in (cluster, worker):
        assert result.errors == []
        assert any("spec.image" in w for w in result.warnings) is warns


def test_cluster_without_image_uses_the_flag_and_does_not_warn() -> None:
    assert validate_cluster(_with(CLUSTER, {"spec.image": _DELETE})).warnings == []


def test_missing_cluster_warns() -> None:
    assert any("not found" in w for w in validate_worker(WORKER, cluster_exists=False).warnings)
    assert validate_worker(WORKER, cluster_exists=True).warnings == []
    assert validate_worker(WORKER).warnings == []


def test_no_limits_warns() -> None:
    assert any("limits" in w for w in validate_worker(_with(WORKER, {"spec.resources": _DELETE})).warnings)
    only_requests = {"spec.resources": {"requests": {"cpu": "1"}}}
    assert any("limits" in w for w in validate_worker(_with(WORKER, only_requests)).warnings)
    assert any("limits" in w for w in validate_cluster(_with(CLUSTER, only_requests)).warnings)
    # The cluster's default resources have limits.
    assert validate_cluster(CLUSTER).warnings == []


def test_auth_disabled_warns() -> None:
    result = validate_cluster(_with(CLUSTER, {"spec.auth": {"disabled": True}}))
    assert result.errors == []
    assert any("auth.disabled" in w for w in result.warnings)


def test_cpu_metric_without_cpu_requests_warns() -> None:
    obj = _with(
        WORKER,
        {
            "spec.autoScaling": {"enabled": True, "metric": "cpu"},
            "spec.resources": {"limits": {"memory": "1Gi"}},
        },
    )
    result = validate_worker(obj, cluster_exists=True)
    assert result.errors == []
    assert any("requests.cpu" in w for w in result.warnings)
    with_requests = _with(WORKER, {"spec.autoScaling": {"enabled": True, "metric": "cpu"}})
    assert validate_worker(with_requests, cluster_exists=True).warnings == []


def test_secrets_never_appear_in_messages() -> None:
    secret = "hunter2-s3cret"
    url = f"redis://:{secret}@redis:6379/0"
    objs = [
        _with(CLUSTER, {"spec.backend.url": url}),
        _with(CLUSTER, {"spec.backend": {"type": "lite", "url": url}}),
        _with(CLUSTER, {"spec.backend": {"type": "redis", "url": url + "x" * 5000}}),
    ]
    for obj in objs:
        result = validate_cluster(obj)
        assert result.errors
        assert not any(secret in m for m in result.messages() + result.warnings)
    result = validate_cluster(_with(CLUSTER, {"spec.backend": {"type": "redis", "url": url}}))
    assert result.errors == []
    assert any("credentials" in w for w in result.warnings)
    assert not any(secret in w for w in result.warnings)


# --- junk never raises --------------------------------------------------------------------------------------

_KEYS = sorted(
    {
        *(f.alias or n for m in (OJSClusterSpec, OJSWorkerSpec) for n, f in m.model_fields.items()),
        "type",
        "url",
        "urlSecretRef",
        "embedded",
        "redis",
        "storage",
        "size",
        "name",
        "key",
        "enabled",
        "minReplicas",
        "maxReplicas",
        "metric",
        "scaleDownDelay",
        "pollingInterval",
        "minAvailable",
        "maxUnavailable",
        "requests",
        "limits",
        "cpu",
        "memory",
        "value",
        "valueFrom",
        "runAsUser",
        "runAsNonRoot",
        "disabled",
        "labels",
        "interval",
        "metadata",
        "spec",
    }
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["redis", "lite", "cpu", "queueDepth", "30s", "0", "1Gi", "50%", "a:latest", "app.kubernetes.io/name"]
    )
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON, _JSON)
def test_arbitrary_json_never_raises(obj: Any, old: Any) -> None:
    for result in (
        validate_cluster(obj),
        validate_worker(obj),
        validate_worker(obj, cluster_exists=False, old=old),
    ):
        assert isinstance(result, ValidationResult)
        assert all(
            isinstance(e, FieldError) and isinstance(e.path, str) and e.rule and e.message
            for e in result.errors
        )
        assert all(isinstance(w, str) for w in result.warnings)


_SPEC_PATHS = st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3).map(".".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_SPEC_PATHS, _JSON), min_size=1, max_size=4), st.booleans())
def test_mutated_objects_never_raise_and_valid_means_parseable(
    mutations: list[tuple[str, Any]], worker: bool
) -> None:
    base = WORKER if worker else CLUSTER
    obj = copy.deepcopy(base)
    for path, value in mutations:
        parent: Any = obj["spec"]
        *parents, last = path.split(".")
        for key in parents:
            if not isinstance(parent.get(key), dict):
                parent[key] = {}
            parent = parent[key]
        parent[last] = value
    result = validate_worker(obj, old=base) if worker else validate_cluster(obj)
    if result.ok:
        # Whatever passes validation is something the reconcilers can load.
        (OJSWorkerSpec if worker else OJSClusterSpec).from_dict(obj["spec"])


def test_integral_float_for_an_integer_is_rejected() -> None:
    # The apiserver's CEL rules fail on 2.0 where an integer is read ("float64, expected int64") while
    # the schema alone may let it through; Python rejects it so that it never admits what CEL refuses.
    from ojsctrl.api.validation import validate_worker

    obj = {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSWorker",
        "metadata": {"name": "w"},
        "spec": {"clusterRef": "c", "jobTypes": ["a"], "image": "i:1", "replicas": 2.0},
    }
    errors = validate_worker(obj).errors
    assert [(e.path, e.rule) for e in errors] == [("spec.replicas", "type")]


def test_sqs_connection_fields_are_refused_naming_backend_sqs() -> None:
    for field, value in (
        ("url", "https://sqs.eu-west-1.amazonaws.com/1/q"),
        ("urlSecretRef", {"name": "q", "key": "u"}),
    ):
        obj = _with(CLUSTER, {"spec.backend": {"type": "sqs", field: value, "sqs": {"region": "eu-west-1"}}})
        result = validate_cluster(obj)
        assert [str(e) for e in result.errors] == [
            f"spec.backend.{field}: an sqs backend is configured by backend.sqs (region, dynamodbTable, "
            f"queuePrefix, fifo, endpoint), not by {field}"
        ]


def test_lite_messages_name_the_field_and_the_reason() -> None:
    replicas = validate_cluster(_with(CLUSTER, {"spec.backend": {"type": "lite"}, "spec.replicas": 2}))
    assert replicas.messages() == [
        "spec.replicas: a lite backend keeps its state in-process: replicas must be 1"
    ]
    scaled = validate_cluster(
        _with(CLUSTER, {"spec.backend": {"type": "lite"}, "spec.autoScaling": {"enabled": True}})
    )
    assert scaled.messages() == [
        "spec.autoScaling.enabled: a lite backend keeps its state in-process: it cannot be autoscaled"
    ]


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        (
            {
                "spec.backend": {
                    "type": "sqs",
                    "sqs": {"region": "eu-west-1", "endpoint": "http://localstack:4566"},
                }
            },
            "spec.backend.sqs.endpoint is set: the SQS server then ignores the AWS credential chain and uses "
            "the static credentials test/test (for LocalStack and tests only)",
        ),
        (
            {"spec.grpc": {"enabled": True}},
            "spec.grpc.enabled is true: OJS gRPC (port 9090) has no authentication; anyone who can reach the "
            "Service bypasses the API key",
        ),
        (
            {"spec.env": [{"name": "A", "value": "1"}, {"name": "OJS_API_KEY", "value": "k"}]},
            "spec.env[1] replaces the operator-managed variable OJS_API_KEY of the redis server: the "
            "operator's value is not used",
        ),
        (
            {
                "spec.backend": {"type": "kafka", "url": "k:9092", "stateStore": {"embedded": True}},
                "spec.env": [{"name": "REDIS_URL", "value": "redis://mine"}],
            },
            "spec.env[0] replaces the operator-managed variable REDIS_URL of the kafka server: the "
            "operator's value is not used",
        ),
        (
            {"spec.backend": {"type": "kafka", "url": "k:9092", "stateStore": {"url": "redis://:pw@r:6379"}}},
            "spec.backend.stateStore.url contains credentials: put the URL in a Secret and use urlSecretRef",
        ),
    ],
)
def test_cluster_warnings(changes: dict[str, Any], warning: str) -> None:
    result = validate_cluster(_with(CLUSTER, changes))
    assert result.errors == [] and warning in result.warnings, result


def test_env_of_other_backends_does_not_warn() -> None:
    # REDIS_URL is not the lite server's: setting it replaces nothing of the operator's.
    obj = _with(
        CLUSTER, {"spec.backend": {"type": "lite"}, "spec.env": [{"name": "REDIS_URL", "value": "x"}]}
    )
    assert validate_cluster(obj).warnings == []


def test_redis_options_apply_to_kafka_embedded_state_store() -> None:
    store = {
        "type": "kafka",
        "url": "k:9092",
        "stateStore": {"embedded": True},
        "redis": {"image": "redis:7.2"},
    }
    assert validate_cluster(_with(CLUSTER, {"spec.backend": store})).warnings == []
    external = {**store, "stateStore": {"url": "redis://r"}}
    assert any(
        "has no effect" in w for w in validate_cluster(_with(CLUSTER, {"spec.backend": external})).warnings
    )


def test_cross_namespace_cluster_ref_is_refused_saying_workers_and_clusters_share_a_namespace() -> None:
    result = validate_worker(_with(WORKER, {"spec.clusterRef": "ojs-system/ojs-production"}))
    (error,) = result.errors
    assert error.path == "spec.clusterRef"
    assert "workers and clusters share a namespace" in error.message
    assert "DNS-1123 subdomain" in error.message
    # A dotted name is a valid subdomain, and so a valid OJSCluster name.
    assert validate_worker(_with(WORKER, {"spec.clusterRef": "ojs.production"})).errors == []
