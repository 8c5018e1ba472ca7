"""The validation rules of OJSCluster and OJSWorker, once, for the admission webhook and the reconcilers.

Both entry points take the raw object as the API server would hand it over (a JSON-like dict, defaults
possibly not yet applied) and never raise, whatever the input: wrong types become ``FieldError``s. Errors name
the field (``spec.backend.url``) and the rule; warnings are plain strings (admission warnings, design.md
§admission).

Field types and bounds are checked by validating ``spec`` against the pydantic models in strict mode (so the
CRD schema and Python agree by construction); the cross-field rules below mirror the CEL rules the models
carry, and add the checks CEL cannot express (label syntax, quantities, duplicate env names, warnings).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ojsctrl.api.backends import operator_env_names
from ojsctrl.api.cluster import (
    AWS_REGION_PATTERN,
    BACKEND_TYPES,
    DYNAMODB_TABLE_PATTERN,
    HTTP_URL_PATTERN,
    SQS_PREFIX_PATTERN,
    ClusterAutoScaling,
    OJSClusterSpec,
)
from ojsctrl.api.common import (
    DNS1035_LABEL,
    DNS1123_SUBDOMAIN,
    LIST_ITEM_PATTERN,
    NO_WHITESPACE,
    SECRET_KEY_PATTERN,
    SELECTOR_LABELS,
)
from ojsctrl.api.durations import parse_duration_ns
from ojsctrl.api.quantity import parse_quantity
from ojsctrl.api.worker import (
    CLUSTER_REF_MESSAGE,
    MAX_HPA_WINDOW,
    OPERATOR_METRICS,
    OJSWorkerSpec,
    WorkerAutoScaling,
)

# Kubernetes object names the operator derives child names from: `<cluster>-server` is a Service (DNS-1035
# label, at most 63 characters), and a worker's name is the value of its pods' app.kubernetes.io/instance
# label.
MAX_CLUSTER_NAME = 63 - len("-server")
MAX_WORKER_NAME = 63

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)
_DNS1035_LABEL = re.compile(DNS1035_LABEL)

_PATTERN_HELP = {
    DNS1123_SUBDOMAIN: "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.')",
    SECRET_KEY_PATTERN: "must consist of alphanumerics, '-', '_' or '.'",
    NO_WHITESPACE: "must not contain whitespace",
    LIST_ITEM_PATTERN: "must not contain commas or whitespace",
    AWS_REGION_PATTERN: "must be an AWS region name such as eu-west-1 (lowercase letters, digits and '-')",
    DYNAMODB_TABLE_PATTERN: "must consist of letters, digits, '_', '-' or '.' (a DynamoDB table name)",
    SQS_PREFIX_PATTERN: "must consist of letters, digits, '-' or '_' (it starts every SQS queue name)",
    HTTP_URL_PATTERN: "must be an http:// or https:// URL without whitespace",
}
# Rules only Python checks: the CRD's schema and CEL rules cover every other rule, so with the webhook off the
# API server rejects the same objects minus these (the reconcilers still report them as InvalidSpec). Anything
# that compares Python with the CRD must leave these out.
PYTHON_ONLY_RULES = frozenset(
    {
        "annotationKey",
        "envName",
        "labelKey",
        "labelValue",
        "nonNegativeQuantity",
        "requestsWithinLimits",
        "valueOrValueFrom",
    }
)
# pydantic error type -> (rule, message template); the rule names follow the OpenAPI keyword that the CRD uses
# for the same check, so an error reads the same from the webhook and from the API server.
_PYDANTIC_RULES: dict[str, tuple[str, str]] = {
    "missing": ("required", "is required"),
    "int_type": ("type", "must be an integer"),
    "int_from_float": ("type", "must be an integer"),
    "string_type": ("type", "must be a string"),
    "bool_type": ("type", "must be a boolean"),
    "list_type": ("type", "must be a list"),
    "dict_type": ("type", "must be an object"),
    "model_type": ("type", "must be an object"),
    "model_attributes_type": ("type", "must be an object"),
    "greater_than_equal": ("minimum", "must be greater than or equal to {ge}"),
    "less_than_equal": ("maximum", "must be less than or equal to {le}"),
    "string_too_short": ("minLength", "must be at least {min_length} characters long"),
    "string_too_long": ("maxLength", "must be at most {max_length} characters long"),
    "too_short": ("minItems", "must have at least {min_length} items"),
    "too_long": ("maxItems", "must have at most {max_length} items"),
    "literal_error": ("enum", "must be one of {expected}"),
}
# How deep the integral-float normalisation goes: deeper than any field of the models, shallow enough that
# pathological nesting cannot exhaust the stack.
_NORMALISE_DEPTH = 8

_T = TypeVar("_T")


@dataclass(frozen=True)
class FieldError:
    """One violated rule: the field's path (``spec.backend.url``), the rule's name and a readable message."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ValidationResult:
    """Errors deny the object; warnings are returned to the client and do not."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings do not count)."""
        return not self.errors

    def messages(self) -> list[str]:
        """The errors as ``path: message`` strings."""
        return [str(e) for e in self.errors]

    def error(self, path: str, rule: str, message: str) -> None:
        """Record an error, once per path and rule."""
        if not any(e.path == path and e.rule == rule for e in self.errors):
            self.errors.append(FieldError(path, rule, message))

    def warn(self, message: str) -> None:
        """Record a warning, once."""
        if message not in self.warnings:
            self.warnings.append(message)


def validate_cluster(obj: object) -> ValidationResult:
    """Validate an OJSCluster object (a dict as read from the API server or an admission request)."""
    result = ValidationResult()
    if not isinstance(obj, Mapping):
        result.error("", "type", "must be an object")
        return result
    _check_name(obj, result, dns1035=True, max_length=MAX_CLUSTER_NAME, why="the Service <name>-server")
    spec = _spec(obj, result)
    if spec is None:
        return result
    _check_types(spec, OJSClusterSpec, result)
    _check_cluster_rules(spec, result)
    _check_pod_settings(spec, result)
    _cluster_warnings(spec, result)
    return result


def validate_worker(
    obj: object,
    *,
    cluster_exists: bool | None = None,
    old: object = None,
) -> ValidationResult:
    """Validate an OJSWorker object.

    ``cluster_exists`` (when known) adds the clusterRef-not-found warning; ``old`` is the stored object on an
    update, for the immutability of clusterRef.
    """
    result = ValidationResult()
    if not isinstance(obj, Mapping):
        result.error("", "type", "must be an object")
        return result
    _check_name(obj, result, dns1035=False, max_length=MAX_WORKER_NAME, why="the pods' instance label")
    spec = _spec(obj, result)
    if spec is None:
        return result
    _check_types(spec, OJSWorkerSpec, result)
    _check_worker_rules(spec, result, old)
    _check_pod_settings(spec, result)
    _worker_warnings(spec, result, cluster_exists)
    return result


# --- structure ----------------------------------------------------------------------------------------------


def _spec(obj: Mapping[Any, Any], result: ValidationResult) -> Mapping[str, Any] | None:
    spec = obj.get("spec")
    if spec is None:
        result.error("spec", "required", "is required")
        return None
    if not isinstance(spec, Mapping):
        result.error("spec", "type", "must be an object")
        return None
    return spec


def _check_name(
    obj: Mapping[Any, Any], result: ValidationResult, *, dns1035: bool, max_length: int, why: str
) -> None:
    metadata = obj.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        result.error("metadata", "type", "must be an object")
        return
    name = metadata.get("name")
    if not isinstance(name, str):
        return
    if len(name) > max_length:
        result.error(
            "metadata.name", "name", f"must be at most {max_length} characters long ({why} derives from it)"
        )
    elif dns1035 and not _DNS1035_LABEL.fullmatch(name):
        result.error(
            "metadata.name",
            "name",
            f"must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter ({why})",
        )


def _check_types(spec: Mapping[str, Any], model: type[BaseModel], result: ValidationResult) -> None:
    try:
        model.model_validate(_normalise_numbers(spec, _NORMALISE_DEPTH), strict=True)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            rule, message = _describe(err)
            result.error(_format_loc("spec", model, err["loc"]), rule, message)


def _normalise_numbers(value: Any, depth: int) -> Any:
    # The API server drops nulls before validating, so a null is an absent field. A float where an
    # integer is expected (2.0) stays a float: the schema may let it through, but the CEL rules that read
    # the field fail on it, so Python rejects it too and the two agree.
    if depth <= 0:
        return value
    if isinstance(value, Mapping):
        return {k: _normalise_numbers(v, depth - 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normalise_numbers(v, depth - 1) for v in value]
    return value


def _describe(err: ErrorDetails) -> tuple[str, str]:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return "pattern", _PATTERN_HELP.get(pattern, f"must match {pattern}")
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "minLength", "must not be empty"
    if kind in _PYDANTIC_RULES:
        rule, template = _PYDANTIC_RULES[kind]
        try:
            return rule, template.format(**ctx)
        except (KeyError, IndexError, ValueError):
            return rule, err["msg"]
    # Custom errors raised by the markers (duration, intOrPercent, quantity) carry their own rule and message.
    return kind, err["msg"]


def _format_loc(prefix: str, model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a Kubernetes field path, using the model to tell fields from "
    "keys."""
    path = prefix
    current: Any = model
    for segment in loc:
        if segment == "[key]":
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(segment, str):
            path += f".{segment}"
            current = _field_annotation(current, segment)
        elif get_origin(current) is list:
            path += f"[{segment}]"
            args = get_args(current)
            current = args[0] if args else Any
        elif get_origin(current) is dict:
            path += f"[{segment}]"
            args = get_args(current)
            current = args[1] if len(args) == 2 else Any
        else:
            path += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
            current = Any
    return path


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _field_annotation(model: type[BaseModel], alias: str) -> Any:
    for name, info in model.model_fields.items():
        if alias in (info.alias, name):
            return info.annotation
    return Any


# --- typed access to raw dicts ------------------------------------------------------------------------------


def _mapping(parent: Any, key: str) -> Mapping[str, Any] | None:
    value = parent.get(key) if isinstance(parent, Mapping) else None
    return value if isinstance(value, Mapping) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(parent: Mapping[str, Any] | None, key: str, default: int | None) -> int | None:
    """The integer at ``key``, its default when absent, None when it has another type (reported elsewhere)."""
    value = parent.get(key) if parent is not None else None
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if _is_int(value) else None


def _str(parent: Mapping[str, Any] | None, key: str, default: str | None) -> str | None:
    value = parent.get(key) if parent is not None else None
    if value is None:
        return default
    return value if isinstance(value, str) else None


def _present(parent: Mapping[str, Any] | None, key: str) -> bool:
    # The API server prunes nulls before validating, so a null counts as absent (as `has()` sees it in CEL).
    return parent is not None and parent.get(key) is not None


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].default


# --- OJSCluster ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cluster:
    """What the cluster rules look at: the spec, its backend, and the backend type when it is a known one."""

    spec: Mapping[str, Any]
    backend: Mapping[str, Any] | None
    btype: str | None

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> _Cluster:
        backend = _mapping(spec, "backend")
        btype = _str(backend, "type", None)
        return cls(spec, backend, btype if btype in BACKEND_TYPES else None)


Rule = Callable[[_T], Iterable[FieldError]]
"""One named check (as cert-manager's policy checks): a FieldError per violation, none when it holds."""


def _apply(rules: Sequence[Rule[_T]], subject: _T, result: ValidationResult) -> None:
    """Run ``rules`` in order, recording every error they yield."""
    for rule in rules:
        _record(result, rule(subject))


def _record(result: ValidationResult, errors: Iterable[FieldError]) -> None:
    for e in errors:
        result.error(e.path, e.rule, e.message)


def _check_cluster_rules(spec: Mapping[str, Any], result: ValidationResult) -> None:
    _apply(CLUSTER_RULES, _Cluster.of(spec), result)


def _backend_rules(c: _Cluster) -> Iterator[FieldError]:
    """The cross-field rules of spec.backend (the CEL rules of ``Backend`` and ``StateStore``)."""
    if c.backend is None or c.btype is None:
        return
    for rule in BACKEND_RULES:
        yield from rule(_Backend(c.backend, c.btype))


_LITE_STATE = "a lite backend keeps its state in-process"


def _lite_single_replica(c: _Cluster) -> Iterator[FieldError]:
    replicas = _int(c.spec, "replicas", None)
    if c.btype == "lite" and replicas is not None and replicas != 1:
        yield FieldError("spec.replicas", "liteReplicas", f"{_LITE_STATE}: replicas must be 1")


def _lite_not_autoscaled(c: _Cluster) -> Iterator[FieldError]:
    auto = _mapping(c.spec, "autoScaling")
    if c.btype == "lite" and auto is not None and auto.get("enabled") is True:
        yield FieldError(
            "spec.autoScaling.enabled", "liteAutoScaling", f"{_LITE_STATE}: it cannot be autoscaled"
        )


def _cluster_replica_bounds(c: _Cluster) -> Iterator[FieldError]:
    auto = _mapping(c.spec, "autoScaling")
    if auto is not None:
        yield from _min_max_errors(
            auto,
            "spec.autoScaling",
            _default(ClusterAutoScaling, "min_replicas"),
            _default(ClusterAutoScaling, "max_replicas"),
        )


def _one_disruption_budget(c: _Cluster) -> Iterator[FieldError]:
    pdb = _mapping(c.spec, "podDisruptionBudget")
    if _present(pdb, "minAvailable") and _present(pdb, "maxUnavailable"):
        yield FieldError(
            "spec.podDisruptionBudget", "exclusive", "set at most one of minAvailable and maxUnavailable"
        )


def _monitoring_labels(c: _Cluster) -> Iterator[FieldError]:
    labels = _mapping(_mapping(c.spec, "monitoring"), "labels")
    if labels is not None:
        yield from _label_errors("spec.monitoring.labels", labels)


def _redis_resources(c: _Cluster) -> Iterator[FieldError]:
    redis = _mapping(c.backend, "redis")
    yield from _resource_errors("spec.backend.redis.resources", _mapping(redis, "resources"))


def _cluster_env(c: _Cluster) -> Iterator[FieldError]:
    env = c.spec.get("env")
    if isinstance(env, list):
        yield from _env_errors(env)


# --- spec.backend -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Backend:
    """spec.backend of a known type."""

    backend: Mapping[str, Any]
    btype: str

    @property
    def sources(self) -> list[str]:
        """Which of url, urlSecretRef and embedded: true are set."""
        return _sources(self.backend)


def _sources(obj: Mapping[str, Any]) -> list[str]:
    present = (
        ("url", _present(obj, "url")),
        ("urlSecretRef", _present(obj, "urlSecretRef")),
        ("embedded", obj.get("embedded") is True),
    )
    return [name for name, is_set in present if is_set]


_SQS_FIELDS = "backend.sqs (region, dynamodbTable, queuePrefix, fifo, endpoint)"


def _lite_sets_no_source(b: _Backend) -> Iterator[FieldError]:
    if b.btype == "lite":
        for name in b.sources:
            yield FieldError(
                f"spec.backend.{name}",
                "liteBackend",
                f"{_LITE_STATE}: url, urlSecretRef and embedded must not be set",
            )


def _sqs_sets_no_url(b: _Backend) -> Iterator[FieldError]:
    if b.btype == "sqs":
        for name in ("url", "urlSecretRef"):
            if _present(b.backend, name):
                yield FieldError(
                    f"spec.backend.{name}",
                    "sqsSettings",
                    f"an sqs backend is configured by {_SQS_FIELDS}, not by {name}",
                )


def _exactly_one_source(b: _Backend) -> Iterator[FieldError]:
    chosen = b.sources
    if b.btype not in ("lite", "sqs") and len(chosen) != 1:
        found = " and ".join(chosen) if chosen else "none"
        yield FieldError(
            "spec.backend",
            "exactlyOne",
            f"exactly one of url, urlSecretRef or embedded: true must be set for type {b.btype} (found "
            f"{found})",
        )


def _embedded_redis_only(b: _Backend) -> Iterator[FieldError]:
    if b.backend.get("embedded") is True and b.btype != "redis":
        hint = (
            "use stateStore.embedded for kafka's state store"
            if b.btype == "kafka"
            else "use url or urlSecretRef"
        )
        yield FieldError(
            "spec.backend.embedded",
            "embeddedRedisOnly",
            f"embedded is only available for type redis, not {b.btype}; {hint}",
        )


def _sqs_block_required(b: _Backend) -> Iterator[FieldError]:
    if b.btype == "sqs" and not _present(b.backend, "sqs"):
        yield FieldError(
            "spec.backend.sqs", "sqsRequired", "backend.sqs (at least its region) is required for type sqs"
        )


def _sqs_block_only_for_sqs(b: _Backend) -> Iterator[FieldError]:
    if b.btype != "sqs" and _present(b.backend, "sqs"):
        yield FieldError("spec.backend.sqs", "sqsOnly", f"backend.sqs is only for type sqs, not {b.btype}")


def _state_store_required_for_kafka(b: _Backend) -> Iterator[FieldError]:
    if b.btype == "kafka" and b.backend.get("stateStore") is None:
        yield FieldError(
            "spec.backend.stateStore",
            "stateStoreRequired",
            "backend.stateStore is required for type kafka: the Kafka server keeps job state in Redis "
            "(REDIS_URL); set url, urlSecretRef or embedded: true",
        )


def _state_store_only_for_kafka(b: _Backend) -> Iterator[FieldError]:
    if b.btype != "kafka" and b.backend.get("stateStore") is not None:
        yield FieldError(
            "spec.backend.stateStore",
            "stateStoreOnly",
            f"backend.stateStore is only for type kafka, not {b.btype}",
        )


def _state_store_exactly_one_source(b: _Backend) -> Iterator[FieldError]:
    store = b.backend.get("stateStore")
    if isinstance(store, Mapping):
        found = _sources(store)
        if len(found) != 1:
            yield FieldError(
                "spec.backend.stateStore",
                "exactlyOne",
                "exactly one of url, urlSecretRef or embedded: true must be set (found "
                f"{' and '.join(found) if found else 'none'})",
            )


BACKEND_RULES: tuple[Rule[_Backend], ...] = (
    _lite_sets_no_source,
    _sqs_sets_no_url,
    _exactly_one_source,
    _embedded_redis_only,
    _sqs_block_required,
    _sqs_block_only_for_sqs,
    _state_store_required_for_kafka,
    _state_store_only_for_kafka,
    _state_store_exactly_one_source,
)
"""The rules of spec.backend, in the order their errors are reported."""

CLUSTER_RULES: tuple[Rule[_Cluster], ...] = (
    _backend_rules,
    _lite_single_replica,
    _lite_not_autoscaled,
    _cluster_replica_bounds,
    _one_disruption_budget,
    _monitoring_labels,
    _redis_resources,
    _cluster_env,
)
"""The cross-field rules of an OJSCluster spec, in the order their errors are reported."""


def _cluster_warnings(spec: Mapping[str, Any], result: ValidationResult) -> None:
    image = _str(spec, "image", None)
    if image is not None:
        _warn_latest("spec.image", image, result)
    resources = spec.get("resources")
    if isinstance(resources, Mapping) and not _has_limits(resources):
        result.warn("spec.resources sets no limits: set resource limits on the OJS server pods")
    auth = _mapping(spec, "auth")
    if auth is not None and auth.get("disabled") is True:
        result.warn("spec.auth.disabled is true: the OJS API accepts requests without authentication")
        if _present(auth, "apiKeySecretRef"):
            result.warn("spec.auth.apiKeySecretRef is ignored while spec.auth.disabled is true")
    backend = _mapping(spec, "backend")
    url = _str(backend, "url", None)
    if url is not None and _has_password(url):
        result.warn("spec.backend.url contains credentials: put the URL in a Secret and use urlSecretRef")
    store = _mapping(backend, "stateStore")
    store_url = _str(store, "url", None)
    if store_url is not None and _has_password(store_url):
        result.warn(
            "spec.backend.stateStore.url contains credentials: put the URL in a Secret and use urlSecretRef"
        )
    embedded_redis = backend is not None and (
        backend.get("embedded") is True or (store is not None and store.get("embedded") is True)
    )
    if backend is not None and _present(backend, "redis") and not embedded_redis:
        result.warn(
            "spec.backend.redis has no effect unless spec.backend.embedded (or, for kafka, "
            "spec.backend.stateStore.embedded) is true"
        )
    sqs = _mapping(backend, "sqs")
    if _present(sqs, "endpoint"):
        result.warn(
            "spec.backend.sqs.endpoint is set: the SQS server then ignores the AWS credential chain and "
            "uses the static credentials test/test (for LocalStack and tests only)"
        )
    grpc = _mapping(spec, "grpc")
    if grpc is not None and grpc.get("enabled") is True:
        result.warn(
            "spec.grpc.enabled is true: OJS gRPC (port 9090) has no authentication; anyone who can reach "
            "the Service bypasses the API key"
        )
    _warn_env_overrides(spec, _str(backend, "type", None), result)
    monitoring = _mapping(spec, "monitoring")
    if monitoring is not None and monitoring.get("enabled") is not True:
        for key in ("serviceMonitor", "grafanaDashboard"):
            if monitoring.get(key) is True:
                result.warn(f"spec.monitoring.{key} has no effect unless spec.monitoring.enabled is true")


def _warn_env_overrides(spec: Mapping[str, Any], btype: str | None, result: ValidationResult) -> None:
    env = spec.get("env")
    if not isinstance(env, list) or btype not in BACKEND_TYPES:
        return
    managed = operator_env_names(btype)
    for i, item in enumerate(env):
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in managed:
            result.warn(
                f"spec.env[{i}] replaces the operator-managed variable {name} of the {btype} server: the "
                "operator's value is not used"
            )


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


# --- OJSWorker ----------------------------------------------------------------------------------------------


def is_cluster_ref(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name an OJSCluster of the worker's namespace (a DNS-1123 subdomain of at most 253
    characters); a ``namespace/name`` reference cannot."""
    return (
        isinstance(value, str) and 0 < len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None
    )


def _check_worker_rules(spec: Mapping[str, Any], result: ValidationResult, old: object) -> None:
    ref = spec.get("clusterRef")
    if isinstance(ref, str) and ref and not is_cluster_ref(ref):
        # The CRD's CEL rule on clusterRef says the same: the API server refuses it without the webhook too.
        result.error("spec.clusterRef", "clusterRef", CLUSTER_REF_MESSAGE)
    for key in ("jobTypes", "queues"):
        items = spec.get(key)
        if isinstance(items, list):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if isinstance(item, str):
                    if item in seen:
                        result.error(f"spec.{key}[{i}]", "unique", f"duplicate value {item!r}")
                    seen.add(item)

    auto = _mapping(spec, "autoScaling")
    if auto is not None:
        min_default = _default(WorkerAutoScaling, "min_replicas")
        _record(
            result,
            _min_max_errors(
                auto, "spec.autoScaling", min_default, _default(WorkerAutoScaling, "max_replicas")
            ),
        )
        min_r = _int(auto, "minReplicas", min_default)
        metric = _str(auto, "metric", _default(WorkerAutoScaling, "metric"))
        if min_r == 0 and metric is not None and metric not in OPERATOR_METRICS:
            result.error(
                "spec.autoScaling.minReplicas",
                "scaleToZero",
                "minReplicas 0 (scale to zero) needs metric queueDepth or waitTime: an HPA cannot scale to "
                "zero",
            )
        delay = _str(auto, "scaleDownDelay", _default(WorkerAutoScaling, "scale_down_delay"))
        if metric == "cpu" and delay is not None and _duration_ns(delay) > parse_duration_ns(MAX_HPA_WINDOW):
            result.error(
                "spec.autoScaling.scaleDownDelay",
                "hpaWindow",
                "with metric cpu, scaleDownDelay is the HPA's scale-down stabilisation window, which is at "
                "most 1h",
            )

    if isinstance(old, Mapping):
        old_ref = _str(_mapping(old, "spec"), "clusterRef", None)
        new_ref = _str(spec, "clusterRef", None)
        if old_ref is not None and new_ref is not None and old_ref != new_ref:
            result.error("spec.clusterRef", "immutable", "clusterRef is immutable")

    env = spec.get("env")
    if isinstance(env, list):
        _record(result, _env_errors(env))


def _env_errors(env: list[Any]) -> Iterator[FieldError]:
    seen: set[str] = set()
    for i, item in enumerate(env):
        if not isinstance(item, Mapping):
            continue  # reported by the type check
        path = f"spec.env[{i}]"
        name = item.get("name")
        if not isinstance(name, str) or not name:
            yield FieldError(f"{path}.name", "required", "is required")
        elif "=" in name:
            yield FieldError(f"{path}.name", "envName", "must not contain '='")
        elif name in seen:
            yield FieldError(f"{path}.name", "unique", f"duplicate environment variable {name!r}")
        else:
            seen.add(name)
        value = item.get("value")
        if value is not None and not isinstance(value, str):
            yield FieldError(f"{path}.value", "type", "must be a string")
        source = item.get("valueFrom")
        if source is not None and not isinstance(source, Mapping):
            yield FieldError(f"{path}.valueFrom", "type", "must be an object")
        if value and source is not None:
            yield FieldError(
                f"{path}.valueFrom", "valueOrValueFrom", "may not be set when value is not empty"
            )


def _worker_warnings(spec: Mapping[str, Any], result: ValidationResult, cluster_exists: bool | None) -> None:
    ref = _str(spec, "clusterRef", None)
    if cluster_exists is False and ref:
        result.warn(
            f"spec.clusterRef: OJSCluster {ref!r} not found in this namespace; the worker stays in phase "
            "Error "
            "until it exists"
        )
    image = _str(spec, "image", None)
    if image is not None:
        _warn_latest("spec.image", image, result)
    resources = spec.get("resources")
    if resources is None or (isinstance(resources, Mapping) and not _has_limits(resources)):
        result.warn("spec.resources sets no limits: set resource limits on the worker pods")
    auto = _mapping(spec, "autoScaling")
    if auto is not None and auto.get("enabled") is True and auto.get("metric") == "cpu":
        requests = _mapping(resources, "requests")
        if requests is None or requests.get("cpu") is None:
            result.warn(
                "spec.autoScaling.metric is cpu but spec.resources.requests.cpu is not set: the HPA cannot "
                "compute utilisation"
            )
        shutdown = _mapping(spec, "gracefulShutdown")
        if shutdown is not None and shutdown.get("drainBeforeShutdown") is True:
            result.warn(
                "spec.gracefulShutdown.drainBeforeShutdown has no effect with metric cpu (the HPA scales "
                "down)"
            )


# --- shared rules -------------------------------------------------------------------------------------------


def _min_max_errors(
    auto: Mapping[str, Any], path: str, min_default: int, max_default: int
) -> Iterator[FieldError]:
    min_r = _int(auto, "minReplicas", min_default)
    max_r = _int(auto, "maxReplicas", max_default)
    if min_r is not None and max_r is not None and max_r < min_r:
        yield FieldError(
            f"{path}.maxReplicas",
            "maxGteMin",
            f"maxReplicas ({max_r}) must be greater than or equal to minReplicas ({min_r})",
        )


def _duration_ns(value: str) -> int:
    try:
        return parse_duration_ns(value)
    except ValueError:
        return -1  # invalid durations are reported by the type check


def _check_pod_settings(spec: Mapping[str, Any], result: ValidationResult) -> None:
    labels = _mapping(spec, "podLabels")
    if labels is not None:
        for key in SELECTOR_LABELS:
            if key in labels:
                result.error(
                    f"spec.podLabels[{key}]",
                    "reservedLabel",
                    "the selector labels app.kubernetes.io/name, instance and component are set by the "
                    "operator",
                )
        _record(result, _label_errors("spec.podLabels", labels))
    annotations = _mapping(spec, "podAnnotations")
    if annotations is not None:
        for key in annotations:
            if isinstance(key, str) and not _is_qualified_name(key):
                result.error(f"spec.podAnnotations[{key}]", "annotationKey", _QUALIFIED_NAME_HELP)
    selector = _mapping(spec, "nodeSelector")
    if selector is not None:
        _record(result, _label_errors("spec.nodeSelector", selector))

    security = _mapping(spec, "securityContext")
    if security is not None:
        for key in ("runAsNonRoot", "readOnlyRootFilesystem"):
            if key in security and security[key] is not None and not isinstance(security[key], bool):
                result.error(f"spec.securityContext.{key}", "type", "must be a boolean")
        for key in ("runAsUser", "runAsGroup", "fsGroup"):
            value = security.get(key)
            if value is None:
                continue
            if not _is_int(value):
                result.error(f"spec.securityContext.{key}", "type", "must be an integer")
            elif not 0 <= value < 2**63:
                result.error(f"spec.securityContext.{key}", "minimum", "must be greater than or equal to 0")
        if security.get("runAsNonRoot") is True and _int(security, "runAsUser", None) == 0:
            result.error(
                "spec.securityContext.runAsUser",
                "runAsNonRoot",
                "runAsNonRoot: true contradicts runAsUser: 0",
            )
    resources = spec.get("resources")
    if isinstance(resources, Mapping):
        _record(result, _resource_errors("spec.resources", resources))


_QUALIFIED_NAME_HELP = (
    "must be a qualified name: an optional DNS subdomain prefix and '/', then at most 63 alphanumerics, "
    "'-', '_' "
    "or '.', starting and ending with an alphanumeric"
)


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


def _label_errors(path: str, labels: Mapping[Any, Any]) -> Iterator[FieldError]:
    for key, value in labels.items():
        if not isinstance(key, str):
            continue
        if not _is_qualified_name(key):
            yield FieldError(f"{path}[{key}]", "labelKey", _QUALIFIED_NAME_HELP)
        if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
            yield FieldError(
                f"{path}[{key}]",
                "labelValue",
                "must be at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
            )


def _resource_errors(path: str, resources: Mapping[str, Any] | None) -> Iterator[FieldError]:
    if resources is None:
        return
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("requests", "limits"):
        values = resources.get(part)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            yield FieldError(f"{path}.{part}", "type", "must be an object")
            continue
        parsed[part] = {}
        for name, raw in values.items():
            try:
                quantity = parse_quantity(raw)
            except ValueError as exc:
                yield FieldError(f"{path}.{part}[{name}]", "quantity", str(exc))
                continue
            if quantity < 0:
                yield FieldError(f"{path}.{part}[{name}]", "nonNegativeQuantity", "must not be negative")
                continue
            parsed[part][str(name)] = quantity
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and request > limit:
            yield FieldError(
                f"{path}.requests[{name}]",
                "requestsWithinLimits",
                f"must be less than or equal to the {name} limit",
            )


def _has_limits(resources: Mapping[str, Any]) -> bool:
    limits = resources.get("limits")
    return isinstance(limits, Mapping) and len(limits) > 0


def _warn_latest(path: str, image: str, result: ValidationResult) -> None:
    # A digest pins the image whatever tag is written next to it.
    if "@" in image:
        return
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        result.warn(
            f"{path} {image!r} has no tag (implies latest): pin a version so rollouts are reproducible"
        )
    elif last.rsplit(":", 1)[1] == "latest":
        result.warn(f"{path} {image!r} uses the tag latest: pin a version so rollouts are reproducible")


# --- update warnings ----------------------------------------------------------------------------------------


def _embedded_redis(spec: Mapping[str, Any] | None) -> bool:
    backend = _mapping(spec, "backend")
    if backend is None:
        return False
    btype = _str(backend, "type", None)
    if btype == "redis":
        return backend.get("embedded") is True
    store = _mapping(backend, "stateStore")
    return btype == "kafka" and store is not None and store.get("embedded") is True


def _redis_storage(spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return _mapping(_mapping(_mapping(spec, "backend"), "redis"), "storage")


def cluster_update_warnings(new: object, old: object) -> list[str]:
    """Admission warnings for an OJSCluster update that gives up the embedded Redis or its storage
    (design.md §storage): what is kept, what goes, and how to delete what is kept."""
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return []
    new_spec, old_spec = _mapping(new, "spec"), _mapping(old, "spec")
    name = _str(_mapping(new, "metadata"), "name", None) or "<name>"
    claim = f"{name}-redis"
    out: list[str] = []
    old_storage, new_storage = _redis_storage(old_spec), _redis_storage(new_spec)
    # Admission warnings are cut at 256 characters: each fact gets its own.
    if _embedded_redis(old_spec) and not _embedded_redis(new_spec):
        if old_storage is not None:
            out.append(
                "spec.backend: the embedded Redis is turned off: "
                f"Deployment and Service {claim} are deleted; "
                f"PersistentVolumeClaim {claim} (the data) and Secret {claim} (its password) are kept"
            )
            delete = f"kubectl delete pvc,secret {claim}"
        else:
            out.append(
                "spec.backend: the embedded Redis is turned off; it has no storage, so its data lives only "
                f"in its pod: Deployment, Service and Secret {claim} are kept running"
            )
            delete = f"kubectl delete deployment,service,secret {claim}"
        out.append(f"kept objects are no longer deleted with the cluster; when done with them: {delete}")
    elif _embedded_redis(new_spec) and old_storage is not None and new_storage is None:
        out.append(
            f"spec.backend.redis.storage is removed: PersistentVolumeClaim {claim} is kept with its data "
            "(no longer deleted with the cluster) and Redis restarts empty"
        )
        out.append(
            f"set the same storage again to use PersistentVolumeClaim {claim} again, or delete it: "
            f"kubectl delete pvc {claim}"
        )
    elif _embedded_redis(new_spec) and old_storage is not None and new_storage is not None:
        old_class, new_class = old_storage.get("storageClassName"), new_storage.get("storageClassName")
        if old_class and new_class != old_class:
            out.append(
                f"spec.backend.redis.storage.storageClassName: the claim {claim} keeps class {old_class!r}: "
                "a claim's storage class cannot change; the cluster reports StorageChangeRefused"
            )
        try:
            old_size = parse_quantity(old_storage.get("size"))
            new_size = parse_quantity(new_storage.get("size"))
        except ValueError:
            return out
        if new_size < old_size:
            out.append(
                f"spec.backend.redis.storage.size: the claim {claim} cannot shrink below "
                f"{old_storage.get('size')}; the cluster reports StorageChangeRefused"
            )
        elif new_size > old_size:
            out.append(
                f"spec.backend.redis.storage.size: the claim {claim} grows only if it is bound and its "
                "StorageClass allows volume expansion; otherwise the cluster reports StorageChangeRefused"
            )
    return out
