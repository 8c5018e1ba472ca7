"""Drain-before-shutdown planning: which OJS workers run in which pod, and which pods go first (design.md
§drain).

Pure functions, no I/O. ``ojsctrl.ojs.autoscale`` re-exports the public names, so the import contract that
keeps the autoscaling decisions free of the HTTP client and of Kubernetes machinery covers this module too.

Matching a worker to its pod (no SDK lets the application choose its worker id, and none reads
``OJS_WORKER_ID``; sources in ``reference/ojs-ecosystem.md``):

* ``metadata.kubernetes_pod`` or ``hostname`` equal to the pod name (the admin API spec §9.1; no server
  returns them today, but a server that does makes every SDK matchable);
* an id that starts with ``worker_<pod name>_``: the Go SDK's ``worker_<hostname>_<pid>_<unixnano>``
  (ojs-go-sdk ``worker.go``), and a pod's hostname is its name. Pod names are DNS names (no ``_``) and a
  Deployment's generated pod names stay within the kubelet's 63-character hostname limit, so the text
  between ``worker_`` and the next ``_`` is the whole hostname: ``worker_web-1_…`` never matches pod
  ``web-12`` nor the other way round.

The Python, JS, Rust, Java and Ruby SDKs use random ids (``worker_<hex>``/``worker_<uuid>``): their pods
match only through a server that reports ``hostname`` or ``metadata.kubernetes_pod``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from ojsctrl.ojs.model import WorkerInfo

__all__ = [
    "DELETION_COST_ANNOTATION",
    "GO_SDK_ID_PREFIX",
    "IDLE_DELETION_COST",
    "IDLE_KEPT_DELETION_COST",
    "UNMATCHED_DELETION_COST",
    "DrainPlan",
    "PodWorkers",
    "match_workers",
    "plan_drain",
    "pod_of",
]

DELETION_COST_ANNOTATION: Final = "controller.kubernetes.io/pod-deletion-cost"
IDLE_DELETION_COST: Final = -100
"""Cost of the pods this step removes (idle ones, then unmatched ones): the ReplicaSet takes them first."""
IDLE_KEPT_DELETION_COST: Final = -1
"""Cost of idle pods kept this step: below unmatched and busy pods, above this step's victims (a kept idle
pod must not be removed in place of a victim that was already told to quiet)."""
UNMATCHED_DELETION_COST: Final = 0
"""Cost of pods no live worker matches: their busyness is unknown, so they rank between idle and busy."""
GO_SDK_ID_PREFIX: Final = "worker_"
_MAX_DELETION_COST: Final = 2**31 - 1  # the annotation is an int32


SILENT_WORKER_SECONDS: Final = 90.0
"""A worker whose last heartbeat is older than this is treated as stale. Servers that judge staleness use
60 s (ojs-backend-redis ``internal/redis/workers.go``); the 30 s beyond it absorb clock skew between the
server, which stamps the heartbeat, and the operator, which reads it."""


def mark_silent(workers: Iterable[WorkerInfo], now: float) -> list[WorkerInfo]:
    """``workers`` with those silent for :data:`SILENT_WORKER_SECONDS` (by the heartbeat time the server
    reports, against ``now`` in seconds since the epoch) marked ``stale``: postgres, nats, sqs and lite
    never mark a worker stale themselves, so a dead pod's record would otherwise look alive forever."""
    cutoff = now - SILENT_WORKER_SECONDS
    return [replace(w, state="stale") if not w.stale and w.silent_since(cutoff) else w for w in workers]


def pod_of(worker: WorkerInfo, pods: Collection[str]) -> str | None:
    """The pod (one of ``pods``) that ``worker`` runs in, or None when nothing ties it to one of them.

    The server's own report wins (``metadata.kubernetes_pod``, then ``hostname``); then the hostname the
    Go SDK puts in its ids.
    """
    for name in (worker.pod, worker.hostname):
        if name and name in pods:
            return name
    if worker.id.startswith(GO_SDK_ID_PREFIX):
        host, sep, rest = worker.id[len(GO_SDK_ID_PREFIX) :].partition("_")
        # `worker_<pod>_` and something after it: the pid and start time of the process.
        if sep and rest and host in pods:
            return host
    return None


@dataclass(frozen=True, slots=True)
class PodWorkers:
    """The live OJS workers of one pod (several after a container restart; stale ones are left out).

    ``active_jobs`` is the sum over them; ``quiet`` is True when every one of them has been told to quiet;
    ``to_quiet`` lists those that have not.
    """

    pod: str
    workers: tuple[WorkerInfo, ...]

    @property
    def active_jobs(self) -> int:
        """Jobs in progress in this pod."""
        return sum(w.active_jobs for w in self.workers)

    @property
    def idle(self) -> bool:
        """True when no worker of the pod processes a job."""
        return self.active_jobs == 0

    @property
    def quiet(self) -> bool:
        """True when every worker of the pod already stopped fetching."""
        return all(w.quiet for w in self.workers)

    @property
    def to_quiet(self) -> tuple[str, ...]:
        """Ids of the pod's workers not yet told to quiet."""
        return tuple(w.id for w in self.workers if not w.quiet)


def match_workers(pods: Iterable[str], workers: Iterable[WorkerInfo]) -> dict[str, PodWorkers]:
    """The live workers of each pod that has any, by pod name; pods without a live worker are absent.

    Stale workers count as gone: a restarted container leaves its old record behind, stale after a
    minute, and the old process's jobs are no longer running in the pod.
    """
    names = set(pods)
    found: dict[str, list[WorkerInfo]] = {}
    for w in workers:
        if w.stale:
            continue
        pod = pod_of(w, names)
        if pod is not None:
            found.setdefault(pod, []).append(w)
    return {pod: PodWorkers(pod, tuple(sorted(ws, key=lambda w: w.id))) for pod, ws in sorted(found.items())}


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """One step of a drain-before-shutdown scale-down.

    ``replicas`` is what may be applied now: ``current`` minus the pods chosen as ``victims`` (never below
    the desired count). ``deletion_costs`` maps every pod to its pod-deletion-cost annotation:
    :data:`IDLE_DELETION_COST` for victims, :data:`IDLE_KEPT_DELETION_COST` for idle pods kept,
    :data:`UNMATCHED_DELETION_COST` for pods without a live worker, the active jobs for busy pods.
    ``quiet`` lists the worker ids to quiet: the live workers of matched idle victims not already quiet (a
    pod without a known worker has nobody to tell). ``draining`` is True while busy pods stand between
    ``replicas`` and the desired count (phase Draining). ``unmatched`` is True when no pod matches any live
    worker: then the plan is a plain scale-down relying on graceful shutdown. ``matched`` and
    ``unmatched_pods`` say how many pods matched and which did not.
    """

    replicas: int
    deletion_costs: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    quiet: tuple[str, ...] = ()
    victims: tuple[str, ...] = ()
    draining: bool = False
    unmatched: bool = False
    matched: int = 0
    unmatched_pods: tuple[str, ...] = ()


def plan_drain(
    pods: Sequence[str],
    workers: Sequence[WorkerInfo],
    current: int,
    desired: int,
    not_ready: Collection[str] = (),
) -> DrainPlan:
    """Plan a scale-down from ``current`` to ``desired`` that removes idle pods first and busy pods never.

    ``pods`` are the names of the worker Deployment's pods, ``workers`` every record
    ``GET /ojs/v1/admin/workers`` returned (matched to pods by :func:`match_workers`). Victims, in order:
    idle pods (already quiet ones first, then by name), then pods no live worker matches (by name); busy
    pods are never chosen, so a step shrinks by at most the number of idle and unmatched pods.

    ``not_ready`` names the pods the ReplicaSet controller removes before it looks at deletion costs at
    all (unscheduled, not running or not ready). Those go first within their rank; and while a busy pod is
    among them, a step shrinks only by the victims that are not ready either, since a cost cannot protect it.
    """
    if current < 0 or desired < 0:
        raise ValueError("current and desired must be >= 0")
    names = list(dict.fromkeys(pods))
    matched = match_workers(names, workers)
    unmatched_pods = tuple(p for p in names if p not in matched)
    if desired >= current:
        return DrainPlan(replicas=desired, matched=len(matched), unmatched_pods=unmatched_pods)
    if not matched:
        return DrainPlan(replicas=desired, unmatched=True, unmatched_pods=unmatched_pods)
    early = set(not_ready)
    idle = sorted(
        (m for m in matched.values() if m.idle), key=lambda m: (m.pod not in early, not m.quiet, m.pod)
    )
    unknown = sorted(unmatched_pods, key=lambda p: (p not in early, p))
    ranked = [m.pod for m in idle] + unknown
    # More pods than `current`: the surplus is already on its way out (the ReplicaSet removes the cheapest,
    # i.e. the first ranked ones, and a lagging cache still lists them). Counting those again would let this
    # step shrink into pods it means to keep.
    surplus = max(0, len(names) - current)
    leaving = set(ranked[:surplus])
    candidates = ranked[surplus:]
    if any(not m.idle and m.pod in early for m in matched.values()):
        candidates = [p for p in candidates if p in early]
    victims = candidates[: current - desired]
    replicas = current - len(victims)
    gone = leaving | set(victims)
    costs: dict[str, int] = {}
    for p in names:
        m = matched.get(p)
        if p in gone:
            costs[p] = IDLE_DELETION_COST
        elif m is None:
            costs[p] = UNMATCHED_DELETION_COST
        elif m.idle:
            costs[p] = IDLE_KEPT_DELETION_COST
        else:
            costs[p] = min(m.active_jobs, _MAX_DELETION_COST)
    quiet = tuple(wid for p in victims if p in matched for wid in matched[p].to_quiet)
    return DrainPlan(
        replicas=replicas,
        deletion_costs=MappingProxyType(costs),
        quiet=quiet,
        victims=tuple(victims),
        draining=replicas > desired,
        matched=len(matched),
        unmatched_pods=unmatched_pods,
    )
