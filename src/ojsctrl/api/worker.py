"""OJSWorker: a Deployment of workers that process jobs from an OJSCluster (SPEC §1.2)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

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
AutoScalingMetric = Literal["queueDepth", "cpu"]

# Used when neither the worker nor its cluster sets targetJobsPerWorker.
DEFAULT_TARGET_JOBS_PER_WORKER = 10
# An HPA's stabilisation window cannot exceed one hour (SPEC §8.8).
MAX_HPA_WINDOW = "1h"
MAX_LIST_ITEMS = 100
MAX_ITEM_LENGTH = 253

_CEL_DURATION = DURATION_PATTERN.replace("\\", "\\\\")

# A reference such as `ojs-system/ojs-production` can never resolve (the worker reads the cluster from its own
# namespace) and clusterRef is immutable, so it is refused rather than warned about (SPEC §9.9).
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
            "'queueDepth'",
            "minReplicas 0 (scale to zero) needs metric queueDepth: an HPA cannot scale to zero",
            field_path=".minReplicas",
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
                "queueDepth: the operator scales on the depth of the worker's queues. cpu: an owned "
                "HorizontalPodAutoscaler scales on CPU utilisation."
            )
        ),
    ] = "queueDepth"
    min_replicas: Annotated[
        Int32,
        Field(ge=0, description="Lower bound of the worker replicas; 0 scales to zero (queueDepth only)."),
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
