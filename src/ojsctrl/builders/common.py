"""Building blocks shared by the cluster and worker builders.

Everything here is a pure function of its arguments: no I/O, no clock, no randomness. The results are plain
JSON dicts meant to be server-side applied with a body of exactly the fields the operator owns, so nothing
here emits a field the API server would default (that field would then be owned, and fought over, by us).
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from ojsctrl.api.common import (
    GROUP,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_NAME,
    SELECTOR_LABELS,
    OJSModel,
    PodSettings,
)
from ojsctrl.api.quantity import canonical_quantity

JSON = dict[str, Any]

LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "ojs"
MANAGED_BY = "ojsctrl"
# The DNS domain of the cluster (the operator's --cluster-domain): names it builds end in .svc.<domain>.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

# app.kubernetes.io/name and component values (design.md §labels).
APP_SERVER = "ojs-server"
APP_REDIS = "redis"
APP_WORKER = "ojs-worker"
COMPONENT_SERVER = "server"
COMPONENT_BACKEND = "backend"
COMPONENT_WORKER = "worker"

# Pod-template annotation whose change rolls the pods when any config input (Secret values included) changes.
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"

# "nobody": an unprivileged uid/gid that exists in practically every base image (design.md §cluster-children).
DEFAULT_UID = 65534
DEFAULT_GID = 65534

ZONE_TOPOLOGY_KEY = "topology.kubernetes.io/zone"
HOST_TOPOLOGY_KEY = "kubernetes.io/hostname"
# Spreading counts only pods of the same ReplicaSet, so a rollout's old pods do not skew the new ones.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"

TMP_VOLUME = "tmp"


# --- labels, selectors, metadata ----------------------------------------------------------------------------


def selector_labels(app: str, instance: str, component: str) -> dict[str, str]:
    """The selector labels {name, instance, component} (design.md §labels): never anything mutable."""
    return {LABEL_NAME: app, LABEL_INSTANCE: instance, LABEL_COMPONENT: component}


def standard_labels(
    app: str, instance: str, component: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The recommended app.kubernetes.io/* labels, over optional ``extra`` labels.

    The operator's labels win over ``extra``: managed-by scopes the operator's informers and the selector
    labels keep Deployments selecting their own pods, so a user label must not change them.
    """
    out = dict(extra or {})
    out.update(selector_labels(app, instance, component))
    out[LABEL_PART_OF] = PART_OF
    out[LABEL_MANAGED_BY] = MANAGED_BY
    return dict(sorted(out.items()))


def selector_string(selector: Mapping[str, str]) -> str:
    """A label selector serialised as ``k=v,k=v`` with sorted keys (stable, as ``status.selector`` needs)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _as_object(owner: Mapping[str, Any] | OJSModel) -> Mapping[str, Any]:
    if type(owner) is dict:
        return owner  # the common case: a cached object (no ABC check of the model's metaclass)
    if isinstance(owner, BaseModel):
        return {
            "apiVersion": getattr(owner, "api_version", None),
            "kind": getattr(owner, "kind", None),
            "metadata": getattr(owner, "metadata", None) or {},
        }
    return owner


def owner_reference(owner: Mapping[str, Any] | OJSModel) -> JSON:
    """A controller owner reference to ``owner`` (an object dict or an OJSCluster/OJSWorker model).

    ``blockOwnerDeletion`` makes a foreground deletion of the owner wait for its children. Raises ValueError
    when the owner lacks a uid: the API server rejects an owner reference without one.
    """
    obj = _as_object(owner)
    meta = obj.get("metadata") or {}
    missing = [f for f, v in (("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind"))) if not v] + [
        f"metadata.{f}" for f in ("name", "uid") if not meta.get(f)
    ]
    if missing:
        raise ValueError(f"owner object lacks {', '.join(missing)}")
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def name_of(owner: Mapping[str, Any] | OJSModel) -> str:
    """metadata.name of an object dict or model."""
    name = (_as_object(owner).get("metadata") or {}).get("name")
    if not name:
        raise ValueError("object lacks metadata.name")
    return str(name)


def namespace_of(owner: Mapping[str, Any] | OJSModel) -> str:
    """metadata.namespace of an object dict or model.

    Required rather than defaulted: every namespaced object read from the API server has one, and silently
    using "default" would hide a caller bug behind children in the wrong namespace.
    """
    namespace = (_as_object(owner).get("metadata") or {}).get("namespace")
    if not namespace:
        raise ValueError(f"object {name_of(owner)} lacks metadata.namespace")
    return str(namespace)


def object_meta(
    owner: Mapping[str, Any] | OJSModel,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> JSON:
    """metadata of a child of ``owner``: name, the owner's namespace, labels, annotations, owner reference."""
    meta: JSON = {
        "name": name,
        "namespace": namespace_of(owner),
        "labels": dict(labels),
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    meta["ownerReferences"] = [owner_reference(owner)]
    return meta


# --- config hash --------------------------------------------------------------------------------------------


def _canonical(value: Any, depth: int = 0) -> Any:
    if depth > 64:
        raise ValueError("config hash input nested too deeply")
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(by_alias=True, exclude_none=True, mode="json"), depth + 1)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            # Secret data arrives as bytes or str depending on the caller; the same value must hash the same.
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"$b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v, depth + 1) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"config hash input of unsupported type {type(value).__name__}")


def config_hash(*parts: Any, salt: str | None = None) -> str:
    """A digest over the canonical JSON of every config input, as a hex string.

    ``parts`` are JSON-like values (dicts, lists, strings, numbers, pydantic models) and Secret values as
    bytes or str, in a fixed order chosen by the caller. Keys are sorted, so dict order never matters; the
    parts' order does. Only the digest leaves this function: it proves a change without revealing a value.

    With ``salt`` (the owner's metadata.uid; controllers always pass it) the digest is PBKDF2-HMAC-SHA256
    over the inputs with that salt. The digest sits on the pod template, which anyone with ``view`` reads:
    a plain SHA-256 of a weak, user-chosen API key or password could be looked up in a precomputed table
    or guessed at billions per second. The per-object salt defeats precomputed tables and cross-object
    comparison (equal keys in two clusters no longer show equal digests); the iterations multiply what each
    guess costs. The uid is the salt because it is stable across operator restarts (pods are
    not rolled on an upgrade or a restart) and needs no extra Secret that could be lost, which would roll
    every pod. A uid is readable by the same viewers, so a weak key stays guessable at that cost (the
    generated keys have 256 bits; a user-provided key should too). The result is memoised in memory (keyed
    by a hash of the inputs, never written anywhere), so reconciles pay once per change.
    """
    canonical = json.dumps(
        [_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    if salt is None:
        return hashlib.sha256(canonical).hexdigest()
    return _slow_digest(salt, hashlib.sha256(canonical).digest())


# A thousand times the work of a plain SHA-256 per guess, at well under a millisecond per changed input:
# the digest is computed inside reconciles (each worker's too), where a slow hash would delay applies.
HASH_ITERATIONS = 1_000


@functools.lru_cache(maxsize=16384)
def _slow_digest(salt: str, inputs: bytes) -> str:
    return hashlib.pbkdf2_hmac("sha256", inputs, salt.encode("utf-8"), HASH_ITERATIONS).hex()


# --- security contexts --------------------------------------------------------------------------------------


def _user_int(user: Mapping[str, Any], key: str) -> int | None:
    value = user.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def pod_security_context(
    user: Mapping[str, Any] | None,
    *,
    run_as_user: int = DEFAULT_UID,
    run_as_group: int = DEFAULT_GID,
    fs_group: int | None = DEFAULT_GID,
) -> JSON:
    """The pod securityContext: secure defaults with the user's reference-shape fields merged over them.

    The user may set runAsUser, runAsGroup and fsGroup. The restricted Pod Security Standard is kept no matter
    what: runAsNonRoot stays true (a user's ``false`` is ignored), runAsUser 0 is ignored, and the seccomp
    profile is RuntimeDefault.
    """
    user = user or {}
    uid = _user_int(user, "runAsUser")
    gid = _user_int(user, "runAsGroup")
    fsg = _user_int(user, "fsGroup")
    out: JSON = {
        "runAsNonRoot": True,
        "runAsUser": uid if uid else run_as_user,
        "runAsGroup": gid if gid is not None else run_as_group,
    }
    if fsg is not None:
        out["fsGroup"] = fsg
    elif fs_group is not None:
        out["fsGroup"] = fs_group
    out["seccompProfile"] = {"type": "RuntimeDefault"}
    return out


def container_security_context(user: Mapping[str, Any] | None, *, read_only_root: bool = True) -> JSON:
    """The container securityContext: no privilege escalation, all capabilities dropped, non-root.

    Only readOnlyRootFilesystem comes from the user's reference-shape securityContext; everything else is
    what the restricted Pod Security Standard requires.
    """
    user = user or {}
    ro = user.get("readOnlyRootFilesystem")
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": ro if isinstance(ro, bool) else read_only_root,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume() -> tuple[JSON, JSON]:
    """An emptyDir volume and its mount at /tmp: a read-only root filesystem still needs scratch space."""
    return {"name": TMP_VOLUME, "emptyDir": {}}, {"name": TMP_VOLUME, "mountPath": "/tmp"}  # noqa: S108


# --- env ----------------------------------------------------------------------------------------------------


def env_value(name: str, value: str) -> JSON:
    """An env var with a literal value."""
    return {"name": name, "value": value}


def env_secret(name: str, secret: str, key: str) -> JSON:
    """An env var read from a Secret key (the value never appears in the pod spec)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def env_field(name: str, field_path: str) -> JSON:
    """An env var from the downward API."""
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def merge_env(operator: Iterable[Mapping[str, Any]], user: Iterable[Mapping[str, Any]] | None) -> list[JSON]:
    """The operator's env followed by the user's, a user entry replacing the operator's of the same name.

    The user's entries keep their own order after all the operator's, so a user value can refer to any
    operator variable with ``$(NAME)`` (Kubernetes only expands variables defined earlier). Names are unique
    in the result: env is a map keyed by name under server-side apply, and a duplicate is rejected there; of
    duplicate user entries the last wins, as it would in a container.
    """
    user_entries: dict[str, JSON] = {}
    for entry in user or ():
        name = str(entry.get("name", ""))
        user_entries.pop(name, None)
        user_entries[name] = copy.deepcopy(dict(entry))
    out = [dict(e) for e in operator if e["name"] not in user_entries]
    out.extend(user_entries.values())
    return out


# --- pod settings -------------------------------------------------------------------------------------------


def default_spreading(selector: Mapping[str, str]) -> tuple[list[JSON], JSON]:
    """Soft zone spreading and soft host anti-affinity for pods matching ``selector``.

    Both are preferences (ScheduleAnyway, preferred...): a single-zone or single-node cluster must still
    schedule every replica.
    """
    label_selector = {"matchLabels": dict(selector)}
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": ZONE_TOPOLOGY_KEY,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": label_selector,
            "matchLabelKeys": [POD_TEMPLATE_HASH_LABEL],
        }
    ]
    affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {"labelSelector": label_selector, "topologyKey": HOST_TOPOLOGY_KEY},
                }
            ]
        }
    }
    return spread, affinity


def _dedupe_by_name(items: Iterable[Mapping[str, Any]]) -> list[JSON]:
    # imagePullSecrets is a map keyed by name under server-side apply: duplicates would fail the apply.
    seen: dict[str, JSON] = {}
    for item in items:
        seen.setdefault(str(item.get("name", "")), dict(item))
    return list(seen.values())


def pod_scheduling(
    settings: PodSettings, *, spread_selector: Mapping[str, str] | None = None, service_account: bool = True
) -> JSON:
    """The pod-spec fields from the user's pod settings (everything but securityContext and metadata).

    ``spread_selector`` asks for the default spreading where the user set no constraint of that kind:
    topologySpreadConstraints and affinity are decided independently, so a user's nodeAffinity does not cost
    the zone spreading. ``service_account=False`` ignores serviceAccountName (pods that must not run as the
    user's account). Without a named service account no token is mounted: OJS pods never call the API.
    """
    out: JSON = {}
    spread, anti_affinity = default_spreading(spread_selector) if spread_selector else (None, None)
    if settings.affinity:
        out["affinity"] = copy.deepcopy(settings.affinity)
    elif anti_affinity:
        out["affinity"] = anti_affinity
    if service_account and settings.service_account_name:
        out["serviceAccountName"] = settings.service_account_name
    else:
        out["automountServiceAccountToken"] = False
    if settings.image_pull_secrets:
        out["imagePullSecrets"] = _dedupe_by_name(copy.deepcopy(settings.image_pull_secrets))
    if settings.node_selector:
        out["nodeSelector"] = dict(sorted(settings.node_selector.items()))
    if settings.priority_class_name:
        out["priorityClassName"] = settings.priority_class_name
    if settings.tolerations:
        out["tolerations"] = copy.deepcopy(settings.tolerations)
    if settings.topology_spread_constraints:
        out["topologySpreadConstraints"] = copy.deepcopy(settings.topology_spread_constraints)
    elif spread:
        out["topologySpreadConstraints"] = spread
    return out


def pod_template_metadata(
    settings: PodSettings | None, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> JSON:
    """Pod-template metadata: the user's podLabels/podAnnotations with the operator's winning on conflict."""
    pod_labels = dict((settings.pod_labels if settings else None) or {})
    for key in SELECTOR_LABELS:
        # Belt and braces next to the CRD's CEL rule: a selector label from the user would orphan the pods.
        pod_labels.pop(key, None)
    pod_labels.update(labels)
    pod_annotations = dict((settings.pod_annotations if settings else None) or {})
    pod_annotations.update(annotations)
    out: JSON = {"labels": dict(sorted(pod_labels.items()))}
    if pod_annotations:
        out["annotations"] = dict(sorted(pod_annotations.items()))
    return out


def canonical_resources(resources: Mapping[str, Any] | None) -> JSON:
    """A deep copy of ResourceRequirements with every limit and request in the API server's canonical
    form (``0.5`` -> ``500m``, ``1024Mi`` -> ``1Gi``): the child then matches what is stored, and an
    unchanged spec never looks like drift."""
    out: JSON = copy.deepcopy(dict(resources or {}))
    for part in ("limits", "requests"):
        values = out.get(part)
        if isinstance(values, dict):
            out[part] = {k: _canonical_or_same(v) for k, v in values.items()}
    return out


def _canonical_or_same(value: Any) -> Any:
    try:
        return canonical_quantity(value)
    except ValueError:
        return value  # not a quantity: left for the API server to refuse, with its own message
