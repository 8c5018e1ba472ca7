"""Event filters: a reconciler wakes only for changes it reads (children's status steps nobody reads,
resourceVersion/managedFields-only writes and a cluster's polled numbers wake no one)."""

from __future__ import annotations

import copy
import itertools
from typing import Any, cast

import pytest

from ojsctrl.api.common import API_VERSION
from ojsctrl.controllers.children import (
    child_update_matters,
    cluster_ready_changed,
    cluster_update_matters_to_workers,
    not_own_echo,
)
from ojsctrl.runtime.apply import Applier
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    HPAS,
    PDBS,
    PVCS,
    SERVICES,
    Client,
)
from ojsctrl.runtime.controller import Controller, Request
from ojsctrl.runtime.informer import Informer

JSON = dict[str, Any]
_names = itertools.count()


def deployment(**status: Any) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "namespace": "ns",
            "name": "w-worker",
            "resourceVersion": "10",
            "generation": 2,
            "labels": {"app.kubernetes.io/managed-by": "ojsctrl"},
            "annotations": {"ojs.openjobspec.dev/applied-hash": "abc"},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": "OJSWorker", "name": "w", "uid": "u1", "controller": True}
            ],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "w", "image": "i:1"}]}}},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "conditions": [
                {
                    "type": "Available",
                    "status": "False",
                    "lastUpdateTime": "t1",
                    "reason": "MinimumReplicasUnavailable",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "lastUpdateTime": "t1",
                    "reason": "ReplicaSetUpdated",
                },
            ],
            **status,
        },
    }


def changed(obj: JSON, fn: Any) -> JSON:
    new = copy.deepcopy(obj)
    fn(new)
    return new


def _set(path: str, value: Any) -> Any:
    def apply(o: JSON) -> None:
        *parents, last = path.split(".")
        for p in parents:
            o = o.setdefault(p, {})
        o[last] = value

    return apply


DEP = deployment()


@pytest.mark.parametrize(
    ("what", "new", "expected"),
    [
        ("resourceVersion only", changed(DEP, _set("metadata.resourceVersion", "11")), False),
        (
            "managedFields only",
            changed(DEP, _set("metadata.managedFields", [{"manager": "kubectl", "time": "t2"}])),
            False,
        ),
        (
            "a condition's lastUpdateTime only",
            changed(DEP, lambda o: o["status"]["conditions"][1].update(lastUpdateTime="t2")),
            False,
        ),
        ("a status field not read", changed(DEP, _set("status.collisionCount", 1)), False),
        ("readyReplicas", changed(DEP, _set("status.readyReplicas", 2)), True),
        ("observedGeneration", changed(DEP, _set("status.observedGeneration", 1)), True),
        (
            "Available turns True",
            changed(DEP, lambda o: o["status"]["conditions"][0].update(status="True")),
            True,
        ),
        (
            "Progressing fails",
            changed(DEP, lambda o: o["status"]["conditions"][1].update(status="False")),
            True,
        ),
        ("spec.replicas by hand", changed(DEP, _set("spec.replicas", 5)), True),
        ("an annotation", changed(DEP, _set("metadata.annotations", {"team": "x"})), True),
        (
            "the Deployment controller's revision",
            changed(
                DEP, lambda o: o["metadata"]["annotations"].update({"deployment.kubernetes.io/revision": "1"})
            ),
            False,
        ),
        ("a label", changed(DEP, _set("metadata.labels", {})), True),
        ("the owner reference", changed(DEP, _set("metadata.ownerReferences", [])), True),
        ("deletion started", changed(DEP, _set("metadata.deletionTimestamp", "t3")), True),
    ],
)
def test_deployment_updates(what: str, new: JSON, expected: bool) -> None:
    assert child_update_matters(DEPLOYMENTS)("update", DEP, new) is expected, what


def test_adds_deletes_and_resyncs_always_pass() -> None:
    pred = child_update_matters(DEPLOYMENTS)
    assert pred("add", None, DEP)
    assert pred("delete", DEP, None)
    assert pred("update", DEP, DEP)


@pytest.mark.parametrize("resource", [SERVICES, PDBS, HPAS, CONFIGMAPS])
def test_status_of_other_children_is_never_read(resource: Any) -> None:
    obj: JSON = {
        "metadata": {"namespace": "ns", "name": "x", "resourceVersion": "1"},
        "spec": {"a": 1},
        "status": {"currentHealthy": 1, "currentMetrics": [{"value": 1}]},
    }
    pred = child_update_matters(resource)
    status_step = changed(
        obj,
        lambda o: o.update(status={"currentHealthy": 2}, metadata={**o["metadata"], "resourceVersion": "2"}),
    )
    assert pred("update", obj, status_step) is False
    assert pred("update", obj, changed(obj, _set("spec.a", 2))) is True
    assert pred("update", obj, changed(obj, _set("data", {"k": "v"}))) is True


def test_pvc_phase_is_read() -> None:
    pvc: JSON = {
        "metadata": {"name": "d", "resourceVersion": "1"},
        "spec": {},
        "status": {"phase": "Pending"},
    }
    pred = child_update_matters(PVCS)
    assert pred("update", pvc, changed(pvc, _set("status.phase", "Bound"))) is True
    assert pred("update", pvc, changed(pvc, _set("status.capacity", {"storage": "1Gi"}))) is False


def cluster_obj() -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": "OJSCluster",
        "metadata": {"namespace": "ns", "name": "jobs", "uid": "c1", "generation": 1, "resourceVersion": "5"},
        "spec": {"backend": {"type": "memory"}},
        "status": {
            "phase": "Running",
            "replicas": 1,
            "queues": [{"name": "q", "available": 3}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Running",
                    "message": "",
                    "lastTransitionTime": "t",
                },
                {"type": "MonitoringReady", "status": "True", "reason": "Ok", "message": ""},
            ],
        },
    }


CLUSTER = cluster_obj()


@pytest.mark.parametrize(
    ("what", "new", "expected", "ready_only"),
    [
        (
            "polled queue numbers",
            changed(CLUSTER, _set("status.queues", [{"name": "q", "available": 9}])),
            False,
            False,
        ),
        ("replica counts", changed(CLUSTER, _set("status.replicas", 2)), False, False),
        ("phase only", changed(CLUSTER, _set("status.phase", "Scaling")), False, False),
        (
            "another condition",
            changed(CLUSTER, lambda o: o["status"]["conditions"][1].update(status="False")),
            False,
            False,
        ),
        ("resourceVersion only", changed(CLUSTER, _set("metadata.resourceVersion", "6")), False, False),
        (
            "Ready turns False",
            changed(
                CLUSTER, lambda o: o["status"]["conditions"][0].update(status="False", reason="Degraded")
            ),
            False,
            True,
        ),
        (
            "Ready's message",
            changed(CLUSTER, lambda o: o["status"]["conditions"][0].update(message="server down")),
            False,
            True,
        ),
        (
            "spec (the API key, the backend...)",
            changed(CLUSTER, _set("spec.auth", {"enabled": True})),
            True,
            False,
        ),
        ("an annotation", changed(CLUSTER, _set("metadata.annotations", {"a": "b"})), True, False),
        ("recreated (new uid)", changed(CLUSTER, _set("metadata.uid", "c2")), True, False),
        (
            "recreated, Ready too",
            changed(
                changed(CLUSTER, _set("metadata.uid", "c2")),
                lambda o: o["status"]["conditions"][0].update(status="False"),
            ),
            True,
            False,
        ),
    ],
)
def test_cluster_updates_seen_by_workers(what: str, new: JSON, expected: bool, ready_only: bool) -> None:
    """Every worker of the cluster wakes for ``expected``; only those waiting for the API key (the only
    readers of the Ready condition) for ``ready_only``; never both for one update."""
    assert cluster_update_matters_to_workers("update", CLUSTER, new) is expected, what
    assert cluster_ready_changed("update", CLUSTER, new) is ready_only, what


def test_cluster_resync_does_not_wake_workers_but_add_and_delete_do() -> None:
    assert cluster_update_matters_to_workers("update", CLUSTER, CLUSTER) is False
    assert cluster_update_matters_to_workers("add", None, CLUSTER) is True
    assert cluster_update_matters_to_workers("delete", CLUSTER, None) is True
    # The Ready-only watch adds nothing to those: adds, deletes and resyncs go through the first.
    assert cluster_ready_changed("update", CLUSTER, CLUSTER) is False
    assert cluster_ready_changed("add", None, CLUSTER) is False
    assert cluster_ready_changed("delete", CLUSTER, None) is False


def queued(c: Controller) -> set[Request]:
    out: set[Request] = set()
    while True:
        item, shutdown = c.queue.get(timeout=0)
        if item is None or shutdown:
            return out
        out.add(item)
        c.queue.done(item)


def test_filter_on_a_watch_keeps_noise_from_the_owner() -> None:
    """Wired on a controller's watch of children: a resourceVersion-only write and an unread status step
    enqueue nothing; a change the reconciler reads enqueues the owner."""
    c = Controller(f"test-pred-{next(_names)}", lambda _r: None)
    inf = Informer(cast(Client, None), DEPLOYMENTS)
    c.watch_owned(inf, API_VERSION, "OJSWorker", child_update_matters(DEPLOYMENTS))
    owner = {Request("ns", "w")}
    try:
        inf._apply_event("ADDED", copy.deepcopy(DEP))
        assert queued(c) == owner
        inf._apply_event("MODIFIED", changed(DEP, _set("metadata.resourceVersion", "11")))
        assert queued(c) == set()
        step = changed(DEP, lambda o: o["status"]["conditions"][1].update(lastUpdateTime="t9"))
        step["metadata"]["resourceVersion"] = "12"
        inf._apply_event("MODIFIED", step)
        assert queued(c) == set()
        ready = changed(step, _set("status.readyReplicas", 2))
        ready["metadata"]["resourceVersion"] = "13"
        inf._apply_event("MODIFIED", ready)
        assert queued(c) == owner
    finally:
        c.stop(timeout=1)


def test_the_revision_annotation_moving_on_wakes_no_one_but_another_annotation_with_it_does() -> None:
    pred = child_update_matters(DEPLOYMENTS)
    rev = "deployment.kubernetes.io/revision"
    one = changed(DEP, lambda o: o["metadata"]["annotations"].update({rev: "1"}))
    two = changed(one, lambda o: o["metadata"]["annotations"].update({rev: "2"}))
    assert not pred("update", one, two)
    assert pred("update", one, changed(two, lambda o: o["metadata"]["annotations"].update({"team": "x"})))


def test_the_echo_of_our_own_apply_wakes_no_one() -> None:
    """The watch event of the object an apply returned (same resourceVersion) is dropped; a later write by
    anyone else, a delete and a resync pass."""
    applier = Applier(cast(Client, None), "ojsctrl", "ojs.openjobspec.dev/applied-hash")
    c = Controller(f"test-echo-{next(_names)}", lambda _r: None)
    inf = Informer(cast(Client, None), DEPLOYMENTS)
    c.watch_owned(
        inf, API_VERSION, "OJSWorker", child_update_matters(DEPLOYMENTS), not_own_echo(applier, DEPLOYMENTS)
    )
    owner = {Request("ns", "w")}
    try:
        # What Applier.ensure records of its apply's response: the hash and the resourceVersion it produced.
        applier._recent[(DEPLOYMENTS, "ns/w-worker")] = ("abc", 10)
        assert applier.wrote(DEPLOYMENTS, DEP)
        # Told once, the echo is in the cache: the applier keeps nothing more of that write.
        assert not applier.wrote(DEPLOYMENTS, DEP)
        assert len(applier._recent) == 0
        applier._recent[(DEPLOYMENTS, "ns/w-worker")] = ("abc", 10)
        inf._apply_event("ADDED", copy.deepcopy(DEP))
        assert queued(c) == set()  # our own create
        assert len(applier._recent) == 0
        edited = changed(DEP, _set("spec.replicas", 5))
        edited["metadata"]["resourceVersion"] = "11"
        inf._apply_event("MODIFIED", edited)
        assert queued(c) == owner  # someone else's write
        restored = changed(DEP, _set("metadata.resourceVersion", "12"))
        applier._recent[(DEPLOYMENTS, "ns/w-worker")] = ("abc", 12)
        inf._apply_event("MODIFIED", restored)
        assert queued(c) == set()  # our restore of it
        inf.resync()
        assert queued(c) == owner
        inf._apply_event("DELETED", restored)
        assert queued(c) == owner
    finally:
        c.stop(timeout=1)
