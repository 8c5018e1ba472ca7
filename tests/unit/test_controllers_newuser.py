"""What a new user trips over (issue 17): phases while scaling, Ready's message, kept Redis data, foreign
writers of replicas, admission warnings and transition logs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from structlog.testing import capture_logs

from ojsctrl.api.validation import cluster_update_warnings
from ojsctrl.controllers.cluster_status import (
    deployment_state,
    progress_message,
    workload_conditions,
    workload_phase,
)
from ojsctrl.controllers.common import OJSCLUSTERS, StatusWriter, condition, foreign_replica_manager
from ojsctrl.controllers.storage import (
    RELEASED_ANNOTATION,
    adopt_patch,
    adoption_problem,
    claim_change_problem,
    grow_refused_message,
    is_released,
    release_patch,
    unbound_claim_message,
)
from ojsctrl.runtime.webhook import MAX_WARNING_LENGTH
from ojsctrl.webhooks.handlers import ClusterValidator
from tests.unit.test_controllers_status import dep
from tests.unit.test_webhook_handlers import CLUSTER, request, review_response

# --------------------------------------------------------------------------- phases while scaling


@pytest.mark.parametrize(
    ("obj", "previous", "phase"),
    [
        # kubectl scale 2 -> 4, observed: 4 pods of the current template, 2 ready.
        (dep(replicas=4, ready=2, updated=4, total=4, available="False"), "Running", "Scaling"),
        (dep(replicas=4, ready=2, updated=4, total=4, available="False"), "Scaling", "Scaling"),
        # ... the same counts on a new object are a first rollout: Pending.
        (dep(replicas=4, ready=2, updated=4, total=4, available="False"), None, "Pending"),
        (dep(replicas=4, ready=2, updated=4, total=4, available="False"), "Pending", "Pending"),
        # Not observed yet: the status still shows the previous generation, complete.
        (dep(replicas=4, gen=2, observed=1), "Running", "Scaling"),
        # From zero (queue-depth autoscaling with minReplicas 0): no pod is ready yet, still Scaling.
        (dep(replicas=2, ready=0, updated=2, total=2, available="False"), "Running", "Scaling"),
        # Scale down: more pods than wanted.
        (dep(replicas=1, ready=2, updated=2, total=2), "Running", "Scaling"),
        (dep(replicas=1, ready=2, updated=2, total=2), "Draining", "Scaling"),
        # A template rollout is not a scale, whatever came before.
        (dep(updated=1, ready=2, total=3, replicas=2), "Running", "Pending"),
        # A template change not observed yet (same count): Pending as before.
        (dep(gen=2, observed=1), "Running", "Pending"),
        # A scale that never finishes ends as the Deployment's failure.
        (
            dep(
                replicas=4,
                ready=2,
                updated=4,
                total=4,
                progressing="False",
                reason="ProgressDeadlineExceeded",
            ),
            "Scaling",
            "Degraded",
        ),
        (dep(), "Scaling", "Running"),
        (None, "Running", "Pending"),
    ],
)
def test_phase_while_scaling(obj: dict[str, Any] | None, previous: str | None, phase: str) -> None:
    assert workload_phase(deployment_state(obj), previous) == phase


def _conds(phase: str, obj: dict[str, Any] | None, **kw: Any) -> dict[str, dict[str, Any]]:
    kw.setdefault("what", "worker")
    kw.setdefault("deployment", "w-worker")
    return {c["type"]: c for c in workload_conditions(phase, deployment_state(obj), generation=1, **kw)}


@pytest.mark.parametrize(
    ("phase", "obj", "kw", "ready", "reason", "message"),
    [
        ("Running", dep(), {}, "True", "Running", "2/2 worker replicas ready"),
        (
            "Scaling",
            dep(replicas=4, ready=2, updated=4, total=4),
            {},
            "True",
            "Scaling",
            "the worker Deployment w-worker: 2 of 4 worker replicas ready",
        ),
        (
            "Scaling",
            dep(replicas=1, ready=2, updated=2, total=2),
            {},
            "True",
            "Scaling",
            "the worker Deployment w-worker is scaling down to 1: 2 of 1 worker replicas ready",
        ),
        ("Draining", dep(replicas=1, ready=2, updated=2, total=2), {}, "True", "Draining", None),
        (
            "Pending",
            dep(updated=1, ready=1, total=2),
            {},
            "False",
            "Pending",
            "rolling out the worker Deployment w-worker: "
            "1 of 2 replicas updated, 1 of 2 worker replicas ready",
        ),
        ("Pending", None, {}, "False", "Pending", "the worker Deployment w-worker does not exist yet"),
        (
            "Pending",
            dep(gen=3, observed=2),
            {},
            "False",
            "Pending",
            "the worker Deployment w-worker has not observed its latest spec yet "
            "(2 of 2 worker replicas ready)",
        ),
        (
            "Pending",
            dep(),
            {"waiting": ["embedded Redis Deployment c-redis not available yet (0 of 1 ready)"]},
            "False",
            "Pending",
            "embedded Redis Deployment c-redis not available yet (0 of 1 ready)",
        ),
        (
            "Degraded",
            dep(),
            {"degraded": [("StorageChangeRefused", "spec.backend.redis.storage.size: cannot shrink")]},
            "False",
            "StorageChangeRefused",
            "spec.backend.redis.storage.size: cannot shrink",
        ),
    ],
)
def test_ready_says_what_is_missing(
    phase: str,
    obj: dict[str, Any] | None,
    kw: dict[str, Any],
    ready: str,
    reason: str,
    message: str | None,
) -> None:
    conds = _conds(phase, obj, **kw)
    assert conds["Ready"]["status"] == ready
    assert conds["Ready"]["reason"] == reason
    if message is not None:
        assert conds["Ready"]["message"] == message
    assert "phase " not in conds["Ready"]["message"]


def test_storage_refusal_is_a_degraded_condition() -> None:
    conds = _conds("Degraded", dep(), degraded=[("StorageChangeRefused", "class cannot change")])
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "StorageChangeRefused"
    assert conds["Degraded"]["message"] == "class cannot change"


def test_progress_message_of_a_failed_rollout_names_the_deployment() -> None:
    state = deployment_state(dep(progressing="False", reason="ProgressDeadlineExceeded"))
    msg = progress_message(state, what="server", deployment="c-server")
    assert msg.startswith("the server Deployment c-server failed: ProgressDeadlineExceeded")


# --------------------------------------------------------------------------- foreign writers of replicas

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def managed(*entries: tuple[str, str | None, str, bool]) -> dict[str, Any]:
    fields = []
    for manager, sub, when, replicas in entries:
        spec: dict[str, Any] = {"f:replicas": {}} if replicas else {"f:template": {}}
        e: dict[str, Any] = {
            "manager": manager,
            "operation": "Update",
            "time": when,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": spec},
        }
        if sub:
            e["subresource"] = sub
        fields.append(e)
    return {"metadata": {"managedFields": fields}}


@pytest.mark.parametrize(
    ("obj", "found"),
    [
        (managed(("ojsctrl", None, "2027-01-15T07:59:00Z", True)), None),
        (managed(("ojsctrl-autoscaler", None, "2027-01-15T07:59:00Z", True)), None),
        (managed(("kubectl", "scale", "2027-01-15T07:59:50Z", True)), "kubectl (via /scale)"),
        # The HPA controller's entry outlives the HPA: HPAs are checked on their own.
        (managed(("kube-controller-manager", "scale", "2027-01-15T07:59:50Z", True)), None),
        (managed(("kubectl-edit", None, "2027-01-15T07:58:00Z", True)), "kubectl-edit"),
        # A one-off edit long ago is not a live writer: ojsctrl takes the field back.
        (managed(("kubectl-edit", None, "2027-01-15T07:00:00Z", True)), None),
        # Another manager owning other fields is not a replica writer.
        (managed(("helm", None, "2027-01-15T07:59:00Z", False)), None),
        ({"metadata": {}}, None),
    ],
)
def test_foreign_replica_manager(obj: dict[str, Any], found: str | None) -> None:
    assert foreign_replica_manager(obj, NOW) == found


# --------------------------------------------------------------------------- kept Redis data

OWNER_UID = "uid-c"


def claim(
    *,
    size: str = "1Gi",
    cls: str | None = "standard",
    owner: str | None = OWNER_UID,
    released: bool = False,
    phase: str = "Bound",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "c-redis", "namespace": "ns", "resourceVersion": "42", "annotations": {}}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "ojs.openjobspec.dev/v1alpha1",
                "kind": "OJSCluster",
                "name": "c",
                "uid": owner,
                "controller": True,
            }
        ]
    if released:
        meta["annotations"][RELEASED_ANNOTATION] = "2026-12-05T10:00:00Z: storage removed"
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if cls:
        spec["storageClassName"] = cls
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def test_release_removes_only_our_controller_reference_and_says_why() -> None:
    live = claim()
    live["metadata"]["ownerReferences"].append({"kind": "Other", "uid": "x", "name": "o"})
    patch = release_patch(live, OWNER_UID, "spec.backend.redis.storage was removed", "T")
    assert patch == {
        "metadata": {
            "resourceVersion": "42",
            "ownerReferences": [{"kind": "Other", "uid": "x", "name": "o"}],
            "annotations": {RELEASED_ANNOTATION: "T: spec.backend.redis.storage was removed"},
        }
    }
    only_ours = release_patch(claim(), OWNER_UID, "r", "T")
    assert only_ours is not None and only_ours["metadata"]["ownerReferences"] is None
    # Not ours (another controller, or none): nothing to release.
    assert release_patch(claim(owner="someone-else"), OWNER_UID, "r", "T") is None
    assert release_patch(claim(owner=None), OWNER_UID, "r", "T") is None


def test_released_objects_are_recognised_and_adopted_back() -> None:
    kept = claim(owner=None, released=True)
    assert is_released(kept)
    assert not is_released(claim(released=True))  # still controlled
    assert not is_released(claim(owner=None))  # a stranger's claim by that name: a conflict, not ours
    assert not is_released(None)
    ref = {"kind": "OJSCluster", "uid": "new", "controller": True}
    assert adopt_patch(kept, ref) == {
        "metadata": {
            "resourceVersion": "42",
            "ownerReferences": [ref],
            "annotations": {RELEASED_ANNOTATION: None},
        }
    }


@pytest.mark.parametrize(
    ("live", "wanted", "problem"),
    [
        (claim(), claim(), None),
        (claim(), claim(size="2Gi"), None),  # growth: the API server decides (expansion, binding)
        (claim(), claim(cls=None), None),  # no class asked for: any class fits
        (claim(size="2Gi"), claim(size="2048Mi"), None),
        (
            claim(),
            claim(cls="fast"),
            "storageClassName: PersistentVolumeClaim c-redis has storage class 'standard'",
        ),
        (claim(size="2Gi"), claim(size="1Gi"), "storage.size: PersistentVolumeClaim c-redis requests 2Gi"),
    ],
)
def test_claim_change_problem(live: dict[str, Any], wanted: dict[str, Any], problem: str | None) -> None:
    found = claim_change_problem(live, wanted)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert found.startswith("spec.backend.redis.storage.")


def test_adoption_needs_a_fitting_claim() -> None:
    kept = claim(owner=None, released=True, size="2Gi")
    assert adoption_problem(kept, claim(size="2Gi")) is None
    assert adoption_problem(kept, claim(size="4Gi")) is None
    msg = adoption_problem(kept, claim(size="1Gi"))
    assert msg is not None and "was released earlier" in msg and "kubectl delete pvc c-redis" in msg


def test_refused_growth_is_explained_without_the_diff() -> None:
    api = (
        'PersistentVolumeClaim "c-redis" is invalid: spec: Forbidden: spec is immutable ... '
        '{"AccessModes": ...}'
    )
    pending = grow_refused_message(claim(phase="Pending"), claim(size="2Gi"), api)
    assert "cannot grow from 1Gi to 2Gi" in pending and "Pending, not Bound" in pending
    assert "AccessModes" not in pending
    bound = grow_refused_message(claim(), claim(size="2Gi"), "forbidden: only dynamically provisioned pvc")
    assert "allowVolumeExpansion: true" in bound and "set the size back to 1Gi" in bound


def test_unbound_claim_is_named() -> None:
    assert unbound_claim_message(claim()) is None
    assert unbound_claim_message(None) is None
    msg = unbound_claim_message(claim(phase="Pending", cls=None))
    assert msg is not None
    assert msg.startswith("PersistentVolumeClaim c-redis is Pending, not bound")
    assert "default StorageClass" in msg and "kubectl describe pvc c-redis" in msg


# --------------------------------------------------------------------------- admission warnings


def _with(storage: dict[str, Any] | None = None, embedded: bool = True) -> dict[str, Any]:
    obj = copy.deepcopy(CLUSTER)
    obj["metadata"]["name"] = "c"
    obj["spec"]["backend"] = {"type": "redis", "embedded": embedded}
    if not embedded:
        obj["spec"]["backend"]["url"] = "redis://elsewhere:6379"
    if storage is not None:
        obj["spec"]["backend"]["redis"] = {"storage": storage}
    return obj


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            _with({"size": "1Gi"}),
            _with(),
            ["PersistentVolumeClaim c-redis is kept", "kubectl delete pvc c-redis"],
        ),
        (
            _with({"size": "1Gi"}),
            _with(embedded=False),
            ["Deployment and Service c-redis are deleted", "kubectl delete pvc,secret c-redis"],
        ),
        (
            _with(),
            _with(embedded=False),
            ["data lives only in its pod", "kubectl delete deployment,service,secret c-redis"],
        ),
        (_with({"size": "2Gi"}), _with({"size": "1Gi"}), ["cannot shrink below 2Gi"]),
        (_with({"size": "1Gi"}), _with({"size": "2Gi"}), ["allows volume expansion"]),
        (
            _with({"size": "1Gi", "storageClassName": "a"}),
            _with({"size": "1Gi", "storageClassName": "b"}),
            ["keeps class 'a'"],
        ),
        (_with({"size": "1Gi"}), _with({"size": "1Gi"}), []),
        (_with(), _with({"size": "1Gi"}), []),
        (_with(embedded=False), _with(), []),
    ],
)
def test_update_warnings_before_giving_up_redis_data(
    old: dict[str, Any], new: dict[str, Any], expected: list[str]
) -> None:
    direct = cluster_update_warnings(new, old)
    for text in expected:
        assert any(text in w for w in direct), (text, direct)
    if not expected:
        assert direct == []
    # Through the admission handler: allowed, every warning whole (the API server cuts at 256).
    out = review_response(ClusterValidator()(request(new, operation="UPDATE", old=old)))
    assert out["allowed"] is True
    for w in direct:
        assert len(w) <= MAX_WARNING_LENGTH
        assert w in out.get("warnings", [])
    # A create has nothing to lose.
    created = review_response(ClusterValidator()(request(new)))
    assert not any(w in created.get("warnings", []) for w in direct)


# --------------------------------------------------------------------------- transition logs


def test_status_transitions_are_logged_once_each() -> None:
    writer = StatusWriter(None, OJSCLUSTERS, None)  # type: ignore[arg-type]  # _transition does no I/O
    obj = {"metadata": {"name": "c", "namespace": "ns"}}

    def ready(status: bool, reason: str, message: str = "") -> list[dict[str, Any]]:
        return [condition("Ready", status, reason, message)]

    with capture_logs() as logs:
        assert writer._transition(obj, "Pending", ready(False, "Pending"))[0]
        assert not writer._transition(obj, "Pending", ready(False, "Pending"))[0]
        assert writer._transition(
            obj, "Error", ready(False, "SecretNotFound", "spec.auth: Secret k not found")
        )[0]
        assert not writer._transition(
            obj, "Error", ready(False, "SecretNotFound", "spec.auth: Secret k not found")
        )[0]
        assert writer._transition(obj, "Error", ready(False, "InvalidSpec", "x"))[0]
        assert writer._transition(obj, "Running", ready(True, "Running"))[0]
        writer.forget("ns/c")
        assert writer._transition(obj, "Running", ready(True, "Running"))[0]
    assert [(e["event"], e.get("reason"), e["log_level"]) for e in logs] == [
        ("phase changed", "Pending", "info"),
        ("problem found", "SecretNotFound", "warning"),
        ("problem found", "InvalidSpec", "warning"),
        ("problem cleared", "Running", "info"),
        ("phase changed", "Running", "info"),
    ]
    assert logs[1]["object"] == "ns/c" and logs[1]["message"] == "spec.auth: Secret k not found"
    assert logs[3]["previous_reason"] == "InvalidSpec"


def test_after_a_restart_an_unchanged_status_is_not_logged_again() -> None:
    # A new process has reported nothing yet: the status on record is what was reported before it.
    writer = StatusWriter(None, OJSCLUSTERS, None)  # type: ignore[arg-type]  # _transition does no I/O
    running = [condition("Ready", True, "Running")]
    recorded = {
        "metadata": {"name": "c", "namespace": "ns"},
        "status": {"phase": "Running", "conditions": running},
    }
    with capture_logs() as logs:
        assert not writer._transition(recorded, "Running", running)[0]
        assert writer._transition(recorded, "Degraded", [condition("Ready", False, "Unavailable")])[0]
    assert [(e["event"], e["phase"], e["previous_phase"]) for e in logs] == [
        ("problem found", "Degraded", "Running")
    ]


def test_restored_edit_is_a_write_of_an_unchanged_body() -> None:
    from ojsctrl.controllers.children import restored_edit
    from ojsctrl.controllers.common import HASH_ANNOTATION

    def obj(digest: str | None) -> dict[str, Any]:
        return {"metadata": {"annotations": {HASH_ANNOTATION: digest} if digest else {}}}

    assert restored_edit(True, obj("a"), obj("a"))  # same body written again: someone had edited it
    assert not restored_edit(True, obj("a"), obj("b"))  # the spec changed the body
    assert not restored_edit(False, obj("a"), obj("a"))  # nothing written
    assert not restored_edit(True, None, obj("a"))  # created
    assert not restored_edit(True, obj(None), obj("a"))  # first apply of a child made before hashes
