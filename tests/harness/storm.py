"""Storms of OJS objects and what a converged namespace looks like: bodies, expected children, and the
checks for orphans, duplicates, missing children and Deployments rolled more than once."""

from __future__ import annotations

import collections
import time
from typing import Any

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    HPAS,
    PDBS,
    PVCS,
    SECRETS,
    SERVICES,
    Client,
    Resource,
)
from tests.harness.kube import (
    REPLICASETS,
    create_retrying,
    ojs_cluster,
    ojs_worker,
    parallel,
    status_of,
    wait_until,
)

MANAGED = "app.kubernetes.io/managed-by=ojsctrl"
CHILD_RESOURCES = (DEPLOYMENTS, SERVICES, CONFIGMAPS, SECRETS, PDBS, HPAS, PVCS)


def cluster_body(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return ojs_cluster(ns, name, {"backend": {"type": "lite"}, "replicas": 1, **spec})


def worker_body(name: str, ns: str, cluster: str, **spec: Any) -> dict[str, Any]:
    spec = {
        "clusterRef": cluster,
        "jobTypes": ["t.run"],
        "queues": ["default"],
        "image": "example.invalid/worker:1",
        "replicas": 1,
        **spec,
    }
    return ojs_worker(ns, name, spec)


def storm_bodies(ns: str, n: int, prefix: str) -> list[tuple[Resource, dict[str, Any]]]:
    """n clusters (every fourth with embedded Redis) and n workers, interleaved."""
    out: list[tuple[Resource, dict[str, Any]]] = []
    for i in range(n):
        c = f"{prefix}c-{i:03d}"
        backend = {"type": "redis", "embedded": True} if i % 4 == 0 else {"type": "lite"}
        out.append((OJSCLUSTERS, cluster_body(c, ns, backend=backend)))
        out.append((OJSWORKERS, worker_body(f"{prefix}w-{i:03d}", ns, c, queues=[f"q{i % 3}"])))
    return out


def run_storm(client: Client, ns: str, bodies: list[tuple[Resource, dict[str, Any]]]) -> None:
    parallel(lambda rb: create_retrying(client, rb[0], rb[1], ns), bodies, workers=8)


def expected_children(obj: dict[str, Any]) -> set[tuple[str, str]]:
    name, spec = obj["metadata"]["name"], obj.get("spec") or {}
    if obj["kind"] == "OJSWorker":
        return {("Deployment", f"{name}-worker")}
    out = {
        ("ConfigMap", f"{name}-config"),
        ("Deployment", f"{name}-server"),
        ("Service", f"{name}-server"),
    }
    if not (spec.get("auth") or {}).get("disabled"):
        out.add(("Secret", f"{name}-api-key"))
    if (spec.get("backend") or {}).get("embedded"):
        out |= {("Secret", f"{name}-redis"), ("Deployment", f"{name}-redis"), ("Service", f"{name}-redis")}
    return out


def not_converged(client: Client, ns: str, names: set[str] | None = None) -> list[str]:
    """Objects (all, or those named) whose status is not Running at the current generation."""
    pending = []
    for res in (OJSCLUSTERS, OJSWORKERS):
        for o in client.list(res, ns)[0]:
            name = o["metadata"]["name"]
            if names is not None and name not in names:
                continue
            st = status_of(o)
            if st.get("phase") != "Running" or st.get("observedGeneration") != o["metadata"]["generation"]:
                pending.append(f"{o['kind']} {name}: {st.get('phase')}")
    return pending


def wait_converged(client: Client, ns: str, expect: int, timeout: float) -> float:
    start = time.monotonic()
    last: list[str] = []

    def done() -> bool:
        nonlocal last
        last = not_converged(client, ns)
        n = sum(len(client.list(r, ns)[0]) for r in (OJSCLUSTERS, OJSWORKERS))
        return not last and n == expect

    try:
        wait_until("converged", done, timeout, 1.0)
    except AssertionError:
        raise AssertionError(
            f"not converged after {timeout:.0f}s: {last[:10]} ({len(last)} pending)"
        ) from None
    return time.monotonic() - start


def child_problems(client: Client, ns: str, one_replicaset: bool = True) -> list[str]:
    """Orphans, duplicates, missing children, and Deployments rolled more than once."""
    owners: dict[str, dict[str, Any]] = {}
    for res in (OJSCLUSTERS, OJSWORKERS):
        for o in client.list(res, ns)[0]:
            o.setdefault("kind", res.kind)
            owners[o["metadata"]["uid"]] = o
    problems: list[str] = []
    have: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(collections.Counter)
    deployments: dict[str, str] = {}
    for res in CHILD_RESOURCES:
        for o in client.list(res, ns, label_selector=MANAGED)[0]:
            name = o["metadata"]["name"]
            refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("controller")]
            if len(refs) != 1:
                problems.append(f"{res.kind} {name}: {len(refs)} controller owner references")
                continue
            if refs[0]["uid"] not in owners:
                problems.append(f"orphan {res.kind} {name} (owner {refs[0]['kind']} {refs[0]['name']} gone)")
                continue
            have[refs[0]["uid"]][(res.kind, name)] += 1
            if res == DEPLOYMENTS:
                deployments[o["metadata"]["uid"]] = name
    for uid, o in owners.items():
        want = expected_children(o)
        got = set(have[uid])
        if got != want:
            name = f"{o['kind']} {o['metadata']['name']}"
            problems.append(f"{name}: missing {sorted(want - got)} extra {sorted(got - want)}")
        problems += [f"duplicate {k}" for k, n in have[uid].items() if n > 1]
    if one_replicaset:
        per_dep: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for rs in client.list(REPLICASETS, ns)[0]:
            for r in rs["metadata"].get("ownerReferences") or []:
                if r.get("uid") in deployments:
                    per_dep[deployments[r["uid"]]].append(rs)
        for d in deployments.values():
            if len(per_dep[d]) != 1:
                problems.append(
                    f"Deployment {d}: {len(per_dep[d])} ReplicaSets ({_template_diff(per_dep[d])})"
                )
    return problems


def _template_diff(replicasets: list[dict[str, Any]]) -> str:
    """What differs between the pod templates of a Deployment's ReplicaSets (why it rolled)."""
    if len(replicasets) < 2:
        return ""

    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                out.update(flat(v, f"{prefix}.{k}"))
            return out
        if isinstance(value, list):
            out = {}
            for i, v in enumerate(value):
                out.update(flat(v, f"{prefix}[{i}]"))
            return out
        return {prefix: value}

    a, b = (flat(rs["spec"]["template"]) for rs in replicasets[:2])
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and "pod-template-hash" not in k)
    return "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys[:4])
