"""What both reconcilers share: resources, field managers, conditions and status writes."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import structlog

from ojsctrl.api.common import GROUP, VERSION
from ojsctrl.controllers import metrics
from ojsctrl.runtime.apply import compact_template, is_subset
from ojsctrl.runtime.client import JSON, Client, NotFoundError, Resource
from ojsctrl.runtime.events import NORMAL, WARNING, EventRecorder
from ojsctrl.runtime.informer import Informer, InformerFactory

OJSCLUSTERS = Resource(GROUP, VERSION, "ojsclusters", "OJSCluster")
OJSWORKERS = Resource(GROUP, VERSION, "ojsworkers", "OJSWorker")
SERVICEMONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")

FIELD_MANAGER = "ojsctrl"
AUTOSCALER_MANAGER = "ojsctrl-autoscaler"
HASH_ANNOTATION = f"{GROUP}/applied-hash"
AUTOSCALER_ANNOTATION = f"{GROUP}/autoscaler"
OUR_MANAGERS = frozenset({FIELD_MANAGER, AUTOSCALER_MANAGER})
# The condition saying whether ojsctrl sets a Deployment's replicas, and its reason when another writer does.
REPLICAS_MANAGED = "ReplicasManaged"
FOREIGN_REASON = "ForeignReplicaWriter"
# A field manager other than ojsctrl's that wrote spec.replicas this recently is a live writer: ojsctrl
# yields to it. After this long without a write it is taken for a one-off hand edit and undone.
FOREIGN_WRITER_QUIET = 300.0
HPA_MANAGER = "kube-controller-manager"
log = structlog.get_logger("ojsctrl.status")
PROBLEM_PHASES = ("Error", "Degraded")

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=ojsctrl"
# Everything else of a child kind, cached as metadata only: with both caches a name is known to be free
# (or taken by someone else) without a GET before a child's first apply.
UNMANAGED_SELECTOR = "app.kubernetes.io/managed-by!=ojsctrl"
SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"


# What is read of a Deployment's conditions (cluster_status.deployment_state): type, status and reason,
# and the message of a failing one. Their times are never read.
_FAILING_DEPLOYMENT_CONDITIONS = frozenset({("Progressing", "False"), ("ReplicaFailure", "True")})


def _read_part(cond: Any) -> Any:
    if not isinstance(cond, dict):
        return cond
    kept = {k: cond[k] for k in ("type", "status", "reason") if k in cond}
    if (cond.get("type"), cond.get("status")) in _FAILING_DEPLOYMENT_CONDITIONS and "message" in cond:
        kept["message"] = cond["message"]
    return kept


def compact_deployment(obj: JSON) -> JSON:
    """Informer transform for the operator's Deployments: a compact pod template (design.md §no-op) and
    conditions cut to what the reconcilers read (type, status, reason; the message of a failing
    Progressing or ReplicaFailure). A condition's times and routine messages are a third of a cached
    Deployment's status."""
    obj = compact_template(obj)
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("conditions"), list):
        status["conditions"] = [_read_part(c) for c in status["conditions"]]
    return obj


def managed_informer(informers: InformerFactory, kind: Resource) -> Informer:
    """The shared informer of the operator's own children of a kind; Deployments are cached compact
    (:func:`compact_deployment`)."""
    deployment = kind.kind == "Deployment"
    return informers.informer(
        kind,
        label_selector=MANAGED_SELECTOR,
        transform=compact_deployment if deployment else None,
        # Every change of a Deployment's spec bumps its generation (apps' update strategy).
        spec_follows_generation=deployment,
    )


# Child status updates (a rollout's steps) reach the owner this much later, coalesced into one reconcile.
STATUS_COALESCE = 1.0
# A new object that is simply on its way (Pending, nothing wrong) gets its first status when it is
# Running or after this long, whichever comes first: a healthy rollout then costs one status write and
# no event instead of a write per rollout step. StatusWriter's default; the reconcilers' writers take
# --status-min-interval instead (design.md §status-writes).
FIRST_STATUS_GRACE = 10.0
# A phase change that is the normal end of a rollout, not news: no event (design.md §status-writes).
ARRIVAL = ("Pending", "Running")
# Status fields that only carry polled numbers (queue counts): a write that changes nothing else waits
# for --status-min-interval since the object's last status write (docs/design.md §status-writes).
POLLED_STATUS_FIELDS = frozenset({"queueDepth", "activeJobs", "queues"})
STATUS_MIN_INTERVAL = 30.0


def now_rfc3339() -> str:
    """The current time as RFC 3339 in UTC, seconds precision (the API's time format)."""
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


# Autoscaler reasons that narrate its routine (a scaling done, a steady count, a scale-down or scale-up
# waiting out its delay): a change from one to another, with the same desiredReplicas, is news of the
# polled-numbers kind (design.md §status-writes) and records no event. A scaling itself changes
# desiredReplicas, which is written at once, and its Scaled event tells it.
ROUTINE_AUTOSCALING_REASONS = frozenset(
    {"ScaledUp", "ScaledDown", "Stable", "ScaleDownStabilizing", "ScaleUpCooldown"}
)
_ROUTINE = "(routine)"


def routine_reason(reason: Any) -> Any:
    """``reason``, or one token for every routine autoscaler reason."""
    return _ROUTINE if reason in ROUTINE_AUTOSCALING_REASONS else reason


def _condition_states(conditions: Any) -> dict[Any, tuple[Any, Any, Any]]:
    return {
        c.get("type"): (
            c.get("status"),
            routine_reason(c.get("reason")) if c.get("type") == "Autoscaling" else c.get("reason"),
            c.get("observedGeneration"),
        )
        for c in conditions or ()
        if isinstance(c, dict)
    }


def only_polled_numbers_changed(desired: JSON, live_status: JSON | None) -> bool:
    """Whether a status write would change only polled numbers: the queue counts
    (:data:`POLLED_STATUS_FIELDS`), conditions' messages with every condition's status, reason and
    observedGeneration as they are live, and ``autoscaling``'s inputs, recommendation and message with its
    metric, reason and desiredReplicas as they are live. A move between two routine autoscaler reasons
    (:data:`ROUTINE_AUTOSCALING_REASONS`) counts as no change of reason. False when nothing changes at
    all, and for any other field (phase, replicas, desiredReplicas, endpoint...), which is written at once."""
    live = live_status or {}
    changed = [k for k in desired if desired[k] != live.get(k)]
    if not changed:
        return False
    for k in changed:
        if k in POLLED_STATUS_FIELDS:
            continue
        if k == "conditions" and _condition_states(desired[k]) == _condition_states(live.get(k)):
            continue
        if k == "autoscaling" and _autoscaling_decision(desired[k]) == _autoscaling_decision(live.get(k)):
            continue
        return False
    return True


# The decision in status.autoscaling; its inputs, recommendation and message follow the polled numbers.
_AUTOSCALING_DECISION_FIELDS = ("metric", "reason", "desiredReplicas")


def _autoscaling_decision(block: Any) -> tuple[Any, ...] | None:
    if not isinstance(block, dict):
        return None
    return tuple(
        routine_reason(block.get(k)) if k == "reason" else block.get(k) for k in _AUTOSCALING_DECISION_FIELDS
    )


def apply_status(client: Client, resource: Resource, obj: JSON, status: JSON) -> bool:
    """Server-side apply of the status subresource when it differs; returns whether it wrote."""
    if status_unchanged(status, obj.get("status")):
        return False
    # What the write changes, once: for the debug line and for ojsctrl_status_writes_total.
    parts = metrics.changed_parts(status, obj.get("status") or {})
    log.debug("status changed", parts=parts)
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
    metrics.status_written(resource.kind, parts)
    return True


def _rfc3339_seconds(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def foreign_replica_manager(dep: JSON, now: float, quiet: float = FOREIGN_WRITER_QUIET) -> str | None:
    """The field manager other than ojsctrl's owning a Deployment's f:spec.f:replicas, if it wrote within
    ``quiet`` seconds of ``now`` (managedFields from a GET: caches drop them). A write through the scale
    subresource (``kubectl scale deploy``) is shown with its subresource; the HPA controller's is left
    to the check of the HPAs themselves."""
    found = None
    for entry in (dep.get("metadata") or {}).get("managedFields") or ():
        if not isinstance(entry, dict) or entry.get("manager") in OUR_MANAGERS:
            continue
        if entry.get("manager") == HPA_MANAGER and entry.get("subresource") == "scale":
            # The HPA controller: an HPA is a writer for as long as it exists, which the callers check
            # on the HPA itself; its entry here outlives it.
            continue
        spec = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
        if not isinstance(spec, dict) or "f:replicas" not in spec:
            continue
        when = _rfc3339_seconds(entry.get("time"))
        if when is not None and now - when > quiet:
            continue
        sub = entry.get("subresource")
        found = f"{entry.get('manager')}" + (f" (via /{sub})" if sub else "")
    return found


def hpa_targeting(hpas: Informer, ns: str, deployment: str, owner_uid: str) -> str | None:
    """An HPA (not the owner's own) whose scaleTargetRef is the Deployment, named; None when there is none."""
    for hpa in hpas.store.by_index("namespace", ns):
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("kind") != "Deployment" or target.get("name") != deployment:
            continue
        ref = next(
            (r for r in (hpa.get("metadata") or {}).get("ownerReferences") or () if r.get("controller")), None
        )
        if ref is not None and ref.get("uid") == owner_uid:
            continue  # the owner's own (a worker's CPU-mode HPA)
        return f"HorizontalPodAutoscaler {ns}/{hpa['metadata']['name']}"
    return None


class ForeignWriters:
    """The foreign writer of each object's replicas last reported: the ReplicasManaged condition, with one
    event and log line when a writer appears or goes (not one per reconcile).

    ojsctrl yields to a foreign writer rather than keep its own decision: both writing spec.replicas means
    pods created and deleted on every round, and only the user can remove the other writer.
    """

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def forget(self, key: str) -> None:
        """Drop a deleted object's entry."""
        with self._lock:
            self._last.pop(key, None)

    def condition(
        self, obj: JSON, foreign: str | None, *, deployment: str, instead: str, generation: int
    ) -> JSON:
        """ReplicasManaged for ``obj``; ``instead`` says what to scale rather than the Deployment."""
        meta = obj["metadata"]
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        with self._lock:
            before = self._last.get(key)
            if foreign is None:
                self._last.pop(key, None)
            else:
                self._last[key] = foreign
        if foreign is None:
            if before is not None:
                log.info("foreign replica writer gone; managing replicas again", object=key, was=before)
                self.recorder.event(obj, NORMAL, REPLICAS_MANAGED, f"{before} no longer writes the replicas")
            return condition(
                REPLICAS_MANAGED, True, "Managed", "ojsctrl sets the replicas", generation=generation
            )
        msg = (
            f"{foreign} writes spec.replicas of Deployment {deployment}; ojsctrl stops writing them while it "
            f"does. {instead} and remove the other writer"
        )
        if before != foreign:
            log.warning("foreign replica writer; yielding", object=key, writer=foreign)
            self.recorder.event(obj, WARNING, FOREIGN_REASON, msg)
        return condition(REPLICAS_MANAGED, False, FOREIGN_REASON, msg, generation=generation)


def get_condition(conditions: Iterable[Any] | None, type_: str) -> JSON | None:
    """The condition of that type from a list, or None."""
    for c in conditions or ():
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


class Expiring:
    """key -> a monotonic time, each entry forgotten once its time is more than ``ttl`` seconds past.

    A plain dict in the order of the writes (a write moves its key to the end), swept from the oldest end
    at each write: the status writers keep an entry per object written or held lately, and a TTL cache's
    per-entry links cost more than the entries themselves. Not thread-safe: the caller holds its lock."""

    __slots__ = ("_data", "ttl")

    def __init__(self, ttl: float) -> None:
        self._data: dict[str, float] = {}
        self.ttl = ttl

    def get(self, key: str) -> float | None:
        value = self._data.get(key)
        return value if value is not None and value >= time.monotonic() - self.ttl else None

    def set(self, key: str, value: float) -> None:
        data = self._data
        data.pop(key, None)
        data[key] = value
        cutoff = time.monotonic() - self.ttl
        while data:
            oldest = next(iter(data))
            if data[oldest] >= cutoff:
                break
            del data[oldest]

    def setdefault(self, key: str, value: float) -> float:
        have = self.get(key)
        if have is None:
            self.set(key, value)
            return value
        return have

    def pop(self, key: str, default: float | None = None) -> float | None:
        return self._data.pop(key, default)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class StatusWriter:
    """Writes one kind's status (server-side apply, only when it changed) and the event of a phase change.

    The first status of a new object is held back while the object is Pending with nothing wrong, for
    up to ``grace`` seconds from the first reconcile that would have written it: ``write`` then returns
    the seconds left, for the reconciler to come back (a child's progress brings it back sooner).

    A write that would change only polled numbers (:func:`only_polled_numbers_changed`) is held until
    ``min_interval`` seconds after the object's last status write, and then until the client's rate
    limiter has tokens to spare (:meth:`Client.spare_in`): ``write`` returns the seconds left and the
    reconcile that comes back then writes the latest numbers. A change of phase, of a condition's
    status or reason, of replicas or desiredReplicas writes at once (and takes the numbers along). At 2,000
    workers polled every 5 s, that turns 400 status writes/s into at most 67.
    """

    def __init__(
        self,
        client: Client,
        resource: Resource,
        recorder: EventRecorder,
        *,
        keep: tuple[str, ...] = (),
        grace: float = FIRST_STATUS_GRACE,
        min_interval: float = 0.0,
        quiet_transitions: Collection[frozenset[str]] = (),
    ) -> None:
        self.client = client
        # (from, to) phase moves that make no event: each quiet pair both ways, and the end of a rollout.
        self.quiet_moves = frozenset(
            move for pair in quiet_transitions for a, b in [tuple(pair)] for move in ((a, b), (b, a))
        ) | {ARRIVAL}
        self.resource = resource
        self.recorder = recorder
        self.keep = keep
        self.grace = grace
        self.min_interval = min_interval
        # object uid -> monotonic time of its last status write (entries expire: bounded memory).
        self._written_at = Expiring(max(60.0, 2 * min_interval))
        # object uid -> monotonic time of the first held write; entries of objects deleted meanwhile expire.
        self._first_held_at = Expiring(max(60.0, 4 * grace))
        # "namespace/name" -> monotonic time its held first status is due (what held_for answers).
        self._due_at = Expiring(max(60.0, 4 * grace))
        # "namespace/name" -> (phase, Ready reason) last reported in the log: a line per transition, not
        # per reconcile. Cleared by forget() when the object is deleted.
        self._reported: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def forget(self, key: str) -> None:
        """Drop what was reported of a deleted object ("namespace/name")."""
        with self._lock:
            self._reported.pop(key, None)
            self._due_at.pop(key, None)

    def held_for(self, key: str) -> float:
        """Seconds until the held first status of ``namespace/name`` is due (0 when none is held): a
        reconcile asked for before then would only hold it again."""
        with self._lock:
            due = self._due_at.get(key)
        return 0.0 if due is None else max(0.0, due - time.monotonic())

    def _transition(self, obj: JSON, phase: str, conds: list[JSON]) -> tuple[bool, str, str]:
        """Log a change of phase or Ready reason once (problems found at warning, the rest at info);
        returns whether it changed, with Ready's reason and message."""
        meta = obj["metadata"]
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        ready = next((c for c in conds if c["type"] == "Ready"), None) or {}
        reason = str(ready.get("reason") or phase)
        message = str(ready.get("message") or "")
        with self._lock:
            before = self._reported.get(key)
            self._reported[key] = (phase, reason)
        if before is None:
            # Nothing reported by this process yet (a restart): the status on record says what was
            # reported before, so an object that stays as it was is not logged again.
            recorded = obj.get("status") or {}
            if recorded.get("phase"):
                was = get_condition(recorded.get("conditions"), "Ready") or {}
                before = (str(recorded["phase"]), str(was.get("reason") or recorded["phase"]))
        if before == (phase, reason):
            return False, reason, message
        fields: dict[str, Any] = {
            "kind": self.resource.kind,
            "object": key,
            "phase": phase,
            "reason": reason,
            "message": message[:500],
        }
        if before is not None:
            fields["previous_phase"], fields["previous_reason"] = before
        if phase in PROBLEM_PHASES:
            log.warning("problem found", **fields)
        elif before is not None and before[0] in PROBLEM_PHASES:
            log.info("problem cleared", **fields)
        else:
            log.info("phase changed", **fields)
        return True, reason, message

    def write(
        self,
        obj: JSON,
        phase: str,
        conds: list[JSON],
        extra: JSON,
        event: tuple[str, str, str] | None = None,
    ) -> float | None:
        """Write the status; returns None, or the seconds to wait when the write is held (a first Pending
        status, or only polled numbers within ``min_interval`` of the last write)."""
        old = obj.get("status") or {}
        uid = str(obj["metadata"].get("uid") or "")
        key = f"{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}"
        if not old and phase == "Pending" and event is None and self.grace > 0 and uid:
            now = time.monotonic()
            with self._lock:
                first = self._first_held_at.setdefault(uid, now)
                self._due_at.set(key, first + self.grace)
            left = self.grace - (now - first)
            if left > 0:
                return left
        with self._lock:
            if self._first_held_at.pop(uid, None) is not None:
                self._due_at.pop(key, None)
        generation = int(obj["metadata"].get("generation") or 0)
        status: JSON = {
            **extra,
            "phase": phase,
            "observedGeneration": generation,
            "conditions": merge_conditions(old.get("conditions"), conds, now_rfc3339()),
        }
        for k in self.keep:
            if k not in status and old.get(k):
                status[k] = old[k]
        if self.min_interval > 0 and uid and only_polled_numbers_changed(status, old):
            now = time.monotonic()
            with self._lock:
                last = self._written_at.get(uid)
            left = 0.0 if last is None else self.min_interval - (now - last)
            if left > 0:
                return left
            # Due, but only with tokens to spare: under load the replicas and children's writes go first,
            # and the numbers follow when the client's budget has room (spread over a few seconds so that
            # the objects held together do not all come back at once).
            short = self.client.spare_in()
            if short > 0:
                return short + random.uniform(1.0, max(1.0, min(10.0, self.min_interval / 3)))
        wrote = apply_status(self.client, self.resource, obj, status)
        if wrote and uid:
            with self._lock:
                self._written_at.set(uid, time.monotonic())
        changed, reason, msg = self._transition(obj, phase, conds)
        prev = old.get("phase")
        problem = phase in PROBLEM_PHASES
        if event is not None:
            if wrote and (prev != phase or changed):
                self.recorder.event(obj, *event)
        elif problem and (changed or (wrote and prev != phase)):
            # The specific reason (SecretNotFound, InvalidSpec...), once per new problem. A name conflict
            # is told by ConflictEvents, which names the objects: a second event would only repeat it.
            if reason != "NameConflict":
                self.recorder.event(obj, WARNING, reason, msg or f"phase {phase}")
        elif wrote and prev and prev != phase and (prev, phase) not in self.quiet_moves:
            # A first Normal phase (Pending, Running) is not news, nor the end of a rollout (Pending ->
            # Running: a new object whose first status outlasted the grace, pods that came back; the way
            # down, Running -> Pending, is news), nor a quiet transition (an autoscaled worker's Running
            # <-> Scaling: its Scaled event tells each scaling).
            self.recorder.event(obj, NORMAL, phase, msg or f"phase {phase}")
        return None


class ConflictEvents:
    """One NameConflict event per conflict, not one per reconcile: an owner's conflicts are remembered
    (by namespace/name) and only those not reported before make an event. A conflict that went away and
    comes back is news again."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self._reported: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def report(self, obj: JSON, conflicts: Iterable[str]) -> None:
        """One Warning event naming the conflicts not reported before; remember the current set."""
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        now = frozenset(conflicts)
        with self._lock:
            before = self._reported.get(key, frozenset())
            if now:
                self._reported[key] = now
            else:
                self._reported.pop(key, None)
        new = sorted(now - before)
        if new:
            self.recorder.event(obj, WARNING, "NameConflict", "; ".join(new))

    def forget(self, namespace: str, name: str) -> None:
        """The owner is gone: a later object of the same name starts afresh."""
        with self._lock:
            self._reported.pop(f"{namespace}/{name}", None)


def cached_child(
    ours: Mapping[Resource, Informer],
    others: Mapping[Resource, Informer],
    resource: Resource,
    ns: str,
    name: str,
) -> JSON | None:
    """A child by name from the managed cache (full objects), else from the cache of everything else of
    its kind (metadata only): a name someone else took is seen without a GET."""
    for caches in (ours, others):
        inf = caches.get(resource)
        obj = inf.store.get_by_name(ns, name) if inf is not None else None
        if obj is not None:
            return obj
    return None
