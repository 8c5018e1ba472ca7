"""Child ownership shared by both reconcilers: apply a child, delete one no longer wanted, hand a
Deployment's replicas to the autoscaler's field manager and back, write a scale, and find another writer
of the replicas.

One :class:`ChildCaches` per reconciler holds the informers; one :class:`Children` per reconcile holds
what that reconcile found (name conflicts, problems) next to the owner it acts for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from ojsctrl.controllers.cluster_status import deployment_state
from ojsctrl.controllers.common import (
    AUTOSCALER_ANNOTATION,
    AUTOSCALER_MANAGER,
    HASH_ANNOTATION,
    cached_child,
    foreign_replica_manager,
    hpa_targeting,
)
from ojsctrl.runtime.apply import Applier, controller_ref
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
    JSON,
    PVCS,
    ApiError,
    Client,
    ConflictError,
    InvalidError,
    NotFoundError,
    Resource,
)
from ojsctrl.runtime.controller import Predicate, Request, beyond_status
from ojsctrl.runtime.informer import Informer

log = structlog.get_logger("ojsctrl.children")

# A held name of a kind no informer fully sees (a PDB, a claim, a ServiceMonitor) is looked at again after
# this long while the conflict lasts: nothing else would tell that the foreign object went.
HELD_RECHECK = 60.0

# (reason, message) of something that makes the owner an Error (or, for `degraded`, leaves it serving).
Problem = tuple[str, str]


def restored_edit(written: bool, before: JSON | None, after: JSON | None) -> bool:
    """Whether an apply undid someone's edit: it wrote although the body (its hash) had not changed."""
    if not written or before is None or after is None:
        return False
    old = ((before.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    new = ((after.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    return old is not None and old == new


def invalid_child_message(resource: Resource, name: str, error: InvalidError) -> str:
    """Why the API server refused a child, naming its fields (for a condition message)."""
    fields = ", ".join(str(c.get("field")) for c in error.causes if c.get("field"))
    text = f"{resource.kind} {name} was refused by the API server ({fields or error.reason}): {error.message}"
    return text[:1000]


def autoscaler_holds(dep: JSON | None) -> bool:
    """Whether the autoscaler's field manager holds a Deployment's replicas (its annotation says so)."""
    annotations = ((dep or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(AUTOSCALER_ANNOTATION) == "true"


def is_controlled_by(obj: JSON | None, owner_uid: str) -> bool:
    """Whether ``obj`` exists and its controller reference is the owner's (the managed-by label alone
    proves nothing)."""
    ref = controller_ref(obj) if obj is not None else None
    return ref is not None and ref.get("uid") == owner_uid


# ---------------------------------------------------------------------------------------------- event filters
# Cheap predicates on the event handlers (controller-runtime's predicates are the model): an update wakes a
# reconciler only when it changed something that reconciler reads. Adds and deletes always pass.


def _status_view(resource: Resource, obj: JSON) -> Any:
    """The part of a child's status the reconcilers read: a Deployment's rollout state (replica counts,
    observed generation, Available/Progressing/ReplicaFailure), a PVC's phase; nothing of the others'
    (a Service's, a PDB's, an HPA's status is never read)."""
    if resource == DEPLOYMENTS:
        return deployment_state(obj)
    if resource == PVCS:
        return (obj.get("status") or {}).get("phase")
    return None


# Annotations the Kubernetes controllers write on our children and no reconciler reads: the Deployment
# controller numbers each rollout right after the Deployment is created or its template changes.
_SYSTEM_ANNOTATIONS = frozenset({"deployment.kubernetes.io/revision"})


def _beyond_status_read(obj: JSON) -> tuple[JSON, JSON]:
    """:func:`beyond_status` without the annotations of :data:`_SYSTEM_ANNOTATIONS`."""
    meta, rest = beyond_status(obj)
    annotations = meta.get("annotations")
    if annotations and not _SYSTEM_ANNOTATIONS.isdisjoint(annotations):
        kept = {k: v for k, v in annotations.items() if k not in _SYSTEM_ANNOTATIONS}
        meta = {**meta, "annotations": kept}
    return meta, rest


def not_own_echo(applier: Applier, resource: Resource) -> Predicate:
    """Predicate for a cache of children: drop an add or update whose object is exactly what this
    reconciler's own apply produced (:meth:`Applier.wrote`): the reconcile that wrote it went on with the
    apply's response, so waking its owner again would end in "nothing to do". An event that arrives
    before the apply's response is recorded still passes (one spare reconcile, never a missed one);
    deletes and resyncs always pass."""

    def fresh(event: str, old: JSON | None, new: JSON | None) -> bool:
        if event == "delete" or new is None or old is new:
            return True
        return not applier.wrote(resource, new)

    return fresh


def child_update_matters(resource: Resource) -> Predicate:
    """Predicate for a cache of full child objects: an update passes only when it changed the child's spec,
    labels, annotations (but the Deployment controller's revision), owners or other data, or the part of its
    status the reconcilers read (:func:`_status_view`). A status step nobody reads (a Deployment condition's
    lastUpdateTime, an HPA's current metrics every 15 s) or a write that moved only
    resourceVersion/managedFields wakes no owner. Not for metadata-only caches: there a changed
    resourceVersion is the only sign that data changed."""

    def matters(event: str, old: JSON | None, new: JSON | None) -> bool:
        if event != "update" or old is None or new is None:
            return True
        if old is new:
            return True  # a resync (children do not resync; kept for any cache that does)
        if _beyond_status_read(old) != _beyond_status_read(new):
            return True
        return bool(_status_view(resource, old) != _status_view(resource, new))

    return matters


def _ready_condition(obj: JSON) -> tuple[Any, Any, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status"), c.get("reason"), c.get("message")
    return None


def cluster_view_for_workers(cluster: JSON) -> tuple[Any, ...]:
    """What every worker reconcile reads of its cluster: its identity, labels and annotations, its spec
    (the server Service name, the API key Secret name and key, the URL). Nothing of the cluster's status:
    the queue counts reach the workers from the poller, not from status writes, and the Ready condition
    is read only by a worker waiting for the API key (:func:`cluster_ready_changed`)."""
    meta = cluster.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        meta.get("labels"),
        meta.get("annotations"),
        cluster.get("spec"),
    )


def cluster_update_matters_to_workers(event: str, old: JSON | None, new: JSON | None) -> bool:
    """Predicate on the workers' watch of clusters: an update wakes the cluster's workers only when
    :func:`cluster_view_for_workers` changed. A resync of the cluster (the same object twice) does not
    pass: every worker resyncs on its own."""
    if event != "update" or old is None or new is None:
        return True
    return cluster_view_for_workers(old) != cluster_view_for_workers(new)


def cluster_ready_changed(event: str, old: JSON | None, new: JSON | None) -> bool:
    """Predicate for the second watch of clusters, the one that wakes only workers waiting for the API
    key (they say why the cluster is not ready): an update that changed the Ready condition and nothing
    :func:`cluster_update_matters_to_workers` passes (that one wakes every worker already)."""
    if event != "update" or old is None or new is None or old is new:
        return False
    if cluster_view_for_workers(old) != cluster_view_for_workers(new):
        return False
    return _ready_condition(old) != _ready_condition(new)


@dataclass
class ChildCaches:
    """A reconciler's informers of children: ``managed`` holds full objects carrying our managed-by label,
    ``unmanaged`` the metadata of every other object of some of those kinds (so a name someone else took
    is seen without a GET), ``metadata`` kinds only ever read as metadata (Secrets)."""

    managed: Mapping[Resource, Informer]
    unmanaged: Mapping[Resource, Informer] = field(default_factory=dict)
    metadata: Mapping[Resource, Informer] = field(default_factory=dict)

    def managed_child(self, resource: Resource, namespace: str, name: str) -> JSON | None:
        """A child from the managed cache (None for a kind that is not cached there)."""
        informer = self.managed.get(resource)
        return informer.store.get_by_name(namespace, name) if informer else None

    def any_object(self, resource: Resource, namespace: str, name: str) -> JSON | None:
        """The object of that name, ours or not, from the caches (None when neither holds it)."""
        return cached_child(self.managed, self.unmanaged, resource, namespace, name)

    def covers(self, resource: Resource) -> bool:
        """Whether the caches see every object of the kind, so a name missing from them is free."""
        return resource in self.managed and resource in self.unmanaged

    def for_removal(self, resource: Resource) -> Informer | None:
        """The cache that shows whether an object of this kind is ours (metadata suffices), if any."""
        return self.metadata.get(resource) or self.managed.get(resource)


class Children:
    """One owner's children during one reconcile, with what the reconcile found about them.

    ``conflicts`` are children whose names foreign objects hold (``taken`` keeps their (kind, name)), and
    ``problems`` are children the API server refused; the status reports both.
    """

    def __init__(
        self,
        client: Client,
        applier: Applier,
        caches: ChildCaches,
        owner: JSON,
        log_key: str,
    ) -> None:
        self.client = client
        self.applier = applier
        self.caches = caches
        self.namespace: str = owner["metadata"]["namespace"]
        self.owner_uid: str = owner["metadata"]["uid"]
        self.owner_key = f"{self.namespace}/{owner['metadata']['name']}"
        self.log_key = log_key  # the log field naming the owner ("cluster", "worker")
        self.conflicts: list[str] = []
        self.taken: set[tuple[str, str]] = set()
        self.problems: list[Problem] = []
        self.requeue: float | None = None

    def requeue_within(self, seconds: float) -> None:
        """Come back after at most ``seconds``."""
        self.requeue = min(self.requeue or seconds, seconds)

    def cached(self, resource: Resource, name: str) -> JSON | None:
        """A child from the managed cache."""
        return self.caches.managed_child(resource, self.namespace, name)

    def ours(self, resource: Resource, name: str) -> JSON | None:
        """The cached child if this owner controls it."""
        live = self.cached(resource, name)
        return live if is_controlled_by(live, self.owner_uid) else None

    def blocked_by(self, *children: tuple[str, str]) -> bool:
        """Does one of these (kind, name) children have a foreign object in its place?"""
        return any(c in self.taken for c in children)

    def ensure(self, resource: Resource, body: JSON | None, live: JSON | None = None) -> JSON | None:
        """Server-side apply a child with our field manager (nothing when the live one already matches).

        A foreign object holding the name is left alone and recorded as a conflict; a child the API
        server refuses is recorded as an InvalidSpec problem (retrying cannot help until the spec changes,
        which enqueues the owner again). Returns the live child, or None in both cases."""
        if body is None:
            return None
        name = body["metadata"]["name"]
        live = live or self.caches.any_object(resource, self.namespace, name)
        try:
            out = self.applier.ensure(
                resource, body, self.owner_uid, live, in_cache=self.caches.covers(resource)
            )
        except InvalidError as e:
            self.problems.append(("InvalidSpec", invalid_child_message(resource, name, e)))
            return None
        if out.conflict:
            self.conflicts.append(out.conflict)
            self.taken.add((resource.kind, name))
            return None
        if restored_edit(out.written, live, out.obj):
            log.info("restored a hand edit", **{self.log_key: self.owner_key}, kind=resource.kind, name=name)
        return out.obj

    def remove(self, resource: Resource, name: str) -> None:
        """Delete a child that is no longer wanted, only if this owner controls it.

        The caches answer whether it exists and is ours; a kind no cache holds (ServiceMonitors) is read
        with a GET, since nothing else can tell. A cached kind missing from its synced cache is gone, so
        it costs no GET. The delete carries the child's uid: a conflict (409) means another object took
        the name meanwhile, which is not ours to delete, and the next reconcile sees it.
        """
        cache = self.caches.for_removal(resource)
        live = cache.store.get_by_name(self.namespace, name) if cache else None
        if live is None and cache is None:
            try:
                live = self.client.get(resource, name, self.namespace)
            except ApiError:
                live = None
        if live is None or not is_controlled_by(live, self.owner_uid):
            return
        try:
            self.client.delete(resource, name, self.namespace, uid=live["metadata"]["uid"])
        except NotFoundError:
            pass
        except ApiError as e:
            if e.status != 409:
                raise

    def hand_over_replicas(
        self,
        dep: JSON | None,
        *,
        autoscale: bool,
        held_by_autoscaler: bool,
        start: Callable[[int], int],
        unset: int,
    ) -> JSON | None:
        """Pass a Deployment's spec.replicas between ojsctrl's and the autoscaler's field managers without
        the field ever being dropped (design.md §field-managers).

        Taking over, the autoscaler writes ``start(live replicas)`` (``unset`` when the field is missing)
        and the reconcile comes back shortly, when ojsctrl stops sending replicas. Giving back is safe once
        ojsctrl sends them again (it co-owns the field): the autoscaler's apply then drops its claim.
        Returns the Deployment as written, or None when nothing changed."""
        if dep is None:
            return None
        body: JSON = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": dep["metadata"]["name"], "namespace": self.namespace},
        }
        if autoscale and not held_by_autoscaler:
            live = (dep.get("spec") or {}).get("replicas")
            body["metadata"]["annotations"] = {AUTOSCALER_ANNOTATION: "true"}
            body["spec"] = {"replicas": start(int(live) if live else unset)}
            out = dict(self.client.apply(DEPLOYMENTS, body, field_manager=AUTOSCALER_MANAGER, force=True))
            self.requeue = 0.5
            return out
        if not autoscale and held_by_autoscaler:
            return dict(self.client.apply(DEPLOYMENTS, body, field_manager=AUTOSCALER_MANAGER, force=True))
        return None

    def apply_scale(self, deployment: str, replicas: int, *, force: bool = True) -> JSON:
        """Write an autoscaling decision: the Deployment's replicas, as the autoscaler's field manager.
        Without ``force``, a ConflictError says another manager holds spec.replicas at another value."""
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment,
                "namespace": self.namespace,
                "annotations": {AUTOSCALER_ANNOTATION: "true"},
            },
            "spec": {"replicas": replicas},
        }
        return dict(self.client.apply(DEPLOYMENTS, body, field_manager=AUTOSCALER_MANAGER, force=force))

    def write_replicas(self, deployment: str, replicas: int) -> tuple[JSON | None, str | None]:
        """Write an autoscaling decision unless another writer holds the Deployment's replicas: returns
        (the Deployment as written, None), or (None, that writer named).

        The apply goes without force: the API server refuses it (409) only when another field manager
        holds spec.replicas at another value, and only then is the Deployment read in full (its
        managedFields) to name that writer and see whether it wrote lately; one gone quiet (or one of ours)
        is overridden with force. A decision costs one request, not a GET and an apply."""
        try:
            return self.apply_scale(deployment, replicas, force=False), None
        except ConflictError:
            foreign = self.replica_manager(deployment)
            if foreign is not None:
                return None, foreign
            return self.apply_scale(deployment, replicas), None

    def replica_writer(self, hpas: Informer, live: JSON, deployment: str, wanted: int | None) -> str | None:
        """Who else writes the Deployment's spec.replicas, if anyone: an HPA aimed at it that is not the
        owner's own, or (when the live count differs from ours) a field manager other than ojsctrl's that
        set it lately."""
        hpa = hpa_targeting(hpas, self.namespace, deployment, self.owner_uid)
        if hpa is not None:
            return hpa
        have = (live.get("spec") or {}).get("replicas")
        if wanted is None or have is None or int(have) == wanted:
            return None
        return self.replica_manager(deployment)

    def replicas_to_send(
        self, hpas: Informer, live: JSON | None, deployment: str, wanted: int | None
    ) -> tuple[str | None, int | None]:
        """Who else writes the Deployment's replicas (None: nobody), and the replicas to apply: ours, or
        while another writer holds them, what it set, so that nothing changes the pod count (we yield)."""
        if live is None:
            return None, wanted
        writer = self.replica_writer(hpas, live, deployment, wanted)
        if writer is not None and wanted is not None:
            wanted = int((live.get("spec") or {}).get("replicas") or 0)
        return writer, wanted

    def replica_manager(self, deployment: str) -> str | None:
        """The field manager other than ojsctrl's that wrote spec.replicas lately (a GET: the caches hold
        no managedFields), or None."""
        try:
            full = self.client.get(DEPLOYMENTS, deployment, self.namespace)
        except ApiError:
            return None
        manager = foreign_replica_manager(full, time.time())
        return f"field manager {manager}" if manager else None


class NameHolds:
    """The child names foreign objects hold, by the owners that wait for them (design.md §name-conflict).

    An owner reconcile that finds a foreign object in a child's place records the (kind, name); an event
    of that object (above all its deletion) then wakes the owner. Nothing else would: the object carries
    no owner reference to map it by. ``sources`` names, per kind, the informers that together see every
    object of the kind; a held name of any other kind is rechecked after :data:`HELD_RECHECK`.
    """

    def __init__(self, sources: Mapping[str, tuple[Informer, ...]]) -> None:
        self.sources = dict(sources)
        self._owners: dict[tuple[str, str, str], set[Request]] = {}
        self._held: dict[Request, frozenset[tuple[str, str, str]]] = {}
        self._lock = threading.Lock()

    def record(self, owner: Request, taken: Iterable[tuple[str, str]]) -> tuple[bool, bool]:
        """Remember what ``owner`` now waits for (its whole set: names no longer taken are dropped).
        Returns (freed, unwatched): whether a newly held name is already gone from the caches (its
        deletion came before the record, so no event will wake the owner), and whether a held name is of
        a kind no informer fully sees."""
        held = frozenset((kind, owner.namespace, name) for kind, name in taken)
        with self._lock:
            before = self._held.get(owner, frozenset())
            if held == before:
                new: frozenset[tuple[str, str, str]] = frozenset()
            else:
                for key in before - held:
                    owners = self._owners.get(key)
                    if owners is not None:
                        owners.discard(owner)
                        if not owners:
                            del self._owners[key]
                new = held - before
                for key in new:
                    self._owners.setdefault(key, set()).add(owner)
                if held:
                    self._held[owner] = held
                else:
                    self._held.pop(owner, None)
        freed = any(not self._present(*key) for key in new if key[0] in self.sources)
        unwatched = any(kind not in self.sources for kind, _, _ in held)
        return freed, unwatched

    def _present(self, kind: str, namespace: str, name: str) -> bool:
        return any(inf.store.get_by_name(namespace, name) is not None for inf in self.sources[kind])

    def forget(self, owner: Request) -> None:
        """The owner is gone: it waits for nothing."""
        self.record(owner, ())

    def mapper(self, kind: str) -> Callable[[JSON], list[Request]]:
        """The owners waiting for an object of ``kind``'s name (an event mapper)."""

        def owners(obj: JSON) -> list[Request]:
            if not self._owners:
                return []  # the common case, on every event of these informers: no lock taken
            meta = obj.get("metadata") or {}
            key = (kind, meta.get("namespace") or "", meta.get("name") or "")
            with self._lock:
                found = self._owners.get(key)
                return sorted(found) if found else []

        return owners

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
