"""OJSCluster: an OJS job server deployment and its backend (design.md §api-cluster)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from ojsctrl.api.backends import server_image as default_server_image
from ojsctrl.api.common import (
    API_VERSION,
    DEFAULT_REDIS_IMAGE,
    NO_WHITESPACE,
    Condition,
    OJSModel,
    PodSettings,
    SecretKeyRef,
    Timestamp,
)
from ojsctrl.api.markers import (
    CEL,
    Duration,
    GoDuration,
    Int32,
    Int64,
    IntOrPercent,
    K8s,
    NoCrdDefault,
    QuantityValue,
    SchemaExtra,
)

BackendType = Literal["redis", "postgres", "nats", "kafka", "sqs", "lite"]
BACKEND_TYPES: tuple[str, ...] = ("redis", "postgres", "nats", "kafka", "sqs", "lite")
ClusterPhase = Literal["Pending", "Running", "Scaling", "Degraded", "Error"]

DEFAULT_SERVER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
DEFAULT_CLUSTER_REPLICAS = 2
DEFAULT_MAX_UNAVAILABLE = 1
# At most this many queues appear in status and as metric label values (design.md §depth-and-load).
MAX_STATUS_QUEUES = 20

# backend.sqs (ojs-backend-sqs internal/server/config.go): the server's own defaults.
DEFAULT_DYNAMODB_TABLE = "ojs-jobs"
DEFAULT_SQS_QUEUE_PREFIX = "ojs"
AWS_REGION_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
# DynamoDB table names: 3-255 of letters, digits, '_', '-' and '.'.
DYNAMODB_TABLE_PATTERN = r"^[a-zA-Z0-9_.-]+$"
# SQS queue names allow letters, digits, '-' and '_' only; the prefix is part of every name.
SQS_PREFIX_PATTERN = r"^[a-zA-Z0-9_-]+$"
HTTP_URL_PATTERN = r"^https?://\S+$"


def _default_resources() -> dict[str, Any]:
    return {k: dict(v) for k, v in DEFAULT_SERVER_RESOURCES.items()}


class RedisStorage(OJSModel):
    """Persistent storage for the embedded Redis. When set, data lives on a PersistentVolumeClaim."""

    size: Annotated[
        int | str,
        QuantityValue(),
        Field(description="Requested size of the PersistentVolumeClaim, e.g. 1Gi."),
    ]
    storage_class_name: Annotated[
        str | None,
        K8s("PersistentVolumeClaimSpec.storageClassName"),
        Field(max_length=253, description="StorageClass of the claim; the cluster default when unset."),
    ] = None


class EmbeddedRedis(OJSModel):
    """Options of the Redis the operator deploys when backend.embedded is true."""

    image: Annotated[
        str,
        Field(min_length=1, max_length=1024, pattern=NO_WHITESPACE, description="Redis container image."),
    ] = DEFAULT_REDIS_IMAGE
    resources: Annotated[
        dict[str, Any] | None,
        K8s("Container.resources"),
        Field(description="Compute resources of the Redis container."),
    ] = None
    storage: RedisStorage | None = Field(
        default=None, description="Persistent storage; without it Redis keeps its data on an emptyDir."
    )


class StateStore(OJSModel):
    """Where a kafka server keeps job state: a Redis, passed to the server as REDIS_URL."""

    cel_rules: ClassVar[tuple[CEL, ...]] = (
        CEL(
            "(has(self.url) ? 1 : 0) + (has(self.urlSecretRef) ? 1 : 0)"
            " + ((has(self.embedded) && self.embedded) ? 1 : 0) == 1",
            "exactly one of url, urlSecretRef or embedded: true must be set",
        ),
    )

    url: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=4096,
            description=(
                "Redis URL (redis://...), passed to the server as REDIS_URL. Prefer urlSecretRef when it "
                "holds a password."
            ),
        ),
    ] = None
    url_secret_ref: SecretKeyRef | None = Field(default=None, description="Secret key holding the Redis URL.")
    embedded: bool = Field(
        default=False,
        description=(
            "Deploy a Redis next to the server (the same <name>-redis objects as an embedded redis backend; "
            "backend.redis sets its options) and use it as the state store."
        ),
    )


class SQSBackend(OJSModel):
    """Settings of an sqs backend, as the SQS server reads them (no URL: queues are found by prefix)."""

    region: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            pattern=AWS_REGION_PATTERN,
            description="AWS region of the queues and the DynamoDB table (AWS_REGION), e.g. eu-west-1.",
        ),
    ]
    dynamodb_table: Annotated[
        str,
        Field(
            min_length=3,
            max_length=255,
            pattern=DYNAMODB_TABLE_PATTERN,
            description=(
                "DynamoDB table holding job state (DYNAMODB_TABLE); the server creates or verifies it at "
                "start and exits when it cannot."
            ),
        ),
    ] = DEFAULT_DYNAMODB_TABLE
    queue_prefix: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=SQS_PREFIX_PATTERN,
            description="Prefix of the SQS queue names the server uses (SQS_QUEUE_PREFIX).",
        ),
    ] = DEFAULT_SQS_QUEUE_PREFIX
    fifo: bool = Field(default=False, description="Use FIFO queues (SQS_USE_FIFO).")
    endpoint: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=2048,
            pattern=HTTP_URL_PATTERN,
            description=(
                "Custom AWS endpoint (AWS_ENDPOINT_URL), e.g. LocalStack. When set, the server uses the "
                "static credentials test/test: for testing only."
            ),
        ),
    ] = None


class Backend(OJSModel):
    """Where the OJS server keeps its jobs."""

    cel_rules: ClassVar[tuple[CEL, ...]] = (
        CEL(
            "self.type == 'lite' || self.type == 'sqs' || (has(self.url) ? 1 : 0)"
            " + (has(self.urlSecretRef) ? 1 : 0) + ((has(self.embedded) && self.embedded) ? 1 : 0) == 1",
            "exactly one of url, urlSecretRef or embedded: true must be set",
        ),
        CEL(
            "self.type != 'lite' || (!has(self.url) && !has(self.urlSecretRef)"
            " && !(has(self.embedded) && self.embedded))",
            "a lite backend keeps its state in-process: url, urlSecretRef and embedded must not be set",
        ),
        CEL(
            "!has(self.embedded) || !self.embedded || self.type == 'redis'",
            "embedded is only available for type redis (kafka: stateStore.embedded); use url or urlSecretRef "
            "for other backends",
            field_path=".embedded",
        ),
        CEL(
            "self.type != 'sqs' || !has(self.url)",
            "an sqs backend is configured by backend.sqs (region, dynamodbTable, queuePrefix, fifo, "
            "endpoint), not by url",
            field_path=".url",
        ),
        CEL(
            "self.type != 'sqs' || !has(self.urlSecretRef)",
            "an sqs backend is configured by backend.sqs (region, dynamodbTable, queuePrefix, fifo, "
            "endpoint), not by urlSecretRef",
            field_path=".urlSecretRef",
        ),
        CEL(
            "self.type != 'sqs' || has(self.sqs)",
            "backend.sqs (at least its region) is required for type sqs",
            field_path=".sqs",
        ),
        CEL("!has(self.sqs) || self.type == 'sqs'", "backend.sqs is only for type sqs", field_path=".sqs"),
        CEL(
            "self.type != 'kafka' || has(self.stateStore)",
            "backend.stateStore is required for type kafka: the Kafka server keeps job state in Redis "
            "(REDIS_URL)",
            field_path=".stateStore",
        ),
        CEL(
            "!has(self.stateStore) || self.type == 'kafka'",
            "backend.stateStore is only for type kafka",
            field_path=".stateStore",
        ),
    )

    type: Annotated[
        BackendType,
        SchemaExtra.of({"maxLength": 16}),
        Field(
            description=(
                "Backend type: redis, postgres, nats, kafka, sqs or lite (in-process, single replica)."
            )
        ),
    ]
    url: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=4096,
            description=(
                "Backend connection URL, passed to the server as REDIS_URL, DATABASE_URL, NATS_URL or "
                "KAFKA_BROKERS (a comma-separated broker list). Not for sqs (see sqs) or lite. Prefer "
                "urlSecretRef when the URL holds credentials."
            ),
        ),
    ] = None
    url_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the backend connection URL."
    )
    embedded: bool = Field(
        default=False, description="Deploy a Redis next to the server and connect to it (type redis only)."
    )
    redis: EmbeddedRedis | None = Field(
        default=None,
        description="Options of the embedded Redis (embedded: true, or stateStore.embedded: true for kafka).",
    )
    state_store: StateStore | None = Field(
        default=None,
        description="The Redis a kafka server keeps job state in (REDIS_URL). Required for type kafka only.",
    )
    sqs: SQSBackend | None = Field(
        default=None,
        description=(
            "Settings of an sqs backend (required for type sqs). AWS credentials come from the pods' "
            "identity (serviceAccountName) or from env/envFrom."
        ),
    )


class Auth(OJSModel):
    """API authentication of the OJS server."""

    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding the API key. When unset, the operator generates the Secret <name>-api-key "
            "(key api-key) once and never rewrites it."
        ),
    )
    disabled: bool = Field(
        default=False,
        description=(
            "Run the server without authentication (OJS_ALLOW_INSECURE_NO_AUTH=true). Not for production."
        ),
    )


class ClusterAutoScaling(OJSModel):
    """Queue-depth based scaling of the OJS servers."""

    cel_rules: ClassVar[tuple[CEL, ...]] = (
        CEL(
            "!has(self.minReplicas) || !has(self.maxReplicas) || self.maxReplicas >= self.minReplicas",
            "maxReplicas must be greater than or equal to minReplicas",
            field_path=".maxReplicas",
        ),
    )

    enabled: bool = Field(default=False, description="Scale the servers with the total queue depth.")
    min_replicas: Annotated[Int32, Field(ge=1, description="Lower bound of the server replicas.")] = 1
    max_replicas: Annotated[Int32, Field(ge=1, description="Upper bound of the server replicas.")] = 10
    target_queue_depth: Annotated[
        Int64,
        Field(
            ge=1,
            description=(
                "Queued jobs per server replica: desired = ceil(total queue depth / targetQueueDepth)."
            ),
        ),
    ] = 100
    target_jobs_per_worker: Annotated[
        Int64 | None,
        Field(
            ge=1,
            description="Default targetJobsPerWorker for the cluster's OJSWorkers that do not set their own.",
        ),
    ] = None
    scale_up_cooldown: Annotated[
        Duration, Field(description="Minimum time between two scale-ups (Go duration, e.g. 60s).")
    ] = "60s"
    scale_down_cooldown: Annotated[
        Duration,
        Field(
            description="Stabilisation window for scale-down: the lower recommendation must hold this long."
        ),
    ] = "300s"


class Monitoring(OJSModel):
    """Prometheus and Grafana integration."""

    enabled: bool = Field(
        default=False,
        description="Add prometheus.io scrape annotations; gates serviceMonitor and grafanaDashboard.",
    )
    service_monitor: bool = Field(
        default=False, description="Create a ServiceMonitor (monitoring.coreos.com/v1) for the servers."
    )
    grafana_dashboard: bool = Field(
        default=False, description='Create a Grafana dashboard ConfigMap labelled grafana_dashboard: "1".'
    )
    interval: Annotated[
        str, GoDuration(minimum="1s"), Field(description="Scrape interval of the ServiceMonitor.")
    ] = "30s"
    labels: Annotated[
        dict[str, str] | None,
        K8s("ObjectMeta.labels"),
        Field(
            description="Extra labels on the ServiceMonitor (to match a Prometheus serviceMonitorSelector)."
        ),
    ] = None


class PodDisruptionBudgetSpec(OJSModel):
    """PodDisruptionBudget of the server pods."""

    cel_rules: ClassVar[tuple[CEL, ...]] = (
        CEL(
            "!(has(self.minAvailable) && has(self.maxUnavailable))",
            "set at most one of minAvailable and maxUnavailable",
        ),
    )

    enabled: Annotated[
        bool | None,
        Field(
            description=(
                "Create the PodDisruptionBudget. Default: on when min(replicas, autoScaling.minReplicas) > 1."
            )
        ),
    ] = None
    min_available: Annotated[
        int | str | None,
        IntOrPercent(),
        Field(description="Pods that must stay available (count or percentage). Excludes maxUnavailable."),
    ] = None
    max_unavailable: Annotated[
        int | str | None,
        IntOrPercent(),
        Field(
            description="Pods that may be unavailable (count or percentage). Default 1 when neither is set."
        ),
    ] = None

    def budget(self) -> tuple[Literal["minAvailable", "maxUnavailable"], int | str]:
        """The PDB field to set and its value: the one the user set, else maxUnavailable 1."""
        if self.min_available is not None:
            return "minAvailable", self.min_available
        if self.max_unavailable is not None:
            return "maxUnavailable", self.max_unavailable
        return "maxUnavailable", DEFAULT_MAX_UNAVAILABLE


class GRPC(OJSModel):
    """The servers' gRPC API (port 9090)."""

    enabled: bool = Field(
        default=False,
        description=(
            "Expose gRPC port 9090 on the server Service. OJS gRPC has no authentication: anyone who can "
            "reach the Service bypasses the API key."
        ),
    )


class OJSClusterSpec(PodSettings):
    """Desired state of an OJS server cluster."""

    cel_rules: ClassVar[tuple[CEL, ...]] = (
        CEL(
            "self.backend.type != 'lite' || !has(self.replicas) || self.replicas == 1",
            "a lite backend keeps its state in-process: replicas must be 1",
            field_path=".replicas",
        ),
        CEL(
            "self.backend.type != 'lite' || !has(self.autoScaling) || !has(self.autoScaling.enabled)"
            " || !self.autoScaling.enabled",
            "a lite backend keeps its state in-process: it cannot be autoscaled",
            field_path=".autoScaling.enabled",
        ),
    )

    backend: Backend = Field(description="Backend the servers store jobs in.")
    replicas: Annotated[
        Int32 | None,
        NoCrdDefault(),
        Field(
            ge=1,
            description=(
                "Number of server replicas (the scale subresource: `kubectl scale ojs NAME --replicas=N`). "
                "Default 2, or 1 for a lite backend (which must have exactly 1). With autoScaling enabled "
                "this is only the initial value."
            ),
        ),
    ] = None
    image: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=1024,
            pattern=NO_WHITESPACE,
            description=(
                "OJS server image. Default: the operator's --server-image template for this backend, else "
                "ghcr.io/openjobspec/ojs-backend-<type> at the release the operator pins."
            ),
        ),
    ] = None
    resources: Annotated[dict[str, Any], K8s("Container.resources")] = Field(
        default_factory=_default_resources,
        description=(
            "Compute resources of the server container. Default: requests 100m/128Mi, limits 1/512Mi."
        ),
    )
    auth: Auth = Field(default_factory=Auth, description="API authentication.")
    auto_scaling: ClusterAutoScaling = Field(
        default_factory=ClusterAutoScaling, description="Queue-depth based server autoscaling."
    )
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Metrics and dashboards.")
    pod_disruption_budget: PodDisruptionBudgetSpec = Field(
        default_factory=PodDisruptionBudgetSpec, description="PodDisruptionBudget of the server pods."
    )
    grpc: GRPC = Field(default_factory=GRPC, description="Exposure of the servers' gRPC port.")
    env: Annotated[
        list[dict[str, Any]] | None,
        K8s("Container.env"),
        Field(
            description=(
                "Extra environment variables of the server container (e.g. AWS credentials, OJS_* tuning); "
                "an entry replaces the operator's variable of the same name."
            )
        ),
    ] = None
    env_from: Annotated[
        list[dict[str, Any]] | None,
        K8s("Container.envFrom"),
        Field(description="Sources (ConfigMaps, Secrets) of extra environment variables of the server."),
    ] = None

    def effective_replicas(self) -> int:
        """Replicas with the backend-dependent default applied (lite: 1, otherwise 2)."""
        if self.replicas is not None:
            return self.replicas
        return 1 if self.backend.type == "lite" else DEFAULT_CLUSTER_REPLICAS

    def effective_image(self, server_image: str | None = None) -> str:
        """The server image: the spec's, else the --server-image template's for this backend, else the
        pinned default of this backend."""
        return self.image or default_server_image(self.backend.type, server_image)

    def embedded_redis(self) -> bool:
        """Whether the operator deploys a Redis: an embedded redis backend or kafka's embedded state store."""
        backend = self.backend
        if backend.type == "redis":
            return backend.embedded
        return backend.type == "kafka" and backend.state_store is not None and backend.state_store.embedded

    def pdb_enabled(self) -> bool:
        """Whether a PodDisruptionBudget is wanted (explicit setting, else min(replicas, autoscaling min) "
        "> 1)."""
        if self.pod_disruption_budget.enabled is not None:
            return self.pod_disruption_budget.enabled
        floor = self.effective_replicas()
        if self.auto_scaling.enabled:
            floor = min(floor, self.auto_scaling.min_replicas)
        return floor > 1


class QueueStatus(OJSModel):
    """Counts of one queue."""

    name: str = Field(description="Queue name.")
    available: Int64 = Field(description="Jobs waiting to be fetched.")
    active: Int64 = Field(description="Jobs being processed.")


class OJSClusterStatus(OJSModel):
    """Observed state of an OJS server cluster."""

    phase: ClusterPhase | None = Field(
        default=None, description="Summary phase: Pending, Running, Scaling, Degraded or Error."
    )
    replicas: Int32 | None = Field(default=None, description="Server pods.")
    ready_replicas: Int32 | None = Field(default=None, description="Ready server pods.")
    queue_depth: Int64 | None = Field(
        default=None, description="Jobs waiting in all queues (sum of available)."
    )
    active_jobs: Int64 | None = Field(default=None, description="Jobs being processed (sum of active).")
    queues: Annotated[
        list[QueueStatus] | None,
        SchemaExtra.of({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        Field(max_length=MAX_STATUS_QUEUES, description="Counts of the busiest queues (at most 20)."),
    ] = None
    endpoint: str | None = Field(default=None, description="In-cluster URL of the OJS API.")
    image: str | None = Field(default=None, description="Server image in use.")
    selector: str | None = Field(
        default=None, description="Label selector of the server pods, serialised (for the scale subresource)."
    )
    observed_generation: Int64 | None = Field(
        default=None, description="metadata.generation this status was computed from."
    )
    last_scale_time: Timestamp | None = Field(default=None, description="Last time the servers were scaled.")
    conditions: Annotated[
        list[Condition] | None,
        SchemaExtra.of({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
        Field(
            description=(
                "Ready, Available, Progressing, Degraded, BackendReady, QueueStatsAvailable, "
                "MonitoringReady and Autoscaling."
            )
        ),
    ] = None


class OJSCluster(OJSModel):
    """OJSCluster runs OJS job servers and, optionally, their embedded Redis backend."""

    api_version: str = Field(default=API_VERSION, description="API version of the object.")
    kind: str = Field(default="OJSCluster", description="Kind of the object.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: OJSClusterSpec = Field(description="Desired state of the OJS servers and their backend.")
    status: OJSClusterStatus | None = Field(
        default=None, description="Observed state, written by the operator."
    )
