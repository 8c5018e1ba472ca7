"""What both reconcilers share: resources, field managers, conditions and status writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import structlog

from ojsctrl.api.common import GROUP, VERSION
from ojsctrl.runtime.apply import is_subset
from ojsctrl.runtime.client import JSON, Client, NotFoundError, Resource

OJSCLUSTERS = Resource(GROUP, VERSION, "ojsclusters", "OJSCluster")
OJSWORKERS = Resource(GROUP, VERSION, "ojsworkers", "OJSWorker")
SERVICEMONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")

FIELD_MANAGER = "ojsctrl"
AUTOSCALER_MANAGER = "ojsctrl-autoscaler"
HASH_ANNOTATION = f"{GROUP}/applied-hash"
AUTOSCALER_ANNOTATION = f"{GROUP}/autoscaler"
log = structlog.get_logger("ojsctrl.status")

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=ojsctrl"
SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"
# Child status updates (a rollout's steps) reach the owner this much later, coalesced into one reconcile.
STATUS_COALESCE = 1.0


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, status: bool | str, reason: str, message: str = "", *, generation: int | None = None
) -> JSON:
    """A metav1.Condition (without lastTransitionTime, which merge_conditions fills)."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    out: JSON = {"type": type_, "status": value, "reason": reason, "message": message[:32768]}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge_conditions(existing: Iterable[JSON] | None, wanted: Iterable[JSON], now: str) -> list[JSON]:
    """New conditions keep the old lastTransitionTime when their status did not change (API
    conventions: the time marks a transition, not the last write)."""
    old = {c.get("type"): c for c in existing or () if isinstance(c, dict)}
    out = []
    for c in wanted:
        prev = old.get(c["type"])
        ltt = prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] else None
        out.append({**c, "lastTransitionTime": ltt or now})
    return out


def status_unchanged(desired: JSON, live_status: JSON | None) -> bool:
    """Is every field of the desired status already live? (No write when nothing changed.)"""
    return (
        live_status is not None
        and is_subset(desired, live_status)
        and is_subset({k: v for k, v in live_status.items() if k in desired}, desired)
    )


def apply_status(client: Client, resource: Resource, obj: JSON, status: JSON) -> bool:
    """Server-side apply of the status subresource when it differs; returns whether it wrote."""
    if status_unchanged(status, obj.get("status")):
        return False
    live = obj.get("status") or {}
    log.debug(
        "status changed", fields=sorted(k for k in set(status) | set(live) if status.get(k) != live.get(k))
    )
    meta = obj["metadata"]
    body = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": status,
    }
    try:
        client.apply_status(resource, body, field_manager=FIELD_MANAGER)
    except NotFoundError:
        return False
    return True


def get_condition(conditions: Iterable[Any] | None, type_: str) -> JSON | None:
    for c in conditions or ():
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None
