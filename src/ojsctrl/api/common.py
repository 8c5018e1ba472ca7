"""Constants and models shared by OJSCluster and OJSWorker."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from ojsctrl.api.markers import CEL, Int64, K8s, K8sObject

GROUP = "ojs.openjobspec.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Server images are per backend (ojsctrl.api.backends); the OJSCluster model leaves `image` unset so that the
# operator, not the CRD, decides (an operator upgrade then upgrades every cluster that did not pin an image).
DEFAULT_REDIS_IMAGE = "redis:7-alpine"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
# Selector labels (design.md §labels): a user's podLabels must not change them, or the Deployment would stop
# selecting its own pods.
SELECTOR_LABELS = (LABEL_NAME, LABEL_INSTANCE, LABEL_COMPONENT)

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern for Secret data keys, not a secret
NO_WHITESPACE = r"^\S+$"
# Queues and job types travel to workers as comma-separated env values (OJS_QUEUES, OJS_JOB_TYPES).
LIST_ITEM_PATTERN = r"^[^,\s]+$"


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prune_nulls(value: Any, depth: int = 64) -> Any:
    """A copy of ``value`` without null map entries, as the API server stores a custom resource.

    The API server drops nulls of non-nullable fields before it validates, so a null means "absent" for every
    field here. Below ``depth`` levels the value is returned unchanged (bounded recursion on arbitrary input).
    """
    if depth <= 0:
        return value
    t = type(value)
    # Exact types first: every object read from the API server is plain dicts, lists and scalars, and
    # an ABC check (Mapping) costs several times a type comparison on every node of every parse.
    if t is str or t is int or t is bool or t is float:
        return value
    if t is dict or isinstance(value, Mapping):
        return {k: prune_nulls(v, depth - 1) for k, v in value.items() if v is not None}
    if t is list or isinstance(value, list):
        return [prune_nulls(v, depth - 1) for v in value]
    return value


# metav1.Time: RFC 3339 in UTC with second precision, as the API server itself writes it.
Timestamp = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str, when_used="json")]


class OJSModel(BaseModel):
    """Base of every model: camelCase aliases, population by name, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        validate_default=False,
    )

    # Set on a class to emit these CEL rules on the object node the class produces.
    cel_rules: ClassVar[tuple[CEL, ...]] = ()
    # Set on a class to emit an embedded Kubernetes definition instead of the class's own fields.
    k8s_definition: ClassVar[str | None] = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise as the API server stores it: camelCase keys, no null fields, JSON types."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def from_dict(cls, data: Any, *, status: bool = True) -> Self:
        """Parse an object as read from the API server (lax: the server has already validated it).

        ``status=False`` leaves the status out (the model's status is then empty): what a reconciler
        reads of its own objects is their metadata and spec, and the status was half the parse."""
        if not status and isinstance(data, dict) and "status" in data:
            data = {k: v for k, v in data.items() if k != "status"}
        return cls.model_validate(prune_nulls(data))


class SecretKeyRef(OJSModel):
    """A key in a Secret in the resource's own namespace."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the Secret."),
    ]
    key: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN, description="Key within the Secret."),
    ]


class Condition(OJSModel):
    """A metav1.Condition: one aspect of the resource's current state."""

    k8s_definition: ClassVar[str | None] = "Condition"

    type: str = Field(description="Type of condition in CamelCase.")
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(
        description="Programmatic identifier of the reason for the last transition (CamelCase)."
    )
    message: str = Field(default="", description="Human-readable message about the transition.")
    last_transition_time: Timestamp = Field(description="Last time the status changed.")
    observed_generation: Int64 | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


SECURITY_CONTEXT_FIELDS = (
    ("fsGroup", "PodSecurityContext.fsGroup"),
    ("readOnlyRootFilesystem", "SecurityContext.readOnlyRootFilesystem"),
    ("runAsGroup", "PodSecurityContext.runAsGroup"),
    ("runAsNonRoot", "PodSecurityContext.runAsNonRoot"),
    ("runAsUser", "PodSecurityContext.runAsUser"),
)
_SELECTOR_LABEL_RULE = " && ".join(f"!('{key}' in self)" for key in SELECTOR_LABELS)


class PodSettings(OJSModel):
    """Pod-level settings shared by OJS server and worker pods (Kubernetes types, kept whole)."""

    security_context: Annotated[
        dict[str, Any] | None,
        K8sObject(SECURITY_CONTEXT_FIELDS, minimum_zero=("fsGroup", "runAsGroup", "runAsUser")),
        CEL(
            "!(has(self.runAsNonRoot) && self.runAsNonRoot && has(self.runAsUser) && self.runAsUser == 0)",
            "runAsNonRoot: true contradicts runAsUser: 0",
            field_path=".runAsUser",
        ),
        Field(
            description=(
                "Security settings for the pods, merged field by field over the operator's secure defaults "
                "(runAsNonRoot, uid/gid 65534, read-only root filesystem, no privilege escalation, all "
                "capabilities dropped, RuntimeDefault seccomp)."
            )
        ),
    ] = None
    topology_spread_constraints: Annotated[
        list[dict[str, Any]] | None,
        K8s("PodSpec.topologySpreadConstraints"),
        Field(
            description=(
                "Topology spread constraints for the pods. When unset and replicas > 1, the operator spreads "
                "OJS server pods across zones."
            )
        ),
    ] = None
    service_account_name: Annotated[
        str | None,
        K8s("PodSpec.serviceAccountName"),
        Field(
            max_length=253,
            pattern=DNS1123_SUBDOMAIN,
            description=(
                "ServiceAccount the pods run as. When unset, no service-account token is mounted into the "
                "pods."
            ),
        ),
    ] = None
    node_selector: Annotated[
        dict[str, str] | None,
        K8s("PodSpec.nodeSelector"),
        Field(description="Node labels the pods must be scheduled on."),
    ] = None
    tolerations: Annotated[
        list[dict[str, Any]] | None,
        K8s("PodSpec.tolerations"),
        Field(description="Tolerations of the pods."),
    ] = None
    affinity: Annotated[
        dict[str, Any] | None,
        K8s("PodSpec.affinity"),
        Field(
            description=(
                "Scheduling constraints of the pods. When unset and replicas > 1, the operator gives OJS "
                "server "
                "pods a preferred host anti-affinity."
            )
        ),
    ] = None
    image_pull_secrets: Annotated[
        list[dict[str, Any]] | None,
        K8s("PodSpec.imagePullSecrets"),
        Field(description="Secrets in the same namespace used to pull the images."),
    ] = None
    priority_class_name: Annotated[
        str | None,
        K8s("PodSpec.priorityClassName"),
        Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="PriorityClass of the pods."),
    ] = None
    pod_annotations: Annotated[
        dict[str, str] | None,
        K8s("ObjectMeta.annotations"),
        Field(description="Extra annotations on the pods (the operator's own annotations win on conflict)."),
    ] = None
    pod_labels: Annotated[
        dict[str, str] | None,
        K8s("ObjectMeta.labels"),
        CEL(
            _SELECTOR_LABEL_RULE,
            "podLabels must not set the selector labels app.kubernetes.io/name, instance or component",
        ),
        Field(
            description=(
                "Extra labels on the pods. The selector labels app.kubernetes.io/name, instance and "
                "component are "
                "reserved."
            )
        ),
    ] = None
