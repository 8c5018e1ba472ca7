"""Keeping the embedded Redis's data through spec changes (design.md §storage).

A spec change never deletes what holds data: the claim ``<name>-redis`` and the password Secret
``<name>-redis`` (without it a kept claim's data cannot be read) are *released* instead: the cluster's owner
reference is removed, so garbage collection no longer deletes them with the cluster, and the annotation
``ojs.openjobspec.dev/released`` says why and when. When the spec asks for them again, a released object is
*adopted* back if it still fits the spec. The functions here are pure: the reconciler does the I/O.
"""

from __future__ import annotations

from decimal import Decimal

from ojsctrl.api.common import GROUP
from ojsctrl.api.quantity import parse_quantity
from ojsctrl.runtime.apply import controller_ref
from ojsctrl.runtime.client import JSON

RELEASED_ANNOTATION = f"{GROUP}/released"


def is_released(obj: JSON | None) -> bool:
    """Whether an object carries the released annotation and no controller (ours to adopt again)."""
    if obj is None or controller_ref(obj) is not None:
        return False
    return RELEASED_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {})


def release_patch(obj: JSON, owner_uid: str, reason: str, now: str) -> JSON | None:
    """A merge patch that releases ``obj`` from the owner ``owner_uid`` (None when that owner does not
    control it). The resourceVersion makes it a compare-and-swap: a concurrent change fails it with 409."""
    ref = controller_ref(obj)
    if ref is None or ref.get("uid") != owner_uid:
        return None
    meta = obj.get("metadata") or {}
    others = [r for r in meta.get("ownerReferences") or () if r.get("uid") != owner_uid]
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "ownerReferences": others or None,
            "annotations": {RELEASED_ANNOTATION: f"{now}: {reason}"},
        }
    }


def adopt_patch(obj: JSON, owner_ref: JSON) -> JSON:
    """A merge patch that makes a released object the owner's child again and drops the annotation."""
    meta = obj.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or () if not r.get("controller")]
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "ownerReferences": [*refs, owner_ref],
            "annotations": {RELEASED_ANNOTATION: None},
        }
    }


def _size(obj: JSON) -> Decimal | None:
    requests = (((obj.get("spec") or {}).get("resources") or {}).get("requests")) or {}
    try:
        return parse_quantity(requests.get("storage")) if requests.get("storage") is not None else None
    except ValueError:
        return None


def claim_change_problem(live: JSON, wanted: JSON) -> str | None:
    """Why the live claim cannot become ``wanted`` (a message naming the field and what is allowed), or
    None when an apply may go ahead. The storage class of a claim never changes; its size only grows."""
    name = (live.get("metadata") or {}).get("name")
    have_class = (live.get("spec") or {}).get("storageClassName")
    want_class = (wanted.get("spec") or {}).get("storageClassName")
    if want_class and have_class and want_class != have_class:
        return (
            f"spec.backend.redis.storage.storageClassName: PersistentVolumeClaim {name} has storage class "
            f"{have_class!r}, and a claim's class cannot change: set it back to {have_class!r}, or move the "
            "data to a new claim yourself (see docs/storage.md)"
        )
    have, want = _size(live), _size(wanted)
    if have is not None and want is not None and want < have:
        have_text = ((live.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        return (
            f"spec.backend.redis.storage.size: PersistentVolumeClaim {name} requests {have_text}, and a "
            f"claim cannot shrink: set a size of at least {have_text}"
        )
    return None


def grow_refused_message(live: JSON, wanted: JSON, api_message: str) -> str:
    """What to tell the user when the API server refused to grow a claim (unbound, or a StorageClass that
    does not allow expansion), without its field-by-field diff."""
    name = (live.get("metadata") or {}).get("name")
    have = ((live.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    want = ((wanted.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    phase = (live.get("status") or {}).get("phase") or "Pending"
    why = (
        f"the claim is {phase}, not Bound: only a bound claim can grow"
        if phase != "Bound"
        else "its StorageClass must allow volume expansion (allowVolumeExpansion: true)"
    )
    first_line = api_message.split(":", 1)[0][:200]
    return (
        f"spec.backend.redis.storage.size: PersistentVolumeClaim {name} cannot grow from {have} to {want}: "
        f"{why}; set the size back to {have} (API server: {first_line})"
    )


def adoption_problem(live: JSON, wanted: JSON) -> str | None:
    """Why a released claim cannot be adopted for ``wanted`` (None when it fits)."""
    problem = claim_change_problem(live, wanted)
    if problem is None:
        return None
    name = (live.get("metadata") or {}).get("name")
    return (
        f"PersistentVolumeClaim {name} was released earlier and does not fit the spec, so it is not "
        f"adopted: {problem}; or delete the claim (kubectl delete pvc {name}) to start empty"
    )


def unbound_claim_message(pvc: JSON | None) -> str | None:
    """A message naming a claim that is not bound (None when bound or absent)."""
    if pvc is None:
        return None
    phase = (pvc.get("status") or {}).get("phase") or "Pending"
    if phase == "Bound":
        return None
    name = (pvc.get("metadata") or {}).get("name")
    cls = (pvc.get("spec") or {}).get("storageClassName")
    where = f"StorageClass {cls!r}" if cls else "the default StorageClass (none is set on the claim)"
    return (
        f"PersistentVolumeClaim {name} is {phase}, not bound to a volume: check {where} "
        f"(kubectl describe pvc {name})"
    )
