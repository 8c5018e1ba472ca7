"""Validating admission handlers for OJSCluster and OJSWorker.

Create and update run the Python rules of ``ojsctrl.api.validation``; delete (and connect) is always
allowed. A denial is a 422 Invalid whose message names every field and rule (``spec.env[1].name: duplicate
environment variable 'A' (rule unique)``) and whose ``details.causes`` carry the same per field, so clients
see what they would for a built-in validation error. Warnings (clusterRef not found, image tag latest, no
resource limits, auth disabled, ...) are returned as admission warnings.

An update that leaves ``spec`` unchanged is admitted even when the stored object breaks a rule (it was
created while the webhook was off, or before a rule existed): blocking it would stop label, annotation and
finalizer changes by other tools; the problem is returned as a warning instead, and the reconcilers report
it as InvalidSpec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import structlog

from ojsctrl.api.validation import (
    FieldError,
    ValidationResult,
    cluster_update_warnings,
    is_cluster_ref,
    validate_cluster,
    validate_worker,
)
from ojsctrl.runtime.client import PARTIAL_METADATA, Client, NotFoundError, Resource
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.webhook import AdmissionResponse
from ojsctrl.webhooks import GROUP, VERSION

log = structlog.get_logger("ojsctrl.webhooks")

JSON = dict[str, Any]
OJSCLUSTERS = Resource(GROUP, VERSION, "ojsclusters", "OJSCluster")
OJSWORKERS = Resource(GROUP, VERSION, "ojsworkers", "OJSWorker")

# A denial lists at most this many errors in its message (all of them are in the causes, up to the cap).
MAX_ERRORS_IN_MESSAGE = 20
MAX_CAUSES = 100

_CAUSE_TYPES = {
    "required": "FieldValueRequired",
    "unique": "FieldValueDuplicate",
    "enum": "FieldValueNotSupported",
    "type": "FieldValueTypeInvalid",
    "immutable": "FieldValueForbidden",
}

ClusterLookup = Callable[[str, str], bool | None]
"""(namespace, name) -> does that OJSCluster exist? None when it cannot be told (no warning then)."""


def _describe(error: FieldError) -> str:
    text = f"{error.path}: {error.message}" if error.path else error.message
    return f"{text} (rule {error.rule})"


def _name(obj: Any, request: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if isinstance(meta, Mapping):
        name = meta.get("name") or meta.get("generateName")
        if isinstance(name, str) and name:
            return name
    return str(request.get("name") or "")


def denial(kind: str, name: str, errors: list[FieldError], warnings: Iterable[str] = ()) -> AdmissionResponse:
    """A 422 Invalid naming each field and rule, shaped like the API server's own validation errors."""
    shown = [_describe(e) for e in errors[:MAX_ERRORS_IN_MESSAGE]]
    if len(errors) > MAX_ERRORS_IN_MESSAGE:
        shown.append(f"and {len(errors) - MAX_ERRORS_IN_MESSAGE} more")
    message = f'{kind}.{GROUP} "{name}" is invalid: ' + "; ".join(shown)
    causes = [
        {
            "reason": _CAUSE_TYPES.get(e.rule, "FieldValueInvalid"),
            "message": f"{e.message} (rule {e.rule})",
            "field": e.path,
        }
        for e in errors[:MAX_CAUSES]
    ]
    details: JSON = {"name": name, "group": GROUP, "kind": kind, "causes": causes}
    return AdmissionResponse.deny(message, code=422, reason="Invalid", details=details, warnings=warnings)


Validate = Callable[[Any, Any, Mapping[str, Any]], ValidationResult]


def admit(request: Mapping[str, Any], kind: str, validate: Validate) -> AdmissionResponse:
    """The admission decision for one request of `kind`, with `validate(object, oldObject, request)`."""
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE"):
        return AdmissionResponse.allow()
    requested = (request.get("kind") or {}).get("kind")
    if requested != kind:
        return AdmissionResponse.deny(
            f"this webhook validates {kind}, not {requested}: check the webhook configuration's rules",
            code=400,
            reason="BadRequest",
        )
    obj = request.get("object")
    old = request.get("oldObject") if operation == "UPDATE" else None
    result = validate(obj, old, request)
    if result.ok:
        return AdmissionResponse.allow(result.warnings)
    if isinstance(obj, Mapping) and isinstance(old, Mapping):
        deleting = (obj.get("metadata") or {}).get("deletionTimestamp") is not None
        if deleting or obj.get("spec") == old.get("spec"):
            # Not the user's change: let metadata-only updates through (see the module docstring).
            stored = "; ".join(_describe(e) for e in result.errors[:3])
            return AdmissionResponse.allow(
                [*result.warnings, f"the stored {kind} is invalid and will not be reconciled: {stored}"]
            )
    return denial(kind, _name(obj, request), result.errors, result.warnings)


def _validate_cluster_update(obj: Any, old: Any, _request: Mapping[str, Any]) -> ValidationResult:
    """The cluster's rules, plus on an update the warnings of giving up the embedded Redis or its storage."""
    result = validate_cluster(obj)
    if old is not None:
        for warning in cluster_update_warnings(obj, old):
            result.warn(warning)
    return result


class ClusterValidator:
    """Admission handler for OJSCluster."""

    def __call__(self, request: JSON) -> AdmissionResponse:
        return admit(request, "OJSCluster", _validate_cluster_update)


class WorkerValidator:
    """Admission handler for OJSWorker; `lookup` tells whether the referenced cluster exists (for the
    clusterRef-not-found warning)."""

    def __init__(self, lookup: ClusterLookup | None = None) -> None:
        self.lookup = lookup

    def _validate(self, obj: Any, old: Any, request: Mapping[str, Any]) -> ValidationResult:
        exists: bool | None = None
        spec = obj.get("spec") if isinstance(obj, Mapping) else None
        ref = spec.get("clusterRef") if isinstance(spec, Mapping) else None
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        namespace = request.get("namespace") or (meta.get("namespace") if isinstance(meta, Mapping) else None)
        if self.lookup is not None and is_cluster_ref(ref) and isinstance(namespace, str) and namespace:
            exists = self.lookup(namespace, ref)
        return validate_worker(obj, cluster_exists=exists, old=old)

    def __call__(self, request: JSON) -> AdmissionResponse:
        return admit(request, "OJSWorker", self._validate)


class InformerClusterLookup:
    """Cluster existence from the shared OJSCluster informer, confirmed by a GET when the cache has no such
    cluster (it may lag a cluster created a moment ago, e.g. by the same `kubectl apply`) or does not cover
    the namespace. The GET is bounded well inside the webhook's timeout; when it cannot answer in time the
    result is unknown and no warning is given."""

    def __init__(
        self,
        client: Client,
        informer: Informer | None,
        namespaces: Iterable[str] = (),
        *,
        get_timeout: float = 1.5,
    ) -> None:
        self.client = client
        self.informer = informer
        self.namespaces = set(namespaces)
        self.get_timeout = get_timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-lookup")

    def __call__(self, namespace: str, name: str) -> bool | None:
        inf = self.informer
        if (
            inf is not None
            and inf.has_synced()
            and (not self.namespaces or namespace in self.namespaces)
            and inf.store.get_by_name(namespace, name) is not None
        ):
            return True
        future = self._pool.submit(self._get, namespace, name)
        try:
            return future.result(timeout=self.get_timeout)
        except FutureTimeout:
            log.debug("cluster lookup timed out", namespace=namespace, cluster=name)
            return None

    def _get(self, namespace: str, name: str) -> bool | None:
        try:
            self.client.request(
                "GET",
                OJSCLUSTERS.path(namespace, name),
                accept=PARTIAL_METADATA,
                timeout=self.get_timeout,
                target=f"{OJSCLUSTERS} {namespace}/{name}",
            )
        except NotFoundError:
            return False
        except Exception as e:
            log.debug("cluster lookup failed", namespace=namespace, cluster=name, error=str(e))
            return None
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
