"""Pure status logic of an OJSWorker: phase, conditions and status fields from what one reconcile
observed and decided. The reconciler only writes the result.

An OJSWorker has no Degraded phase (the CRD's enum refuses it): the status writer turns it into Error, and
the Degraded condition says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ojsctrl.api.worker import OPERATOR_METRICS
from ojsctrl.controllers.cluster_status import (
    StatusResult,
    deployment_state,
    highest,
    kept_fields,
    workload_conditions,
    workload_phase,
)
from ojsctrl.controllers.common import condition
from ojsctrl.runtime.client import JSON


@dataclass(frozen=True)
class WorkerStatusInputs:
    """Everything one reconcile of an OJSWorker observed and decided, for :func:`worker_status`.

    ``scaling`` is the Autoscaling condition the queue-depth autoscaler decided this reconcile (None when it
    did not run); ``matching`` the WorkersMatched condition to show (None when drain is off);
    ``queue_load`` the (available, active) jobs of the worker's queues from a successful poll;
    ``autoscaling`` the ``status.autoscaling`` block of the decision the operator's autoscaler made this
    reconcile (None when it did not decide: the last one is kept while it still autoscales).
    """

    cluster_name: str
    generation: int
    previous: Mapping[str, Any]  # the status before this reconcile
    deployment: JSON | None
    deployment_name: str
    selector: str
    autoscaling_enabled: bool
    metric: str
    cpu_utilization: int | None
    spec_replicas: int | None
    spec_sets_replicas: bool  # spec.replicas is in the object (not only the default)
    replicas_managed: JSON
    scaling: JSON | None = None
    matching: JSON | None = None
    scaled: bool = False  # this reconcile wrote a new replica count
    draining: bool = False
    desired: int | None = None
    queue_load: tuple[int, int] | None = None
    last_scale: str | None = None
    autoscaling: JSON | None = None
    problems: Sequence[tuple[str, str]] = ()
    conflicts: Sequence[str] = ()


def worker_autoscaling_condition(inputs: WorkerStatusInputs) -> JSON:
    """Autoscaling: the autoscaler's own word when it ran, else what decides the replicas."""
    gen = inputs.generation
    if inputs.scaling is not None:
        cond = dict(inputs.scaling)
        if inputs.spec_sets_replicas:
            cond["message"] += (
                f" (spec.replicas {inputs.spec_replicas} is ignored while autoscaling is "
                "enabled: it was only the initial value)"
            )
        return cond
    if inputs.autoscaling_enabled and inputs.metric == "cpu":
        return condition(
            "Autoscaling",
            True,
            "HorizontalPodAutoscaler",
            f"CPU utilisation target {inputs.cpu_utilization}% via HPA {inputs.deployment_name}",
            generation=gen,
        )
    if inputs.autoscaling_enabled:
        return condition(
            "Autoscaling", False, "WaitingForStats", "waiting for the first poll", generation=gen
        )
    return condition("Autoscaling", False, "Disabled", "replicas come from spec.replicas", generation=gen)


def worker_status(inputs: WorkerStatusInputs) -> StatusResult:
    """An OJSWorker's phase, conditions and status fields from what one reconcile observed."""
    gen = inputs.generation
    state = deployment_state(inputs.deployment)
    phase = workload_phase(state, inputs.previous.get("phase"))
    if inputs.scaled and phase == "Pending" and state.ready > 0:
        # This reconcile changed only the replica count; until the deployment controller observes
        # it the Deployment looks unobserved, but the workers are serving: that is Scaling.
        phase = "Scaling"
    if inputs.draining:
        phase = highest(phase, "Draining")
    if inputs.conflicts:
        phase = highest(phase, "Degraded")
    if inputs.problems:
        phase = highest(phase, "Error")
    conds = workload_conditions(
        phase,
        state,
        what="worker",
        problems=inputs.problems,
        conflicts=inputs.conflicts,
        generation=gen,
        deployment=inputs.deployment_name,
    )
    conds.append(
        condition("ClusterFound", True, "ClusterFound", f"OJSCluster {inputs.cluster_name}", generation=gen)
    )
    if inputs.matching is not None:
        conds.append(inputs.matching)
    conds.append(inputs.replicas_managed)
    conds.append(worker_autoscaling_condition(inputs))
    fields: JSON = {"replicas": state.replicas, "readyReplicas": state.ready, "selector": inputs.selector}
    if inputs.desired is not None:
        fields["desiredReplicas"] = inputs.desired
    elif not inputs.autoscaling_enabled:
        fields["desiredReplicas"] = inputs.spec_replicas
    else:
        fields.update(kept_fields(inputs.previous, ("desiredReplicas",)))
    if inputs.queue_load is not None:
        fields["queueDepth"], fields["activeJobs"] = inputs.queue_load
    else:
        fields.update(kept_fields(inputs.previous, ("queueDepth", "activeJobs")))
    if inputs.last_scale:
        fields["lastScaleTime"] = inputs.last_scale
    if inputs.autoscaling is not None:
        fields["autoscaling"] = dict(inputs.autoscaling)
    elif inputs.autoscaling_enabled and inputs.metric in OPERATOR_METRICS:
        # Not decided this reconcile (no poll yet, replicas held by another writer): the last decision
        # still explains the replicas. With cpu or autoscaling off it no longer does, and goes.
        fields.update(kept_fields(inputs.previous, ("autoscaling",)))
    return StatusResult(phase, conds, fields)


def scaling_status_hold(
    deferred_at: float | None,
    now: float,
    result: StatusResult,
    previous: Mapping[str, Any],
    generation: int,
    grace: float,
) -> float | None:
    """Seconds to hold the status of a scaling written at ``deferred_at`` (monotonic), or None to write it
    now. Held only while the new count rolls out normally (phase Scaling: no problem, conflict or drain,
    which rank above it) over a healthy status on record with the same spec: the rollout's end then
    writes the scaling and its outcome together. A rollout that outlasts ``grace`` (the operator's
    ``--status-min-interval``) shows as Scaling."""
    if deferred_at is None or result.phase != "Scaling":
        return None
    if previous.get("phase") not in ("Running", "Scaling"):
        return None
    if previous.get("observedGeneration") != generation:
        return None
    left = grace - (now - deferred_at)
    return left if left > 0 else None
