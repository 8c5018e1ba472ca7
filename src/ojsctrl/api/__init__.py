"""The OJS API (group ojs.openjobspec.dev, version v1alpha1): models, defaults, validation rules, CRD
generation.

- ``cluster`` / ``worker``: pydantic models of OJSCluster and OJSWorker (spec and status).
- ``validation``: the rules shared by the admission webhook and the reconcilers.
- ``crdgen``: the CRDs in ``manifests/crds`` are generated from the models (``python -m ojsctrl.api.crdgen``).

- ``backends``: what each backend's server reads and serves (env names, pinned images, public paths).

``OJSClusterSpec.image`` is deliberately optional: its default is the operator's ``--server-image`` template
or the backend's pinned image, applied by the reconciler (``OJSClusterSpec.effective_image``), not a CRD
default.
"""

from ojsctrl.api.cluster import (
    DEFAULT_SERVER_RESOURCES,
    Auth,
    Backend,
    ClusterAutoScaling,
    EmbeddedRedis,
    Monitoring,
    OJSCluster,
    OJSClusterSpec,
    OJSClusterStatus,
    PodDisruptionBudgetSpec,
    QueueStatus,
    RedisStorage,
)
from ojsctrl.api.common import (
    API_VERSION,
    DEFAULT_REDIS_IMAGE,
    GROUP,
    VERSION,
    Condition,
    OJSModel,
    PodSettings,
    SecretKeyRef,
)
from ojsctrl.api.durations import duration_seconds, parse_duration
from ojsctrl.api.validation import FieldError, ValidationResult, validate_cluster, validate_worker
from ojsctrl.api.worker import (
    DEFAULT_TARGET_JOBS_PER_WORKER,
    GracefulShutdown,
    OJSWorker,
    OJSWorkerSpec,
    OJSWorkerStatus,
    WorkerAutoScaling,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_REDIS_IMAGE",
    "DEFAULT_SERVER_RESOURCES",
    "DEFAULT_TARGET_JOBS_PER_WORKER",
    "GROUP",
    "VERSION",
    "Auth",
    "Backend",
    "ClusterAutoScaling",
    "Condition",
    "EmbeddedRedis",
    "FieldError",
    "GracefulShutdown",
    "Monitoring",
    "OJSCluster",
    "OJSClusterSpec",
    "OJSClusterStatus",
    "OJSModel",
    "OJSWorker",
    "OJSWorkerSpec",
    "OJSWorkerStatus",
    "PodDisruptionBudgetSpec",
    "PodSettings",
    "QueueStatus",
    "RedisStorage",
    "SecretKeyRef",
    "ValidationResult",
    "WorkerAutoScaling",
    "duration_seconds",
    "parse_duration",
    "validate_cluster",
    "validate_worker",
]
