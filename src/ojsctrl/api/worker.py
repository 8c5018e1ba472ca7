"""OJSWorker: a Deployment of workers that process jobs from an OJSCluster (design.md §api-worker)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from ojsctrl.api.common import (
    API_VERSION,
    DNS1123_SUBDOMAIN,
    LIST_ITEM_PATTERN,
    NO_WHITESPACE,
    Condition,
    OJSModel,
    PodSettings,
    Timestamp,
)
from ojsctrl.api.durations import DURATION_PATTERN
from ojsctrl.api.markers import CEL, Duration, GoDuration, Int32, Int64, K8s, SchemaExtra

WorkerPhase = Literal["Pending", "Running", "Scaling", "Draining", "Error"]
AutoScalingMetric = Literal["queueDepth", "waitTime", "cpu"]
FallbackBehavior = Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"]
# The metrics the operator itself evaluates (the others hand the scaling to an HPA).
OPERATOR_METRICS: frozenset[str] = frozenset({"queueDepth", "waitTime"})

# Pause annotations (design.md §autoscaling-annotations), after KEDA's autoscaling.keda.sh/paused and
# paused-replicas.
AUTOSCALING_PAUSED_ANNOTATION = "ojs.openjobspec.dev/autoscaling-paused"
PAUSED_REPLICAS_ANNOTATION = "ojs.openjobspec.dev/paused-replicas"

TARGET_WAIT_TIME_REQUIRED = "targetWaitTime is required with metric waitTime"
TARGET_WAIT_TIME_REFUSED = "targetWaitTime applies only to metric waitTime"
FALLBACK_REFUSED = "fallback applies only to metrics queueDepth and waitTime (with cpu the HPA scales)"

# Used when neither the worker nor its cluster sets targetJobsPerWorker.
DEFAULT_TARGET_JOBS_PER_WORKER = 10
# An HPA's stabilisation window cannot exceed one hour (design.md §durations).
MAX_HPA_WINDOW = "1h"
MAX_LIST_ITEMS = 100
MAX_ITEM_LENGTH = 253

_CEL_DURATION = DURATION_PATTERN.replace("\\", "\\\\")

# A reference such as `ojs-system/ojs-production` can never resolve (the worker reads the cluster from its own
# namespace) and clusterRef is immutable, so it is refused rather than warned about (design.md §cluster-ref).
CLUSTER_REF_MESSAGE = (
    "clusterRef must be the name of an OJSCluster (a DNS-1123 subdomain: lowercase letters, digits, '-' and "
    "'.'), not namespace/name: workers and clusters share a namespace, so the OJSCluster must be in the "
    "worker's own namespace"
)
_CEL_DNS1123_SUBDOMAIN = DNS1123_SUBDOMAIN.replace("\\", "\\\\")

ListItem = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ITEM_LENGTH,
        pattern=LIST_ITEM_PATTERN,
        description="A non-empty name without commas or whitespace.",
    ),
]


class WorkerFallback(OJSModel):
    """Replicas to use while the queue stats cannot be read, with KEDA's fields and behaviours (design.md
    §autoscaling-annotations)."""

    failure_threshold: Annotated[
        Int32,
        Field(
            ge=1,
            description=(
                "Consecutive failed polls tolerated before the fallback applies (as KEDA counts them: the "
                "fallback starts with the failure after this many)."
            ),
        ),
    ]
    replicas: Annotated[Int32, Field(ge=0, description="Fallback replica count (clamped to min/max).")]
    behavior: Annotated[
        FallbackBehavior,
        SchemaExtra.of({"maxLength": 32}),
        Field(
            description=(
                "static: use replicas. currentReplicas: keep the current count. currentReplicasIfHigher: the "
                "current count if it is higher than replicas, else replicas. currentReplicasIfLower: the "
                "current count if it is lower than replicas, else replicas."
            )
        ),
    ] = "static"


class WorkerAutoScaling(OJSModel):
    """Scaling of the workers, from the queue depth (operator) or CPU (an HPA)."""

    cel_rules: ClassVar[tuple[CEL, ...]] = (
        CEL(
            "!has(self.minReplicas) || !has(self.maxReplicas) || self.maxReplicas >= self.minReplicas",
            "maxReplicas must be greater than or equal to minReplicas",
            field_path=".maxReplicas",
        ),
        CEL(
            "!has(self.minReplicas) || self.minReplicas > 0 || !has(self.metric) || self.metric == "
            "'queueDepth' || self.metric == 'waitTime'",
            "minReplicas 0 (scale to zero) needs metric queueDepth or waitTime: an HPA cannot scale to zero",
            field_path=".minReplicas",
        ),
        CEL(
            "!has(self.metric) || self.metric != 'waitTime' || has(self.targetWaitTime)",
            TARGET_WAIT_TIME_REQUIRED,
            field_path=".targetWaitTime",
        ),
        CEL(
            "!has(self.targetWaitTime) || (has(self.metric) && self.metric == 'waitTime')",
            TARGET_WAIT_TIME_REFUSED,
            field_path=".targetWaitTime",
        ),
        CEL(
            "!has(self.fallback) || !has(self.metric) || self.metric != 'cpu'",
            FALLBACK_REFUSED,
            field_path=".fallback",
        ),
        CEL(
            "!has(self.metric) || self.metric != 'cpu' || !has(self.scaleDownDelay)"
            f" || !self.scaleDownDelay.matches('{_CEL_DURATION}')"
            f" || duration(self.scaleDownDelay) <= duration('{MAX_HPA_WINDOW}')",
            "with metric cpu, scaleDownDelay is the HPA's scale-down stabilisation window, which is at "
            "most 1h",
            field_path=".scaleDownDelay",
        ),
    )

    enabled: bool = Field(default=False, description="Scale the workers automatically.")
    metric: Annotated[
        AutoScalingMetric,
        SchemaExtra.of({"maxLength": 16}),
        Field(
            description=(
                "queueDepth: the operator scales on the depth of the worker's queues. waitTime: the "
                "operator sizes the workers so that jobs wait at most targetWaitTime. cpu: an owned "
                "HorizontalPodAutoscaler scales on CPU utilisation."
            )
        ),
    ] = "queueDepth"
    min_replicas: Annotated[
        Int32,
        Field(
            ge=0,
            description=(
                "Lower bound of the worker replicas; 0 scales to zero (queueDepth and waitTime only)."
            ),
        ),
    ] = 1
    max_replicas: Annotated[Int32, Field(ge=1, description="Upper bound of the worker replicas.")] = 10
    target_jobs_per_worker: Annotated[
        Int64 | None,
        Field(
            ge=1,
            description=(
                "Jobs (waiting + active) per worker pod: desired = ceil(load / targetJobsPerWorker). "
                "Default: the "
                "cluster's autoScaling.targetJobsPerWorker, else 10."
            ),
        ),
    ] = None
    scale_up_threshold: Annotated[
        Int64, Field(ge=0, description="Queue depth at or below which the workers never scale up.")
    ] = 0
    scale_down_delay: Annotated[
        Duration,
        Field(
            description="Stabilisation window for scale-down: the lower recommendation must hold this long."
        ),
    ] = "5m"
    polling_interval: Annotated[
        str,
        # The floor bounds what a tenant can make the operator do: at most one poll of a cluster per
        # second, whose answer is bounded separately (20 queue series per cluster). docs/autoscaling.md.
        GoDuration(minimum="1s"),
        Field(
            description=(
                "How often the operator reads the queue depth; at least 1s, which bounds the polls and "
                "metric updates one object can cause."
            )
        ),
    ] = "30s"
    cpu_utilization: Annotated[
        Int32,
        Field(ge=1, description="Target average CPU utilisation in percent of requests (metric cpu only)."),
    ] = 80
    target_wait_time: Annotated[
        str | None,
        GoDuration(minimum="1s"),
        Field(
            description=(
                "How long a job may wait before a worker starts it (metric waitTime only, where it is "
                "required); a Go duration of at least 1s."
            )
        ),
    ] = None
    fallback: WorkerFallback | None = Field(
        default=None,
        description=(
            "Replicas to use after failureThreshold consecutive failed polls (queueDepth and waitTime); "
            "without it, missing data holds the current replicas."
        ),
    )

    @model_validator(mode="after")
    def _check_wait_time(self) -> Self:
        # The same rules as the CEL rules above, so the webhook and the reconciler refuse what the API
        # server refuses, each naming the field.
        if self.metric == "waitTime" and self.target_wait_time is None:
            raise PydanticCustomError("targetWaitTime", TARGET_WAIT_TIME_REQUIRED)
        if self.metric != "waitTime" and self.target_wait_time is not None:
            raise PydanticCustomError("targetWaitTime", TARGET_WAIT_TIME_REFUSED)
        if self.metric == "cpu" and self.fallback is not None:
            raise PydanticCustomError("fallback", FALLBACK_REFUSED)
        return self

    def effective_target_jobs_per_worker(self, cluster_default: int | None) -> int:
        """targetJobsPerWorker with the fallbacks applied: the worker's, the cluster's, then 10."""
        if self.target_jobs_per_worker is not None:
            return self.target_jobs_per_worker
        if cluster_default is not None:
            return cluster_default
        return DEFAULT_TARGET_JOBS_PER_WORKER


class GracefulShutdown(OJSModel):
    """How worker pods stop."""

    timeout_seconds: Annotated[
        Int32,
        Field(
            ge=0,
            description=(
                "Time a worker gets to finish active jobs after SIGTERM; the pod's grace period is this "
                "plus 10s."
            ),
        ),
    ] = 30
    drain_before_shutdown: bool = Field(
        default=False,
        description="Before scaling down, quiet idle workers and remove them first (pod-deletion-cost).",
    )


class OJSWorkerSpec(PodSettings):
    """Desired state of a set of OJS workers."""

    cluster_ref: Annotated[
        str,
        CEL("self == oldSelf", "clusterRef is immutable"),
        CEL(f"self.matches('{_CEL_DNS1123_SUBDOMAIN}')", CLUSTER_REF_MESSAGE),
        Field(
            min_length=1,
            max_length=253,
            description=(
                "Name of the OJSCluster the workers connect to, in the worker's own namespace (workers and "
                "clusters share a namespace; no namespace/name). Immutable."
            ),
        ),
    ]
    job_types: Annotated[
        list[ListItem],
        SchemaExtra.of({"x-kubernetes-list-type": "set"}),
        Field(min_length=1, max_length=MAX_LIST_ITEMS, description="Job types the workers handle."),
    ]
    queues: Annotated[
        list[ListItem],
        SchemaExtra.of({"x-kubernetes-list-type": "set"}),
        Field(min_length=1, max_length=MAX_LIST_ITEMS, description="Queues the workers fetch from."),
    ] = Field(default_factory=lambda: ["default"])
    concurrency: Annotated[
        Int32, Field(ge=0, description="Jobs processed at once per pod; 0 leaves it to the SDK default.")
    ] = 0
    replicas: Annotated[
        Int32,
        Field(
            ge=0,
            description=(
                "Number of worker pods. With autoScaling enabled this is only the initial value (clamped to "
                "min/max)."
            ),
        ),
    ] = 1
    image: Annotated[
        str,
        Field(min_length=1, max_length=1024, pattern=NO_WHITESPACE, description="Worker container image."),
    ]
    command: Annotated[
        list[str] | None,
        K8s("Container.command"),
        Field(description="Entrypoint override of the worker container."),
    ] = None
    args: Annotated[
        list[str] | None, K8s("Container.args"), Field(description="Arguments of the worker container.")
    ] = None
    env: Annotated[
        list[dict[str, Any]] | None,
        K8s("Container.env"),
        Field(
            description=(
                "Extra environment variables; an entry replaces the operator's variable of the same name."
            )
        ),
    ] = None
    env_from: Annotated[
        list[dict[str, Any]] | None,
        K8s("Container.envFrom"),
        Field(description="Sources (ConfigMaps, Secrets) of extra environment variables."),
    ] = None
    resources: Annotated[
        dict[str, Any] | None,
        K8s("Container.resources"),
        Field(description="Compute resources of the worker container."),
    ] = None
    auto_scaling: WorkerAutoScaling = Field(
        default_factory=WorkerAutoScaling, description="Worker autoscaling."
    )
    graceful_shutdown: GracefulShutdown = Field(
        default_factory=GracefulShutdown, description="Shutdown behaviour."
    )


class AutoscalingInputs(OJSModel):
    """What an autoscaling decision was computed from.

    Rates are decimal strings in jobs per second (``"2.35"``, a valid quantity) and times Go durations
    (``"10.2s"``): Kubernetes APIs avoid floating-point fields.
    """

    depth: Int64 | None = Field(default=None, description="Jobs waiting in the worker's queues.")
    active: Int64 | None = Field(default=None, description="Jobs being processed.")
    arrival_rate: str | None = Field(default=None, description="Smoothed arrivals, jobs per second.")
    throughput: str | None = Field(default=None, description="Smoothed completions, jobs per second.")
    service_time: str | None = Field(
        default=None, description="Smoothed time a job takes (Little's law: active / throughput)."
    )
    estimated_wait: str | None = Field(
        default=None, description="Time the waiting jobs need to drain at the current throughput."
    )
    startup_latency: str | None = Field(
        default=None, description="Measured time from a scale-up decision to the pods being Ready."
    )


class AutoscalingStatus(OJSModel):
    """The last autoscaling decision, explained."""

    metric: str | None = Field(default=None, description="The metric the decision used.")
    recommendation: Int32 | None = Field(
        default=None, description="Replicas the metric alone recommends (clamped to min/max)."
    )
    desired_replicas: Int32 | None = Field(
        default=None, description="Replicas decided after thresholds, stabilisation, fallback and pause."
    )
    reason: str | None = Field(default=None, description="Why, in one CamelCase word.")
    message: str | None = Field(default=None, description="Why, in words.")
    inputs: AutoscalingInputs | None = Field(default=None, description="What the decision was computed from.")


class OJSWorkerStatus(OJSModel):
    """Observed state of a set of OJS workers."""

    phase: WorkerPhase | None = Field(
        default=None, description="Summary phase: Pending, Running, Scaling, Draining or Error."
    )
    replicas: Int32 | None = Field(default=None, description="Worker pods.")
    ready_replicas: Int32 | None = Field(default=None, description="Ready worker pods.")
    desired_replicas: Int32 | None = Field(
        default=None, description="Replicas the autoscaler last decided on."
    )
    queue_depth: Int64 | None = Field(default=None, description="Jobs waiting in the worker's queues.")
    active_jobs: Int64 | None = Field(
        default=None, description="Jobs being processed from the worker's queues."
    )
    last_scale_time: Timestamp | None = Field(default=None, description="Last time the workers were scaled.")
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The last autoscaling decision of the operator, with its inputs."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the worker pods, serialised (for the scale subresource)."
    )
    observed_generation: Int64 | None = Field(
        default=None, description="metadata.generation this status was computed from."
    )
    conditions: Annotated[
        list[Condition] | None,
        SchemaExtra.of({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
        Field(description="Ready, Available, Progressing, Degraded, ClusterFound and Autoscaling."),
    ] = None


class OJSWorker(OJSModel):
    """OJSWorker runs workers that process jobs of the given types from an OJSCluster's queues."""

    api_version: str = Field(default=API_VERSION, description="API version of the object.")
    kind: str = Field(default="OJSWorker", description="Kind of the object.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: OJSWorkerSpec = Field(description="Desired state of the workers.")
    status: OJSWorkerStatus | None = Field(
        default=None, description="Observed state, written by the operator."
    )


@dataclass(frozen=True, slots=True)
class PauseAnnotations:
    """The pause annotations of an OJSWorker, parsed (see :func:`parse_pause_annotations`).

    ``paused`` says a pause is requested (it may have expired: compare ``until`` with the clock);
    ``until`` is the end of a timed pause; ``replicas`` the count to hold while paused (None: the current
    count); ``error`` names the annotation whose value could not be read.
    """

    paused: bool = False
    until: datetime | None = None
    replicas: int | None = None
    error: str | None = None


def parse_pause_annotations(annotations: Mapping[str, str] | None) -> PauseAnnotations:
    """Read ``ojs.openjobspec.dev/autoscaling-paused`` and ``ojs.openjobspec.dev/paused-replicas``.

    ``autoscaling-paused`` is ``true`` (until removed), ``false``, or an RFC 3339 time the pause lasts until.
    ``paused-replicas`` is a non-negative integer; as with KEDA's ``paused-replicas`` it pauses on its own
    too. An unreadable value of either is left out, as if the annotation were absent, and reported in
    ``error`` naming the annotation (the operator shows it in the Autoscaling condition until it is fixed).
    """
    if not annotations:
        return PauseAnnotations()
    errors: list[str] = []
    paused = False
    until: datetime | None = None
    raw = annotations.get(AUTOSCALING_PAUSED_ANNOTATION)
    if raw is not None:
        value = raw.strip()
        if value.lower() == "true":
            paused = True
        elif value.lower() == "false":
            paused = False
        else:
            try:
                until = _parse_rfc3339(value)
                paused = True
            except ValueError:
                errors.append(
                    f"annotation {AUTOSCALING_PAUSED_ANNOTATION}: {raw!r} is neither true, false nor an "
                    "RFC 3339 time such as 2026-12-31T18:00:00Z; ignored until it is fixed"
                )
                raw = None  # left out, as if absent
    replicas: int | None = None
    raw_replicas = annotations.get(PAUSED_REPLICAS_ANNOTATION)
    if raw_replicas is not None:
        text = raw_replicas.strip()
        if text.isdigit() and int(text) <= 2**31 - 1:
            replicas = int(text)
            if raw is None:
                paused = True
        else:
            errors.append(
                f"annotation {PAUSED_REPLICAS_ANNOTATION}: {raw_replicas!r} is not a non-negative integer; "
                "ignored until it is fixed"
            )
    return PauseAnnotations(paused, until, replicas, "; ".join(errors) or None)


def _parse_rfc3339(value: str) -> datetime:
    # RFC 3339 needs a date, a time and an offset; fromisoformat alone accepts dates and naive times.
    if "T" not in value.upper() or not (value.endswith(("Z", "z")) or value[-6] in "+-"):
        raise ValueError("not RFC 3339")
    parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    if parsed.tzinfo is None:  # pragma: no cover - guarded by the offset check above
        raise ValueError("no offset")
    return parsed
