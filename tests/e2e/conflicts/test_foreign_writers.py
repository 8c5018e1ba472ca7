"""Conflicts with users and foreign objects: objects squatting on a child's name are left alone, and
other writers of the operator's objects do not cause a fight.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    SECRETS,
    SERVICES,
    Client,
    NotFoundError,
)
from tests.harness import ledger
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import (
    FULL,
    MUTATING,
    AuditLog,
    by_operator,
    cond_of,
    driver,
    foreign_deployment,
    secret,
    status_of,
    wait_until,
)
from tests.harness.operator import Shared, unexpected_failures
from tests.harness.storm import cluster_body, not_converged, worker_body

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def untouched(
    client: Client, ns: str, dep: dict[str, Any], secret: dict[str, Any], audit: AuditLog
) -> list[str]:
    """The foreign Deployment and Secret: no operator write reached them, and what their owner set is as it
    was (the Deployment's status moves with its own pods, so resourceVersions are no proof)."""
    out = [
        f"{e['verb']} {e['requestURI']}"
        for e in by_operator(audit.events(ns))
        if e.get("verb") in MUTATING
        and (e.get("objectRef") or {}).get("name") in ("squat-worker", "keyed-api-key")
        and (e.get("objectRef") or {}).get("resource") in ("deployments", "secrets")
    ]
    now_dep = client.get(DEPLOYMENTS, "squat-worker", ns)
    now_secret = client.get(SECRETS, "keyed-api-key", ns)
    for before, now in ((dep, now_dep), (secret, now_secret)):
        for part in ("spec", "data"):
            if before.get(part) != now.get(part):
                out.append(f"{before['kind']} {part} changed")
        for key in ("labels", "annotations", "ownerReferences"):
            # The Deployment controller adds its own revision annotation.
            was, is_ = (
                {
                    k: v
                    for k, v in (o["metadata"].get(key) or {}).items()
                    if "deployment.kubernetes.io/" not in k
                }
                if key != "ownerReferences"
                else o["metadata"].get(key)
                for o in (before, now)
            )
            if was != is_:
                out.append(f"{before['kind']} metadata.{key} changed: {was} -> {is_}")
    return out


def test_conflicts_with_users_and_foreign_objects(crds: ControlPlane, shared: Shared) -> None:
    ns = shared.ns["conflict"]
    client = driver(crds)
    # Foreign objects squatting on a child's name: a worker's Deployment and a generated Secret.
    foreign_dep = foreign_deployment(
        ns, "squat-worker", "theirs", "example.invalid/theirs:1", labels={"team": "other"}
    )
    client.create(DEPLOYMENTS, foreign_dep, ns)
    client.create(SECRETS, secret(ns, "keyed-api-key", {"api-key": "users-own-key-do-not-touch"}), ns)
    ledger.plant("users-own-key-do-not-touch")
    before_dep = client.get(DEPLOYMENTS, "squat-worker", ns)
    before_secret = client.get(SECRETS, "keyed-api-key", ns)
    audit = AuditLog(crds)
    client.create(OJSCLUSTERS, cluster_body("jobs", ns), ns)
    client.create(OJSCLUSTERS, cluster_body("keyed", ns), ns)
    client.create(OJSWORKERS, worker_body("squat", ns, "jobs"), ns)
    client.create(OJSWORKERS, worker_body("edit", ns, "jobs", queues=["q1", "q2"]), ns)

    wait_until(
        "worker squat: NameConflict",
        lambda: cond_of(client.get(OJSWORKERS, "squat", ns), "Degraded").get("reason") == "NameConflict",
        60,
    )
    squat = client.get(OJSWORKERS, "squat", ns)
    assert "squat-worker" in cond_of(squat, "Degraded")["message"]
    assert status_of(squat)["phase"] == "Error" and cond_of(squat, "Ready")["reason"] == "NameConflict"
    wait_until(
        "cluster keyed: NameConflict",
        lambda: cond_of(client.get(OJSCLUSTERS, "keyed", ns), "Degraded").get("reason") == "NameConflict",
        60,
    )
    assert "keyed-api-key" in cond_of(client.get(OJSCLUSTERS, "keyed", ns), "Degraded")["message"]
    wait_until("jobs and edit Running", lambda: not not_converged(client, ns, {"jobs", "edit"}), 90)
    assert untouched(client, ns, before_dep, before_secret, audit) == []

    timings: dict[str, float] = {}
    # A user edits fields the operator owns (image, an operator env var, a ConfigMap key) and adds their own
    # (a label, an annotation, a template annotation, a ConfigMap key): owned ones come back, theirs stay.
    dep = client.get(DEPLOYMENTS, "edit-worker", ns)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = [dict(e) for e in container["env"]]
    for e in env:
        if e["name"] == "OJS_QUEUES":
            e["value"] = "hijacked"
    client.patch(
        DEPLOYMENTS,
        "edit-worker",
        {
            "metadata": {"labels": {"team": "payments"}, "annotations": {"owner": "alice"}},
            "spec": {
                "template": {
                    "metadata": {"annotations": {"example.com/restarted-at": "now"}},
                    "spec": {"containers": [{"name": container["name"], "image": "evil:1", "env": env}]},
                }
            },
        },
        ns,
    )
    edited = time.monotonic()

    def worker_restored() -> bool:
        d = client.get(DEPLOYMENTS, "edit-worker", ns)
        c = d["spec"]["template"]["spec"]["containers"][0]
        values = {e["name"]: e.get("value") for e in c["env"]}
        return c["image"] == "example.invalid/worker:1" and values.get("OJS_QUEUES") == "q1,q2"

    wait_until("worker Deployment restored", worker_restored, 60, 0.2)
    timings["owned_deployment_fields_restored_s"] = time.monotonic() - edited
    d = client.get(DEPLOYMENTS, "edit-worker", ns)
    assert d["metadata"]["labels"]["team"] == "payments"
    assert d["metadata"]["annotations"]["owner"] == "alice"
    assert d["spec"]["template"]["metadata"]["annotations"]["example.com/restarted-at"] == "now"

    cm = client.get(CONFIGMAPS, "jobs-config", ns)
    owned_key = sorted(cm.get("data") or {})[0]
    original = cm["data"][owned_key]
    client.patch(CONFIGMAPS, "jobs-config", {"data": {owned_key: "tampered", "users-key": "kept"}}, ns)
    edited = time.monotonic()
    wait_until(
        "ConfigMap key restored",
        lambda: client.get(CONFIGMAPS, "jobs-config", ns)["data"][owned_key] == original,
        60,
        0.2,
    )
    timings["owned_configmap_key_restored_s"] = time.monotonic() - edited
    assert client.get(CONFIGMAPS, "jobs-config", ns)["data"]["users-key"] == "kept"

    # Children deleted behind the operator's back come back; a deleted generated key is made anew and rolls
    # the server and the workers (their template hash covers it).
    server_hash = client.get(DEPLOYMENTS, "jobs-server", ns)["spec"]["template"]["metadata"]["annotations"][
        "ojs.openjobspec.dev/config-hash"
    ]
    worker_hash = client.get(DEPLOYMENTS, "edit-worker", ns)["spec"]["template"]["metadata"]["annotations"][
        "ojs.openjobspec.dev/config-hash"
    ]
    deleted = time.monotonic()
    for res, name in (
        (SERVICES, "jobs-server"),
        (CONFIGMAPS, "jobs-config"),
        (DEPLOYMENTS, "edit-worker"),
        (SECRETS, "jobs-api-key"),
    ):
        client.delete(res, name, ns)

    def recreated() -> bool:
        for res, name in (
            (SERVICES, "jobs-server"),
            (CONFIGMAPS, "jobs-config"),
            (DEPLOYMENTS, "edit-worker"),
            (SECRETS, "jobs-api-key"),
        ):
            try:
                client.get(res, name, ns)
            except NotFoundError:
                return False
        return True

    wait_until("deleted children recreated", recreated, 60, 0.2)
    timings["deleted_children_recreated_s"] = time.monotonic() - deleted

    def rolled() -> bool:
        s = client.get(DEPLOYMENTS, "jobs-server", ns)["spec"]["template"]["metadata"]["annotations"]
        w = client.get(DEPLOYMENTS, "edit-worker", ns)["spec"]["template"]["metadata"]["annotations"]
        return (
            s["ojs.openjobspec.dev/config-hash"] != server_hash
            and w["ojs.openjobspec.dev/config-hash"] != worker_hash
        )

    wait_until("a new API key rolls servers and workers", rolled, 60, 0.2)
    timings["new_api_key_rolled_s"] = time.monotonic() - deleted
    # Still untouched after all that.
    assert untouched(client, ns, before_dep, before_secret, audit) == []
    assert unexpected_failures(shared.op) == []
    figure("conflicts", **{k: round(v, 1) for k, v in timings.items()}, foreign_objects_modified=0)
