"""Pure status logic of an OJSCluster: a phase and conditions from the observed children.

Phase precedence (design.md §phases): Error > Degraded > Scaling > Pending > Running, decided by the
Deployments, the spec and ownership only. Queue stats and monitoring are conditions, never phases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ojsctrl.controllers.common import condition, get_condition
from ojsctrl.controllers.stats import PollResult, top_queues
from ojsctrl.controllers.storage import unbound_claim_message
from ojsctrl.runtime.apply import controller_ref
from ojsctrl.runtime.client import JSON

PRECEDENCE = ("Error", "Degraded", "Draining", "Scaling", "Pending", "Running")


@dataclass(frozen=True)
class DeploymentState:
    """What a Deployment's status says about its rollout."""

    exists: bool
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    available: bool = False
    observed: bool = False
    failed: str | None = None  # reason text when the rollout failed (deadline, replica failure)

    @property
    def rolled_out(self) -> bool:
        """Every desired replica is updated and ready, and the controller has seen the latest spec."""
        return (
            self.observed
            and self.updated == self.desired
            and self.replicas == self.desired
            and self.ready == self.desired
        )


def deployment_state(dep: JSON | None) -> DeploymentState:
    """Summarise a Deployment from its own conditions and observedGeneration. The cache keeps only what
    this reads of the conditions (common.compact_deployment)."""
    if dep is None:
        return DeploymentState(exists=False)
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    generation = (dep.get("metadata") or {}).get("generation") or 0
    conds = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, dict)}
    failed = None
    progressing = conds.get("Progressing")
    if progressing and progressing.get("status") == "False":
        failed = f"{progressing.get('reason', 'ProgressFailed')}: {progressing.get('message', '')}".strip()
    replica_failure = conds.get("ReplicaFailure")
    if replica_failure and replica_failure.get("status") == "True":
        failed = f"{replica_failure.get('reason', 'ReplicaFailure')}: {replica_failure.get('message', '')}"
    available = (conds.get("Available") or {}).get("status") == "True"
    return DeploymentState(
        exists=True,
        desired=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        available=available,
        observed=int(status.get("observedGeneration") or 0) >= int(generation),
        failed=failed,
    )


def owned_replica_counts(dep: JSON | None, owner_uid: str) -> JSON:
    """``replicas`` and ``readyReplicas`` for an owner's status, from the Deployment it controls.

    A reconcile that stops early (invalid spec, missing cluster) leaves the Deployment running: the owner's
    status still shows its pods (kubectl's REPLICAS/READY columns) instead of blanking them.
    """
    if dep is None:
        return {}
    ref = controller_ref(dep)
    if ref is None or ref.get("uid") != owner_uid:
        return {}
    state = deployment_state(dep)
    return {"replicas": state.replicas, "readyReplicas": state.ready}


def rollout_settled(dep: JSON) -> bool:
    """Whether a Deployment's status shows a finished rollout (every replica updated, ready, available)."""
    state = deployment_state(dep)
    return state.rolled_out and (state.available or state.desired == 0)


HEALTHY = ("Running", "Scaling", "Draining")


def workload_phase(state: DeploymentState, previous: str | None = None) -> str:
    """Running, Scaling, Pending or Degraded from one Deployment.

    ``previous`` is the owner's phase before this reconcile. A replica change of an object that was
    healthy (Running, Scaling, Draining) is Scaling while every pod that exists runs the current template
    (design.md §phases): ``kubectl scale`` and autoscaler decisions then keep Ready True. A new object, or one
    whose template is rolling out, stays Pending until its replicas are ready; a scale that never completes
    ends as Degraded when the Deployment's progress deadline passes.
    """
    if not state.exists:
        return "Pending"
    if state.failed:
        return "Degraded"
    if state.rolled_out and (state.available or state.desired == 0):
        return "Running"
    if (
        previous in HEALTHY
        and state.updated == state.replicas
        and (state.replicas != state.desired or state.ready < state.desired)
    ):
        # Unobserved too: the status then describes the previous generation, all of it current and the
        # count differing; a template change as well shows as updated < replicas once observed (Pending).
        return "Scaling"
    if (
        state.observed
        and state.ready > 0
        and state.updated == state.replicas
        and state.replicas != state.desired
    ):
        return "Scaling"
    if (
        state.observed
        and state.rolled_out is False
        and state.ready > 0
        and state.updated >= state.desired
        and state.replicas > state.desired
    ):
        return "Scaling"
    return "Pending"


def highest(*phases: str) -> str:
    """The phase that wins by precedence."""
    present = [p for p in phases if p]
    return min(present, key=PRECEDENCE.index) if present else "Pending"


def progress_message(state: DeploymentState, *, what: str, deployment: str) -> str:
    """What the Deployment still lacks, in words: which child, how many ready of how many."""
    if not state.exists:
        return f"the {what} Deployment {deployment} does not exist yet"
    counts = f"{state.ready} of {state.desired} {what} replicas ready"
    if state.failed:
        return f"the {what} Deployment {deployment} failed: {state.failed}"
    if not state.observed:
        return f"the {what} Deployment {deployment} has not observed its latest spec yet ({counts})"
    if state.updated < state.replicas or state.updated < state.desired:
        return (
            f"rolling out the {what} Deployment {deployment}: {state.updated} of {state.desired} "
            f"replicas updated, {counts}"
        )
    if state.replicas > state.desired:
        return f"the {what} Deployment {deployment} is scaling down to {state.desired}: {counts}"
    return f"the {what} Deployment {deployment}: {counts}"


def workload_conditions(
    phase: str,
    state: DeploymentState,
    *,
    what: str,
    problems: Sequence[tuple[str, str]] = (),
    conflicts: Sequence[str] = (),
    generation: int,
    deployment: str = "",
    waiting: Sequence[str] = (),
    degraded: Sequence[tuple[str, str]] = (),
) -> list[JSON]:
    """Ready, Available, Progressing and Degraded of an owner whose workload is one Deployment.

    ``problems`` are (reason, message) pairs that make the owner an Error (the first reason is Ready's);
    ``conflicts`` are children that exist without our ownership; ``what`` names the replicas ("server") and
    ``deployment`` the Deployment; ``waiting`` says what else is missing (an embedded Redis, an unbound
    claim); ``degraded`` are (reason, message) pairs of other problems that leave the workload running.
    Ready is True while Running, Scaling or Draining (design.md §phases); its message says what is missing
    otherwise.
    """
    ready = phase in HEALTHY
    if phase == "Running":
        ready_reason = "Running"
    elif problems:
        ready_reason = problems[0][0]
    elif conflicts:
        ready_reason = "NameConflict"
    elif degraded:
        ready_reason = degraded[0][0]
    else:
        ready_reason = phase
    progress = progress_message(state, what=what, deployment=deployment or what)
    if phase == "Running" and not (conflicts or degraded):
        ready_msg = f"{state.ready}/{state.desired} {what} replicas ready"
    else:
        ready_msg = "; ".join(
            [m for _, m in problems] + list(conflicts) + [m for _, m in degraded] + list(waiting)
        ) or (progress if phase != "Running" else "")
    degraded_msg = "; ".join(list(conflicts) + [m for _, m in degraded]) or state.failed or ""
    degraded_reason = (
        "NameConflict"
        if conflicts
        else (degraded[0][0] if degraded else ("RolloutFailed" if state.failed else "AsExpected"))
    )
    return [
        condition("Ready", ready, ready_reason, ready_msg, generation=generation),
        condition(
            "Available",
            state.available,
            "MinimumReplicasAvailable" if state.available else "MinimumReplicasUnavailable",
            f"{state.ready}/{state.desired} {what} replicas ready",
            generation=generation,
        ),
        condition(
            "Progressing",
            not state.rolled_out and not state.failed,
            "RolloutInProgress" if not state.rolled_out else "RolloutComplete",
            state.failed or "",
            generation=generation,
        ),
        condition(
            "Degraded",
            bool(conflicts or degraded or state.failed),
            degraded_reason,
            degraded_msg,
            generation=generation,
        ),
    ]


@dataclass(frozen=True)
class StatusResult:
    """What a reconcile writes: the phase, the conditions in order, and the other status fields."""

    phase: str
    conditions: list[JSON]
    fields: JSON


def kept_fields(previous: Mapping[str, Any], keys: Sequence[str]) -> JSON:
    """The fields of a failed or missing poll: the last known counts stay as they were."""
    return {k: previous[k] for k in keys if k in previous}


@dataclass(frozen=True)
class ClusterStatusInputs:
    """Everything one reconcile of an OJSCluster observed and decided, for :func:`cluster_status`.

    ``left_alone`` names what a name conflict made the reconcile leave as it is ("queue-stats polling"
    among them when the server was not polled); ``extra_conditions`` (monitoring) and
    ``replicas_managed`` come from the reconciler's other steps, in that order after the rest.
    """

    name: str
    generation: int
    previous: Mapping[str, Any]  # the status before this reconcile
    server_deployment: JSON | None
    server_name: str
    embedded_redis: bool
    redis_deployment: JSON | None
    redis_name: str
    claim: JSON | None
    backend_ok: bool
    autoscaling: JSON
    replicas_managed: JSON
    selector: str
    endpoint: str
    image: str
    stats: PollResult | None
    last_scale: str | None
    problems: Sequence[tuple[str, str]] = ()
    conflicts: Sequence[str] = ()
    left_alone: Sequence[str] = ()
    degraded: Sequence[tuple[str, str]] = ()
    extra_conditions: Sequence[JSON] = field(default_factory=tuple)


def cluster_autoscaling_condition(
    *,
    enabled: bool,
    replicas: int | None,
    effective_replicas: int,
    target_queue_depth: int,
    min_replicas: int,
    max_replicas: int,
    generation: int,
) -> JSON:
    """Who decides the server replicas (design.md §field-managers, as for workers): spec.replicas (so the
    scale subresource) when autoscaling is off; the queue depth when it is on, and then a spec.replicas
    change (`kubectl scale ojs`) is ignored and the condition says so."""
    if not enabled:
        return condition(
            "Autoscaling",
            False,
            "Disabled",
            f"replicas come from spec.replicas ({effective_replicas})",
            generation=generation,
        )
    msg = (
        f"server replicas follow the total queue depth ({target_queue_depth} jobs per server, "
        f"{min_replicas}-{max_replicas} servers)"
    )
    if replicas is not None:
        msg += (
            f"; spec.replicas {replicas} is ignored while autoscaling is enabled: it was only "
            "the initial value"
        )
    return condition("Autoscaling", True, "QueueDepth", msg, generation=generation)


@dataclass(frozen=True)
class BackendState:
    """What the backend adds to a cluster's status: BackendReady, the phase it asks for at least, and what
    the cluster still waits for."""

    ready: bool
    message: str
    phase: str | None = None
    waiting: tuple[str, ...] = ()


def backend_state(inputs: ClusterStatusInputs) -> BackendState:
    """The backend's readiness: configured (its Secrets exist), and for an embedded Redis, available (an
    unbound claim says why not); a failed Redis rollout degrades the cluster, one not up yet holds it
    Pending."""
    if not inputs.embedded_redis:
        return BackendState(inputs.backend_ok, "backend configured")
    redis = deployment_state(inputs.redis_deployment)
    if redis.available:
        message = "embedded Redis available"
    else:
        message = (
            f"embedded Redis Deployment {inputs.redis_name} not available yet ({redis.ready} of 1 ready)"
        )
        unbound = unbound_claim_message(inputs.claim)
        if unbound is not None:
            message += f": {unbound}"
    if redis.failed:
        return BackendState(inputs.backend_ok and redis.available, message, "Degraded")
    if not redis.available:
        return BackendState(False, message, "Pending", (message,))
    return BackendState(inputs.backend_ok, message)


POLLED_REASONS = frozenset({"Polled", "ServerUnreachable", "APIKeyRejected"})
"""QueueStatsAvailable reasons that only a poll writes: a status with one of them records a cluster polled
before (the poller's first poll of it after a restart need not wait for a ready server)."""


def queue_stats_status(inputs: ClusterStatusInputs) -> tuple[JSON, JSON]:
    """QueueStatsAvailable and the queue fields: counted from a successful poll, else kept as they were
    (a key the server refuses is no outage: the reason says so, so nobody chases the network)."""
    gen, stats = inputs.generation, inputs.stats
    if stats is not None and stats.ok:
        fields: JSON = {
            "queueDepth": sum(available for available, _ in stats.queues.values()),
            "activeJobs": sum(active for _, active in stats.queues.values()),
            "queues": top_queues(stats.queues),
        }
        polled = "queue counts read from the server"
        return condition("QueueStatsAvailable", True, "Polled", polled, generation=gen), fields
    if "queue-stats polling" in inputs.left_alone:
        reason, msg = "NameConflict", f"Service {inputs.server_name} or its API key is not this cluster's"
    elif stats is None:
        # Not polled by this process yet. After a restart the last poll's finding stands until the next
        # poll says otherwise: rewriting it as "waiting" would be a status write per cluster that tells
        # nothing, and a flap of the condition for whoever watches it.
        prev = get_condition(inputs.previous.get("conditions"), "QueueStatsAvailable")
        if prev is not None and prev.get("reason") not in (None, "", "NameConflict"):
            kept = kept_fields(inputs.previous, ("queueDepth", "activeJobs", "queues"))
            was = condition(
                "QueueStatsAvailable",
                str(prev.get("status") or "Unknown"),
                str(prev["reason"]),
                str(prev.get("message") or ""),
                generation=gen,
            )
            return was, kept
        reason, msg = "NotPolledYet", "waiting for the first poll (made once a server pod is ready)"
    else:
        reason = "APIKeyRejected" if stats.reason == "Unauthorized" else "ServerUnreachable"
        msg = f"cannot read queue counts: {stats.error}"
    kept = kept_fields(inputs.previous, ("queueDepth", "activeJobs", "queues"))
    return condition("QueueStatsAvailable", False, reason, msg, generation=gen), kept


def cluster_status(inputs: ClusterStatusInputs) -> StatusResult:
    """An OJSCluster's phase, conditions and status fields from what one reconcile observed."""
    gen = inputs.generation
    state = deployment_state(inputs.server_deployment)
    backend = backend_state(inputs)
    phase = workload_phase(state, inputs.previous.get("phase"))
    if backend.phase is not None:
        phase = highest(phase, backend.phase)
    if inputs.conflicts or inputs.degraded:
        phase = highest(phase, "Degraded")
    if inputs.problems:
        phase = highest(phase, "Error")
    conflicts = list(inputs.conflicts)
    if inputs.left_alone:
        conflicts.append("left as they are while the name is taken: " + ", ".join(inputs.left_alone))
    conds = workload_conditions(
        phase,
        state,
        what="server",
        problems=inputs.problems,
        conflicts=conflicts,
        generation=gen,
        deployment=inputs.server_name,
        waiting=backend.waiting,
        degraded=inputs.degraded,
    )
    conds.append(
        condition(
            "BackendReady",
            backend.ready,
            "BackendReady" if backend.ready else "BackendNotReady",
            backend.message if inputs.backend_ok else "; ".join(m for _, m in inputs.problems),
            generation=gen,
        )
    )
    conds.append(inputs.autoscaling)
    stats_condition, stats_fields = queue_stats_status(inputs)
    conds.append(stats_condition)
    fields: JSON = {
        "replicas": state.replicas,
        "readyReplicas": state.ready,
        "selector": inputs.selector,
        "endpoint": inputs.endpoint,
        "image": inputs.image,
        **stats_fields,
    }
    if inputs.last_scale:
        fields["lastScaleTime"] = inputs.last_scale
    conds.extend(inputs.extra_conditions)
    conds.append(inputs.replicas_managed)
    return StatusResult(phase, conds, fields)
