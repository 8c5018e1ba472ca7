"""Server-side apply of owned children, with no write when nothing changed.

Each child carries an annotation holding the hash of its canonical apply body, the value of
``spec.replicas`` left out (``body_digest`` says why). An apply is skipped when the cached child
carries the same hash *and* every field of the body, the replicas included, still has the value the
body asks for (a user's edit of an owned field is therefore restored, while fields that other actors
added are ignored). A child missing from the cache is read with one GET before its first apply,
unless the caller's caches cover every object of the kind; a child that exists without our
controller owner reference is never written: the caller gets a conflict to report.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from ojsctrl.runtime.client import JSON, Client, NotFoundError, Resource, object_key

Lookup = Callable[[str], JSON | None]

TEMPLATE_DIGEST = "ojsctrl.template-digest"
"""Key of a compact pod template (cache only; never sent to the API server)."""


# hashlib lets go of the GIL for inputs of 2,048 bytes or more; taking it back costs a reconcile thread up
# to a switch interval (5 ms) while other threads run. Fed in smaller pieces, a body's hash (a few µs)
# never lets go. The digest is the same.
_HASH_CHUNK = 2047


def canonical_hash(body: JSON) -> str:
    """A stable hash of an apply body (key order does not matter)."""
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256()
    view = memoryview(data)
    for start in range(0, len(data), _HASH_CHUNK):
        digest.update(view[start : start + _HASH_CHUNK])
    return digest.hexdigest()[:32]


def body_digest(body: JSON) -> tuple[str, Any]:
    """The applied-hash of an apply body (its annotations without the hash itself) and the value of
    ``spec.replicas`` it leaves out (None when the body sends none).

    The hash covers whether the body sends the replicas, not their value. The value stays out because
    the replicas are the one field another writer may hold while the operator yields to it: the operator
    then sends the count that writer set, and a hash of the value would change, and cost an apply (and,
    for a Deployment, a new generation), every time that writer scaled. The value is compared with the
    live object's instead, which every cache holds. Whether the field is sent must change the hash: an
    apply that stops sending it is how the operator's field manager lets go of it (design.md
    §field-managers), and that apply must not be skipped."""
    spec = body.get("spec")
    if not isinstance(spec, dict) or "replicas" not in spec:
        return canonical_hash(body), None
    return canonical_hash({**body, "spec": {**spec, "replicas": None}}), spec["replicas"]


# Merge keys of the keyed lists the operator applies (containers, env, ports, volumes, volumeMounts,
# Service ports, ...): server-side apply merges such lists entry by entry, so another field manager may
# add entries of its own next to ours.
_MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "port")


def _merge_key(items: list[Any]) -> str | None:
    """The key that tells this list's entries apart, if it looks like a keyed list (every entry a dict
    with a distinct value under that key)."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _MERGE_KEYS:
        values = [i.get(key) for i in items]
        if all(v is not None for v in values) and len({repr(v) for v in values}) == len(values):
            return key
    return None


def is_subset(want: Any, have: Any) -> bool:
    """Does `have` hold every value of `want`? Dicts: every key of want, recursively. Keyed lists
    (entries told apart by a merge key such as `name`): every entry of want has an entry of have with
    the same key that holds it, in want's order; entries another field manager added are not ours and do
    not count. Other lists: same length, element-wise. The API server adds defaults to list elements
    (containers, ports), which is why elements compare as subsets too.

    This is the no-op check of every ensure, so it runs on every reconcile of every child: the common
    types (exact dicts, lists and strings) are told apart with ``type() is``, which costs a fraction of
    ``isinstance``, and a list's merge key is looked for only when the live list is the longer one."""
    t = type(want)
    if t is str:
        return bool(want == have)
    if t is dict or isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        for k, v in want.items():
            if k not in have:
                return False
            h = have[k]
            if type(v) is str:
                if v != h:
                    return False
            elif not is_subset(v, h):
                return False
        return True
    if t is list or isinstance(want, list):
        if not isinstance(have, list):
            return False
        if len(have) > len(want):
            key = _merge_key(want)
            if key is None:
                return False
            # Our entries, found by key, must keep their relative order (an apply would restore it).
            at = -1
            for w in want:
                found = next(
                    (i for i, h in enumerate(have) if isinstance(h, dict) and h.get(key) == w[key]), None
                )
                if found is None or found < at or not is_subset(w, have[found]):
                    return False
                at = found
            return True
        if len(want) != len(have):
            return False
        # A loop, not all(genexpr): no generator frame per element on this hot path.
        for w, h in zip(want, have, strict=True):  # noqa: SIM110
            if not is_subset(w, h):
                return False
        return True
    if t is bool or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(want) == float(have)
    return bool(want == have)


def controller_ref(obj: JSON) -> JSON | None:
    """The controller owner reference of an object, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: JSON) -> JSON:
    """A controller owner reference to `owner` (blockOwnerDeletion so foreground deletes wait)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


@dataclass(frozen=True)
class ApplyOutcome:
    """What ensure() did. `conflict` names an object we must not touch."""

    written: bool
    obj: JSON | None = None
    conflict: str | None = None


def compact_template(obj: JSON) -> JSON:
    """Informer transform for Deployments: replace ``spec.template`` with its digest and volumes (what
    is read of it from the cache: whether a volume is a claim). The applier checks the full template
    only when the digest changes (module docstring)."""
    spec = obj.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    if isinstance(template, dict) and TEMPLATE_DIGEST not in template:
        compact: JSON = {TEMPLATE_DIGEST: canonical_hash(template)}
        volumes = (template.get("spec") or {}).get("volumes")
        if volumes:
            compact["spec"] = {"volumes": volumes}
        obj["spec"]["template"] = compact
    return obj


def _template_digest(obj: JSON) -> tuple[bool, str | None]:
    """(whether the object's template is compact, its digest)."""
    template = (obj.get("spec") or {}).get("template")
    if not isinstance(template, dict):
        return False, None
    if TEMPLATE_DIGEST in template:
        return True, template[TEMPLATE_DIGEST]
    return False, canonical_hash(template)


K = TypeVar("K")
V = TypeVar("V")


class _Bounded(Generic[K, V]):
    """A map that forgets its oldest entry past ``maxsize``; a write moves its key to the newest end.

    A plain dict in insertion order: an LRU cache's order list costs a node per entry more, and these maps
    hold an entry per child of every owner (their bound only guards against a leak). Reads do not
    reorder: an entry is renewed when it is written again. Not thread-safe: the Applier holds its lock."""

    __slots__ = ("_data", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self._data: dict[K, V] = {}
        self.maxsize = maxsize

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, key: K, value: V) -> None:
        data = self._data
        data.pop(key, None)
        data[key] = value
        if len(data) > self.maxsize:
            del data[next(iter(data))]

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._data.pop(key, default)


def _rv_int(obj: JSON | None) -> int | None:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", ""))
    except (TypeError, ValueError):
        return None


class Applier:
    """Applies children under one field manager; one instance per controller."""

    def __init__(self, client: Client, field_manager: str, hash_annotation: str) -> None:
        self.client = client
        self.field_manager = field_manager
        self.hash_annotation = hash_annotation
        # key -> (hash, resourceVersion our last apply produced): lets a lagging cache not cause
        # a second identical apply, and tells the echo of the apply. Kept until the cache shows that
        # version (its echo arrives, or a reconcile sees it cached); bounded: it is only an optimisation.
        self._recent: _Bounded[tuple[Resource, str], tuple[str, int | None]] = _Bounded(maxsize=100_000)
        # key -> (body hash, digest of a live template seen to hold that body's template).
        self._verified: _Bounded[tuple[Resource, str], tuple[str, str]] = _Bounded(maxsize=100_000)
        self.verify_reads = 0
        self._lock = threading.Lock()
        self.writes = 0

    def ensure(
        self, resource: Resource, body: JSON, owner_uid: str, cached: JSON | None, *, in_cache: bool
    ) -> ApplyOutcome:
        """Apply `body` unless the live child already matches it.

        `cached` is the caches' copy (None when absent); `in_cache` says whether the caches are
        authoritative for this name, i.e. they hold every object of the kind, ours or not (then absent
        means absent). Otherwise a child missing from `cached` is read with a GET before it is applied.
        """
        # Copies of the top level and metadata only (the caller's body is left as it was): a deep copy of
        # a Deployment body cost more than hashing it.
        meta = dict(body.get("metadata") or {})
        annotations = dict(meta.get("annotations") or {})
        annotations.pop(self.hash_annotation, None)
        meta["annotations"] = annotations
        body = {**body, "metadata": meta}
        digest, replicas = body_digest(body)
        annotations[self.hash_annotation] = digest
        # What was applied: the digest, and the replicas it leaves out (they are compared with the live
        # count, which every cache keeps, not through the annotation: module docstring).
        identity = digest if replicas is None else f"{digest}/{replicas}"
        key = (resource, object_key(body))

        live = cached
        if live is None:
            with self._lock:
                lagging = key in self._recent
            if lagging or not in_cache:
                # Not cached although we applied it (the cache has not caught up with our own write):
                # a quorum read says whether it still exists. Not cached because the caches do not
                # cover the kind: the API server's watch cache (as fresh as an informer) will do.
                try:
                    live = self.client.get(
                        resource,
                        meta["name"],
                        meta.get("namespace"),
                        resource_version=None if lagging else "0",
                    )
                except NotFoundError:
                    live = None
        if live is not None:
            ref = controller_ref(live)
            if ref is None or ref.get("uid") != owner_uid:
                owner = f" (controlled by {ref.get('kind')}/{ref.get('name')})" if ref else ""
                return ApplyOutcome(
                    False,
                    live,
                    conflict=f"{resource.kind} {object_key(live)} exists and is "
                    f"not owned by this resource{owner}",
                )
            live_rv = _rv_int(live)
            with self._lock:
                recent = self._recent.get(key)
                if (
                    recent is not None
                    and cached is not None
                    and recent[1] is not None
                    and live_rv is not None
                    and live_rv >= recent[1]
                ):
                    # The cache has caught up with our last apply: nothing is left to remember.
                    self._recent.pop(key)
                    recent = None
            live_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(self.hash_annotation)
            compare = body
            if live_hash != digest and replicas is not None:
                unhashed = {k: v for k, v in annotations.items() if k != self.hash_annotation}
                if live_hash == canonical_hash({**body, "metadata": {**meta, "annotations": unhashed}}):
                    # Applied by an earlier release, whose hash covered the replicas too: the same body.
                    compare = {
                        **body,
                        "metadata": {**meta, "annotations": {**unhashed, self.hash_annotation: live_hash}},
                    }
                    live_hash = digest
            if live_hash == digest and self._matches(resource, key, digest, compare, live):
                return ApplyOutcome(False, live)
            if (
                recent is not None
                and recent[0] == identity
                and recent[1] is not None
                and live_rv is not None
                and live_rv < recent[1]
            ):
                return ApplyOutcome(False, live)
        result = self.client.apply(resource, body, field_manager=self.field_manager, force=True)
        self._remember_template(key, digest, body, result)
        with self._lock:
            self._recent[key] = (identity, _rv_int(result))
            self.writes += 1
        return ApplyOutcome(True, result)

    def _matches(
        self, resource: Resource, key: tuple[Resource, str], digest: str, body: JSON, live: JSON
    ) -> bool:
        """Whether the live child holds every field of ``body`` (its hash annotation already matches)."""
        compact, live_template = _template_digest(live)
        if not compact:
            return self._remember_template(key, digest, body, live)
        want = _owned_view(body)
        want_spec = dict(want.get("spec") or {})
        want_spec.pop("template", None)
        if not is_subset({**want, "spec": want_spec}, live):
            return False
        with self._lock:
            if self._verified.get(key) == (digest, live_template):
                return True
            self.verify_reads += 1
        # A template not seen before (edited by someone, or a restart): read the child in full once.
        meta = live.get("metadata") or {}
        try:
            full = self.client.get(resource, meta.get("name", ""), meta.get("namespace"))
        except NotFoundError:
            return False
        return self._remember_template(key, digest, body, full)

    def _remember_template(self, key: tuple[Resource, str], digest: str, body: JSON, full: JSON) -> bool:
        """Check a full child against ``body``; when it holds the body, remember its template digest."""
        if not is_subset(_owned_view(body), full):
            return False
        _, template = _template_digest(full)
        if template is not None:
            with self._lock:
                self._verified[key] = (digest, template)
        return True

    def wrote(self, resource: Resource, obj: JSON) -> bool:
        """Whether ``obj`` is exactly what this applier's last apply of it produced (same
        resourceVersion): the reconcile that applied it has already seen it, so its watch event, the
        echo of our own write, tells that reconcile's owner nothing new."""
        rv = _rv_int(obj)
        if rv is None:
            return False
        key = (resource, object_key(obj))
        with self._lock:
            recent = self._recent.get(key)
            if recent is None or recent[1] != rv:
                return False
            # The echo is in the cache now: the entry has done its work (a lagging cache, an echo to skip).
            self._recent.pop(key)
        return True

    def forget(self, resource: Resource, key: str) -> None:
        with self._lock:
            self._recent.pop((resource, key), None)
            self._verified.pop((resource, key), None)


def _owned_view(body: JSON) -> JSON:
    """The parts of an apply body to compare with the live object (identity fields dropped)."""
    view = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
    meta = dict(view.get("metadata") or {})
    for k in ("name", "namespace", "ownerReferences"):
        meta.pop(k, None)
    view["metadata"] = meta
    return view
