"""The owner side both reconcilers share: the reconciler's common state and wiring
(:class:`OwnerReconciler`), one reconcile's common state (:class:`OwnerSync`) and the status write with
its conflict events (:class:`OwnerStatus`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from ojsctrl.api.common import API_VERSION
from ojsctrl.api.validation import ValidationResult
from ojsctrl.controllers.children import (
    HELD_RECHECK,
    ChildCaches,
    Children,
    NameHolds,
    child_update_matters,
    not_own_echo,
)
from ojsctrl.controllers.cluster_status import StatusResult, owned_replica_counts, rollout_settled
from ojsctrl.controllers.common import (
    FIELD_MANAGER,
    HASH_ANNOTATION,
    STATUS_COALESCE,
    ConflictEvents,
    ForeignWriters,
    StatusWriter,
    condition,
)
from ojsctrl.controllers.memory import ObjectMemory
from ojsctrl.controllers.stats import StatsPoller
from ojsctrl.runtime.apply import Applier
from ojsctrl.runtime.client import DEPLOYMENTS, JSON, Client, Resource
from ojsctrl.runtime.controller import Controller, Request, Result
from ojsctrl.runtime.events import EventRecorder
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.manager import Manager


class OwnerStatus:
    """Writes an owner's status and reports its name conflicts once each.

    ``deployment_of`` names the owner's Deployment: a reconcile that stops early (invalid spec, missing
    cluster) leaves it running, and the status still shows its pods. ``phase_map`` renames phases a kind
    does not have (an OJSWorker has no Degraded phase).
    """

    def __init__(
        self,
        client: Client,
        resource: Resource,
        recorder: EventRecorder,
        deployments: Informer,
        deployment_of: Callable[[str], str],
        phase_map: Mapping[str, str] | None = None,
        publish_phase: Callable[[str, str, str], None] | None = None,
        min_interval: float = 0.0,
        quiet_transitions: Collection[frozenset[str]] = (),
    ) -> None:
        # lastScaleTime and selector stay when a write leaves them out (an early stop knows neither).
        self.writer = StatusWriter(
            client,
            resource,
            recorder,
            keep=("lastScaleTime", "selector"),
            # A new object on its way waits as long as routine status news may (design.md §status-writes).
            grace=min_interval,
            min_interval=min_interval,
            quiet_transitions=quiet_transitions,
        )
        self.conflict_events = ConflictEvents(recorder)
        self.deployments = deployments
        self.deployment_of = deployment_of
        self.phase_map = dict(phase_map or {})
        self.publish_phase = publish_phase

    def write(
        self, obj: JSON, phase: str, conds: list[JSON], extra: JSON, event: tuple[str, str, str] | None = None
    ) -> float | None:
        """Write the status; None, or the seconds to wait while a write is held back (a first Pending
        status, or polled numbers within the minimum interval)."""
        phase = self.phase_map.get(phase, phase)
        if "replicas" not in extra:
            meta = obj["metadata"]
            dep = self.deployments.store.get_by_name(meta["namespace"], self.deployment_of(meta["name"]))
            extra = {**owned_replica_counts(dep, str(meta.get("uid") or "")), **extra}
        if self.publish_phase is not None:
            self.publish_phase(obj["metadata"]["namespace"], obj["metadata"]["name"], phase)
        return self.writer.write(obj, phase, conds, extra, event)

    def invalid_spec(self, obj: JSON, result: ValidationResult, generation: int) -> None:
        """Report a spec the validation rules refuse: phase Error, Ready False with every error."""
        msg = "; ".join(f"{e.path}: {e.message}" for e in result.errors)[:2000]
        self.write(obj, "Error", [condition("Ready", False, "InvalidSpec", msg, generation=generation)], {})

    def finish(self, obj: JSON, result: StatusResult, children: Children) -> None:
        """The end of a full reconcile: write the status, come back when a held write is due, and tell
        each new name conflict once (a Warning event naming the objects)."""
        held_seconds = self.write(obj, result.phase, result.conditions, result.fields)
        if held_seconds is not None:
            children.requeue_within(held_seconds)
        self.conflict_events.report(obj, children.conflicts)

    def forget(self, namespace: str, name: str) -> None:
        """The owner was deleted: a later object of the same name starts afresh."""
        self.writer.forget(f"{namespace}/{name}")
        self.conflict_events.forget(namespace, name)


def owner_of_hpa(hpa: JSON, owner_of: Callable[[str], str | None]) -> tuple[Request, ...]:
    """The owner whose Deployment an HPA targets; ``owner_of`` maps a Deployment name to its owner's
    name (None when the name is not one of ours)."""
    target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    name = target.get("name")
    ns = (hpa.get("metadata") or {}).get("namespace")
    owner = owner_of(name) if isinstance(name, str) else None
    if target.get("kind") != "Deployment" or owner is None:
        return ()
    return (Request(str(ns), owner),)


class OwnerReconciler:
    """What both reconcilers hold: the client and applier, the stats poller, the event recorder, the
    per-object memory, the foreign replica writers seen, and the controller that calls ``reconcile``.

    Subclasses add their informers (``caches``, the primary informer) and ``status``, then ``setup()``.
    """

    caches: ChildCaches
    status: OwnerStatus

    def __init__(
        self,
        manager: Manager,
        poller: StatsPoller,
        recorder: EventRecorder,
        *,
        name: str,
        max_concurrent_reconciles: int,
    ) -> None:
        self.manager = manager
        self.client = manager.client
        self.poller = poller
        self.recorder = recorder
        self.applier = Applier(self.client, FIELD_MANAGER, HASH_ANNOTATION)
        self.memory = ObjectMemory()
        self.foreign_writers = ForeignWriters(recorder)
        self.name_holds = NameHolds({})
        self.controller = Controller(
            name, self.reconcile, max_concurrent_reconciles=max_concurrent_reconciles
        )

    def status_for(
        self,
        resource: Resource,
        deployment_of: Callable[[str], str],
        phase_map: Mapping[str, str] | None = None,
        publish_phase: Callable[[str, str, str], None] | None = None,
        quiet_transitions: Collection[frozenset[str]] = (),
    ) -> OwnerStatus:
        """The status writer of the owners of ``resource``; ``deployment_of`` names an owner's Deployment
        (from the managed cache: its pods show in an early stop's status); a phase change between the
        two phases of a ``quiet_transitions`` pair makes no event."""
        return OwnerStatus(
            self.client,
            resource,
            self.recorder,
            self.caches.managed[DEPLOYMENTS],
            deployment_of,
            phase_map,
            publish_phase,
            min_interval=self.manager.options.status_min_interval,
            quiet_transitions=quiet_transitions,
        )

    def reconcile(self, req: Request) -> Result | None:
        """Bring one object in line with its spec (each kind has its own)."""
        raise NotImplementedError

    def forget(self, req: Request) -> None:
        """Drop what is kept about a deleted object (each kind adds its own)."""
        key = str(req)
        self.memory.forget(key)
        self.foreign_writers.forget(key)
        self.name_holds.forget(req)
        self.status.forget(req.namespace, req.name)

    def watch_children(self, kind: str) -> None:
        """Reconcile the owner when one of its children changes something it reads (no wake-up for a
        status step it ignores, a write that moved only resourceVersion/managedFields, or the echo of its
        own apply): status-only changes coalesced, and a Deployment's rollout reported once it settles."""
        for resource, informer in self.caches.managed.items():
            self.controller.watch_owned(
                informer,
                API_VERSION,
                kind,
                child_update_matters(resource),
                not_own_echo(self.applier, resource),
                status_delay=STATUS_COALESCE,
                settled=rollout_settled if resource == DEPLOYMENTS else None,
                # A rollout step while the owner's first status is held comes with the held write.
                defer=lambda req: self.status.writer.held_for(str(req)),
            )

    def watch_held_names(self, sources: Mapping[str, tuple[Informer, ...]]) -> None:
        """Wake an owner when an object holding one of its child names changes or goes: ``sources`` are,
        per kind, the informers that together see every object of it (design.md §name-conflict)."""
        self.name_holds = NameHolds(sources)
        for kind, informers in sources.items():
            mapper = self.name_holds.mapper(kind)
            for informer in informers:
                self.controller.watch_mapped(informer, mapper)

    def live(self, informer: Informer, req: Request) -> tuple[JSON, int] | None:
        """The object a request names and its generation; None when there is nothing to reconcile: a
        deleted object is forgotten, one being deleted is left to garbage collection."""
        obj = informer.store.get_by_name(req.namespace, req.name)
        if obj is None:
            self.forget(req)
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return obj, int(obj["metadata"].get("generation") or 0)

    def spec_invalid(
        self, req: Request, obj: JSON, generation: int, validate: Callable[[], ValidationResult]
    ) -> bool:
        """Whether the object's name and spec fail ``validate`` (then its status says so). A generation
        that passed is not checked again: its spec never changes (the API server bumps the generation with
        every spec change)."""
        key, uid = str(req), str(obj["metadata"].get("uid") or "")
        if generation and self.memory.spec_validated(key, uid, generation):
            return False
        result = validate()
        if result.errors:
            self.status.invalid_spec(obj, result, generation)
            return True
        self.memory.note_spec_valid(key, uid, generation)
        return False


class OwnerSync:
    """The part of one reconcile both kinds share: the object, its identity, its :class:`Children`,
    and who else writes its Deployment's replicas."""

    def __init__(self, reconciler: OwnerReconciler, obj: JSON, generation: int, log_key: str) -> None:
        self.shared = reconciler  # each kind keeps its own typed `reconciler`
        self.obj = obj
        self.generation = generation
        self.ns: str = obj["metadata"]["namespace"]
        self.name: str = obj["metadata"]["name"]
        self.uid: str = obj["metadata"]["uid"]
        self.key = f"{self.ns}/{self.name}"
        self.children = Children(reconciler.client, reconciler.applier, reconciler.caches, obj, log_key)
        self.replica_writer: str | None = None  # who else writes the Deployment's replicas (we then yield)

    def result(self) -> Result | None:
        """The reconcile's outcome: come back when a step asked to. The child names foreign objects hold
        are recorded first, so that their deletion wakes this owner."""
        req = Request(self.ns, self.name)
        freed, unwatched = self.shared.name_holds.record(req, self.children.taken)
        if freed:
            # Gone between this reconcile's read and the record: its event found nobody waiting.
            self.shared.controller.enqueue(req, "name-freed")
        elif unwatched:
            self.children.requeue_within(HELD_RECHECK)
        return Result(requeue_after=self.children.requeue) if self.children.requeue else None
