"""Reliability and security (issue 9): the operator under faults, load and bad input, against the real local
control plane, with figures.

Each test is one fault. Sizes are reduced by default and the issue's with OJSCTRL_FULL=1 (`size()`).
Figures go to `$OJSCTRL_RELIABILITY_FIGURES` (default: <tmp>/ojsctrl-reliability-figures.json) and to the
captured output; docs/reliability.md summarises a run.

Planes: `raw_plane` (watch cache off, so compaction reaches watches) is restarted, frozen and compacted; the
shared `plane` carries the rest. Every operator runs as a process with a distinct user agent
(`--user-agent-suffix`), so the API server's audit log tells who wrote what.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ojsctrl.api import validate_cluster, validate_worker
from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    HPAS,
    LEASES,
    PDBS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    AlreadyExistsError,
    ApiError,
    Client,
    InvalidError,
    NotFoundError,
    Resource,
)
from tests.e2e.helpers import (
    FULL,
    ClusterKeys,
    OperatorProcess,
    cond_of,
    driver,
    foreign_deployment,
    install_crds,
    namespace,
    ojs_cluster,
    ojs_worker,
    parallel,
    secret,
    size,
    status_of,
    wait_until,
)
from tests.harness.controlplane import ControlPlane, free_port
from tests.ojsserver.server import OJSTestServer

API = "ojs.openjobspec.dev/v1alpha1"
MANAGED = "app.kubernetes.io/managed-by=ojsctrl"
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTERROLEBINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
CHILD_RESOURCES = (DEPLOYMENTS, SERVICES, CONFIGMAPS, SECRETS, PDBS, HPAS, PVCS)
MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
# What the manager appends to the user agent of the leader elector's own client.
LEADER_ELECTION_UA = "/leader-election"
# Errors a reconcile may legitimately end with (API answers, transport trouble): anything else is a bug.
EXPECTED_ERROR_TYPES = {
    "ApiError",
    "ConflictError",
    "AlreadyExistsError",
    "NotFoundError",
    "GoneError",
    "InvalidError",
    "ForbiddenError",
    "TransportError",
    "ReconcileError",
}

# Everything the module started or created, for the closing secrets scan.
OPERATORS: list[OperatorProcess] = []
NAMESPACES: list[tuple[ControlPlane, str]] = []
PLANTED: set[str] = set()
FIGURES: dict[str, dict[str, Any]] = {}

# The issue's sizes (storms of 200+200, 2,000 workers for 10 minutes) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def figure(test: str, **values: Any) -> None:
    FIGURES.setdefault(test, {}).update(values)
    print(f"[figures] {test}: {json.dumps(values, default=str)}")


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    out = Path(
        os.environ.get(
            "OJSCTRL_RELIABILITY_FIGURES", Path(tempfile.gettempdir()) / "ojsctrl-reliability-figures.json"
        )
    )
    out.write_text(json.dumps({"full": FULL, "figures": FIGURES}, indent=2, default=str))


# --------------------------------------------------------------------------- small helpers
def ns_for(plane: ControlPlane, prefix: str, labels: dict[str, str] | None = None) -> str:
    if labels:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        assert plane.client is not None
        plane.client.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
        )
        plane.wait_for(
            f"default service account in {name}",
            lambda: (
                plane.client.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0]  # type: ignore[union-attr]
                == 200
            ),
        )
    else:
        name = namespace(plane, prefix)
    NAMESPACES.append((plane, name))
    return name


def start_op(
    plane: ControlPlane,
    *args: str,
    name: str,
    namespaces: list[str],
    ojs_url: str | None = None,
    started: list[OperatorProcess] | None = None,
) -> OperatorProcess:
    """The real `ojsctrl`, watching only `namespaces`, with a user agent naming it."""
    argv = [
        "--ojs-url-template",
        ojs_url or f"http://127.0.0.1:{free_port()}",
        "--log-level",
        "debug",
        "--user-agent-suffix",
        name,
        *[a for ns in namespaces for a in ("--watch-namespace", ns)],
        *args,
    ]
    op = OperatorProcess(plane, "ojsctrl", *argv, name=name)
    op.user_agent_suffix = name  # type: ignore[attr-defined]
    OPERATORS.append(op)
    if started is not None:
        started.append(op)
    return op


def stop_op(op: OperatorProcess) -> None:
    """Stop, keeping the last /metrics next to the log for the secrets scan."""
    if op.proc.poll() is None:
        try:
            text = op.metrics()
        except Exception:
            text = getattr(op, "metrics_snapshot", "")
        op.log_path.with_suffix(".metrics").write_text(text)
    op.stop()


@pytest.fixture
def ops() -> Iterator[list[OperatorProcess]]:
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        stop_op(op)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_records(op: OperatorProcess) -> list[dict[str, Any]]:
    out = []
    for line in op.logs().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def unexpected_failures(op: OperatorProcess) -> list[str]:
    """'reconcile failed' lines whose exception is not an API/transport error, and any traceback of a
    thread that died."""
    bad = []
    for r in log_records(op):
        if r.get("event") == "reconcile failed" and r.get("error_type") not in EXPECTED_ERROR_TYPES:
            bad.append(f"{r.get('key')}: {r.get('error_type')}: {str(r.get('error'))[:200]}")
    text = op.logs()
    if "Exception in thread" in text:
        bad.append("a thread died: " + text[text.index("Exception in thread") :][:400])
    return bad


def reconcile_failures(op: OperatorProcess) -> collections.Counter[str]:
    return collections.Counter(
        str(r.get("error_type")) for r in log_records(op) if r.get("event") == "reconcile failed"
    )


def metric(op: OperatorProcess, name: str, labels: dict[str, str] | None = None) -> float:
    try:
        return op.metric(name, labels) or 0.0
    except Exception:
        return 0.0


def metric_sum(op: OperatorProcess, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of every sample of `name` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(op.metrics()):
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in (labels or {}).items()):
                total += smp.value
    return total


def identity_of(op: OperatorProcess) -> str:
    for r in log_records(op):
        if r.get("event") == "waiting for leadership":
            return str(r["identity"])
    return ""


def holder(client: Client, ns: str, lease: str) -> str:
    try:
        return str(client.get(LEASES, lease, ns)["spec"].get("holderIdentity") or "")
    except NotFoundError:
        return ""


def ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class AuditLog:
    """The plane's audit events written after this object was made."""

    def __init__(self, plane: ControlPlane) -> None:
        self.path = plane.audit_log_path
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def events(self, ns: str | None = None) -> list[dict[str, Any]]:
        out = []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    e = json.loads(raw)
                except ValueError:
                    continue
                if ns is None or (e.get("objectRef") or {}).get("namespace") == ns:
                    out.append(e)
        return out


def by_operator(events: list[dict[str, Any]], suffix: str | None = None) -> list[dict[str, Any]]:
    """Requests of every operator process, or of the one started with `--user-agent-suffix suffix`.

    The leader elector talks through its own client, whose user agent is the process's with
    "/leader-election" appended (as controller-runtime names it); its lease writes are the process's.
    """
    return [
        e
        for e in events
        if e.get("userAgent", "").startswith("ojsctrl/")
        and (suffix is None or e["userAgent"].removesuffix(LEADER_ELECTION_UA).endswith(suffix))
    ]


def create_retrying(
    client: Client, res: Resource, body: dict[str, Any], ns: str, budget: float = 120
) -> None:
    """Create, riding out an API server that is down (a POST that reached it counts once)."""
    deadline = time.monotonic() + budget
    while True:
        try:
            client.create(res, body, ns)
            return
        except AlreadyExistsError:
            return
        except ApiError as e:
            if e.status in (0, 429, 500, 502, 503, 504) and time.monotonic() < deadline:
                time.sleep(0.3)
                continue
            raise


# --------------------------------------------------------------------------- objects
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


# --------------------------------------------------------------------------- a countable OJS server
class CountingOJSServer(OJSTestServer):
    """The test OJS server, counting stats polls per cluster prefix (`/<namespace>/<cluster>`)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.polls: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def _fault_applies(self, path: str) -> bool:
        at = path.find("/ojs/")
        if at > 0 and path[at:] in ("/ojs/v1/admin/queues", "/ojs/v1/queues"):
            with self._count_lock:
                self.polls[path[:at]] += 1
        return super()._fault_applies(path)

    def poll_counts(self) -> dict[str, int]:
        with self._count_lock:
            return dict(self.polls)


def keyed_ojs_server(*clients: Client) -> CountingOJSServer:
    """A counting double that wants, under /<namespace>/<cluster>, the key the cluster's Secret holds
    (read through ``clients``), and elsewhere a key nobody has: the operator's bearer path is in play."""
    srv = CountingOJSServer(api_key=secrets.token_urlsafe(24))
    srv.key_resolver = ClusterKeys(*clients)
    return srv


@pytest.fixture(scope="module")
def ojs(crds: ControlPlane) -> Iterator[CountingOJSServer]:
    srv = keyed_ojs_server(driver(crds))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def raw_crds(raw_plane: ControlPlane) -> ControlPlane:
    return install_crds(raw_plane)


@dataclass
class Shared:
    """One operator for the tests that need no special flags, watching their namespaces only."""

    op: OperatorProcess
    ns: dict[str, str] = field(default_factory=dict)


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


@pytest.fixture(scope="module")
def shared(crds: ControlPlane, ojs: CountingOJSServer) -> Iterator[Shared]:
    names = {k: ns_for(crds, f"rel-{k}") for k in ("conflict", "faults", "bad", "secrets")}
    names["psa"] = ns_for(crds, "rel-psa", RESTRICTED)
    op = start_op(
        crds,
        "--sync-period",
        "10m",
        name="rel-shared",
        namespaces=list(names.values()),
        ojs_url=ojs.base_url + "/{namespace}/{name}",
    )
    wait_until("shared operator ready", op.ready, 60)
    yield Shared(op, names)
    stop_op(op)


# =========================================================================== 1. API server restart
def test_apiserver_restart_during_a_storm(raw_crds: ControlPlane, ops: list[OperatorProcess]) -> None:
    plane = raw_crds
    n = size(30, 200)
    ns = ns_for(plane, "rel-restart")
    client = driver(plane)
    op = start_op(plane, name="rel-restart", namespaces=[ns], started=ops)
    wait_until("operator ready", op.ready, 60)

    bodies = storm_bodies(ns, n, "r")
    storm = threading.Thread(target=run_storm, args=(client, ns, bodies))
    started = time.monotonic()
    storm.start()

    def created() -> int:
        try:
            return len(client.list(OJSCLUSTERS, ns)[0]) + len(client.list(OJSWORKERS, ns)[0])
        except ApiError:
            return 0

    wait_until("a third of the storm created", lambda: created() >= len(bodies) // 3, 120, 0.2)
    restart_at = time.monotonic()
    plane.restart_apiserver(kill=True, down_for=2.0)
    back_at = time.monotonic()
    storm.join(300)
    assert not storm.is_alive()
    took = wait_converged(client, ns, 2 * n, size(240, 900))
    problems = child_problems(client, ns)
    assert problems == [], problems[:20]
    assert op.proc.poll() is None, "the operator exited"
    assert unexpected_failures(op) == []
    restarts = sum(
        metric(op, "ojsctrl_informer_watch_restarts_total", {"resource": r, "cause": "error"})
        for r in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
    )
    figure(
        "apiserver_restart",
        objects=2 * n,
        apiserver_down_s=round(back_at - restart_at, 1),
        converged_after_restart_s=round(time.monotonic() - back_at, 1),
        wait_for_convergence_s=round(took, 1),
        storm_to_converged_s=round(time.monotonic() - started, 1),
        primary_watch_error_restarts=restarts,
        reconcile_failures=dict(reconcile_failures(op)),
        orphans_or_duplicates=len(problems),
    )


# =========================================================================== 2. lost history (410)
def test_lost_history_compaction_relists_and_delivers_deletes(
    raw_crds: ControlPlane, ojs: CountingOJSServer, ops: list[OperatorProcess]
) -> None:
    plane = raw_crds
    n = size(12, 60)
    q = n // 4
    ns = ns_for(plane, "rel-gone")
    client = driver(plane)
    assert isinstance(ojs.key_resolver, ClusterKeys)
    ojs.key_resolver.add(client)  # this plane's clusters too
    op = start_op(
        plane, name="rel-gone", namespaces=[ns], ojs_url=ojs.base_url + "/{namespace}/{name}", started=ops
    )
    wait_until("operator ready", op.ready, 60)
    auto = {"enabled": True, "minReplicas": 1, "maxReplicas": 2, "pollingInterval": "1s"}
    bodies: list[tuple[Resource, dict[str, Any]]] = []
    for i in range(n):
        # Not lite: a lite server rolls with Recreate, which waits out the old pod's 40 s grace period.
        bodies.append(
            (OJSCLUSTERS, cluster_body(f"g{i:03d}", ns, backend={"type": "nats", "url": "nats://n:4222"}))
        )
        bodies.append((OJSWORKERS, worker_body(f"g{i:03d}-w", ns, f"g{i:03d}", autoScaling=auto)))
    run_storm(client, ns, bodies)
    wait_converged(client, ns, 2 * n, size(180, 600))

    changed = [f"g{i:03d}" for i in range(q)]
    deleted_all = [f"g{i:03d}" for i in range(q, 2 * q)]
    deleted_keep_worker = [f"g{i:03d}" for i in range(2 * q, 3 * q)]
    late = [f"late{i:03d}" for i in range(q)]
    expired_before = sum(
        metric(op, "ojsctrl_informer_watch_restarts_total", {"resource": r, "cause": "expired"})
        for r in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
    )
    op.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # The frozen operator's streams die first, so none of what follows sits in its socket buffers: when
        # it resumes, it must watch from versions that the compaction below has removed.
        plane.restart_apiserver(kill=True, down_for=0.5)
        for c in changed:
            client.patch(OJSCLUSTERS, c, {"spec": {"image": "example.invalid/ojs-server:v2"}}, ns)
            client.patch(OJSWORKERS, f"{c}-w", {"spec": {"jobTypes": ["t.run", "t.changed"]}}, ns)
        for c in deleted_all:
            client.delete(OJSWORKERS, f"{c}-w", ns)
            client.delete(OJSCLUSTERS, c, ns)
        for c in deleted_keep_worker:
            client.delete(OJSCLUSTERS, c, ns)
        for c in late:
            client.create(OJSCLUSTERS, cluster_body(c, ns), ns)
            client.create(OJSWORKERS, worker_body(f"{c}-w", ns, c), ns)
        compacted = plane.etcd_compact()
    finally:
        op.signal(signal.SIGCONT)
    resumed_at = time.monotonic()

    def final_state() -> bool:
        for c in changed:
            dep = client.get(DEPLOYMENTS, f"{c}-server", ns)
            if dep["spec"]["template"]["spec"]["containers"][0]["image"] != "example.invalid/ojs-server:v2":
                return False
            wdep = client.get(DEPLOYMENTS, f"{c}-w-worker", ns)
            env = {
                e["name"]: e.get("value") for e in wdep["spec"]["template"]["spec"]["containers"][0]["env"]
            }
            if env.get("OJS_JOB_TYPES") != "t.run,t.changed":
                return False
        for c in deleted_keep_worker:
            w = client.get(OJSWORKERS, f"{c}-w", ns)
            if cond_of(w, "ClusterFound").get("status") != "False" or status_of(w).get("phase") != "Error":
                return False
        live = {f"g{i:03d}" for i in range(n)} - set(deleted_all) - set(deleted_keep_worker)
        names = live | {f"{c}-w" for c in live} | set(late) | {f"{c}-w" for c in late}
        return not not_converged(client, ns, names)

    took = wait_until("final state after the relist", final_state, size(180, 600), 1.0)
    # Garbage collection removes the children of deleted clusters and workers; nothing is orphaned.
    wait_until(
        "children of deleted owners collected",
        lambda: not [p for p in child_problems(client, ns, one_replicaset=False) if "orphan" in p],
        120,
        1.0,
    )
    for c in deleted_keep_worker:
        # The worker's Deployment stays (a missing cluster never takes the workers down).
        assert client.get(DEPLOYMENTS, f"{c}-w-worker", ns)
    expired_after = sum(
        metric(op, "ojsctrl_informer_watch_restarts_total", {"resource": r, "cause": "expired"})
        for r in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
    )
    assert expired_after > expired_before, "no watch saw 410 Gone: the test did not exercise a relist"
    # The informer's cache equals the API: its object gauge counts exactly the live clusters.
    live_clusters = len(client.list(OJSCLUSTERS, ns)[0])
    wait_until(
        "informer holds exactly the live clusters",
        lambda: (
            metric(op, "ojsctrl_informer_objects", {"resource": "ojsclusters.ojs.openjobspec.dev"})
            == live_clusters
        ),
        30,
        0.5,
    )
    # Deleted clusters are no longer polled (the delete reached the cluster controller), live ones are.
    before = ojs.poll_counts()
    time.sleep(4)
    after = ojs.poll_counts()
    polled = {k for k in after if after[k] > before.get(k, 0) and k.startswith(f"/{ns}/")}
    gone = {f"/{ns}/{c}" for c in deleted_all + deleted_keep_worker}
    assert not polled & gone, sorted(polled & gone)
    assert f"/{ns}/{changed[0]}" in polled
    assert op.proc.poll() is None and unexpected_failures(op) == []
    figure(
        "lost_history",
        objects=2 * n,
        changed=2 * q,
        deleted_clusters=2 * q,
        deleted_workers=q,
        created_while_frozen=2 * q,
        frozen_s=round(resumed_at - frozen_at, 1),
        compacted_revision=compacted,
        watches_expired_410=expired_after - expired_before,
        final_state_after_resume_s=round(took, 1),
    )


# =========================================================================== 3. silent stream
def test_silent_stream_detected_and_healthz_reflects_a_stuck_watch(
    raw_crds: ControlPlane, ops: list[OperatorProcess]
) -> None:
    plane = raw_crds
    ns = ns_for(plane, "rel-silent")
    client = driver(plane)
    stall = 15.0
    op = start_op(
        plane,
        "--watch-inactivity-timeout",
        "5s",
        "--informer-stall-timeout",
        f"{stall:.0f}s",
        name="rel-silent",
        namespaces=[ns],
        started=ops,
    )
    wait_until("operator ready", op.ready, 60)
    nats = {"type": "nats", "url": "nats://n:4222"}  # rolls in place (lite servers use Recreate)
    client.create(OJSCLUSTERS, cluster_body("before", ns, backend=nats), ns)
    wait_converged(client, ns, 1, 90)
    # Quiet watches on a plane without bookmarks time out every 5 s. That is not a failed attempt: the
    # stream is reopened at once, logged at debug (a growing backoff would delay events and, past the
    # stall timeout, fail /healthz).
    idle_until = time.monotonic() + 3 * 5 + 1
    while time.monotonic() < idle_until:
        status, body = op.get(op.health_port, "/healthz?verbose")
        assert status == 200, body
        time.sleep(1)
    quiet = [r for r in log_records(op) if r.get("event") == "watch inactive; reopening"]
    assert quiet and all(r.get("level") == "debug" for r in quiet), quiet[:3]

    errors_before = metric_sum(op, "ojsctrl_informer_watch_restarts_total", {"cause": "error"})
    apiserver = plane.processes["kube-apiserver"]
    apiserver.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    frozen_wall = time.time()
    body = ""
    try:
        first_failure: float | None = None

        def unhealthy() -> bool:
            nonlocal body, first_failure
            status, body = op.get(op.health_port, "/healthz?verbose")
            if status == 500 and first_failure is None:
                first_failure = time.monotonic() - frozen
            return status == 500 and "ojsclusters.ojs.openjobspec.dev" in body

        wait_until("/healthz fails naming the stuck informer", unhealthy, stall + 40, 0.5)
        detected = time.monotonic() - frozen
        assert "[-]informers failed" in body and "ojsclusters.ojs.openjobspec.dev" in body, body
        assert "no progress" in body
        assert op.proc.poll() is None, "an unreachable API server must not end the process"
        frozen_for = time.monotonic() - frozen
    finally:
        apiserver.signal(signal.SIGCONT)
    resumed = time.monotonic()
    resumed_wall = time.time()
    wait_until("/healthz ok again", lambda: op.get(op.health_port, "/healthz")[0] == 200, 90, 0.5)
    healthy_after = time.monotonic() - resumed
    client.patch(OJSCLUSTERS, "before", {"spec": {"image": "example.invalid/ojs-server:v3"}}, ns)
    client.create(OJSCLUSTERS, cluster_body("after", ns), ns)
    took = wait_until(
        "changes after the freeze reconciled",
        lambda: (
            client.get(DEPLOYMENTS, "before-server", ns)["spec"]["template"]["spec"]["containers"][0]["image"]
            == "example.invalid/ojs-server:v3"
            and not not_converged(client, ns)
            and len(client.list(OJSCLUSTERS, ns)[0]) == 2
        ),
        90,
        0.5,
    )
    errors_after = metric_sum(op, "ojsctrl_informer_watch_restarts_total", {"cause": "error"})
    assert errors_after > errors_before
    # Detected: streams that went silent while the server was frozen ended by the inactivity timeout.
    silent = [
        r
        for r in log_records(op)
        if r.get("event") == "list/watch failed; retrying"
        and frozen_wall <= ts(r["timestamp"]) <= resumed_wall + 1
        and "timed out" in str(r.get("error"))
    ]
    assert silent, "no watch noticed the frozen server"
    assert unexpected_failures(op) == []
    figure(
        "silent_stream",
        inactivity_timeout_s=5,
        stall_timeout_s=stall,
        healthz_500_after_freeze_s=round(first_failure or detected, 1),
        healthz_names_cluster_informer_after_s=round(detected, 1),
        frozen_s=round(frozen_for, 1),
        healthz_200_after_resume_s=round(healthy_after, 1),
        change_after_resume_reconciled_s=round(took, 1),
        watch_error_restarts=errors_after - errors_before,
        streams_timed_out_while_frozen=len(silent),
    )


# =========================================================================== 4. leader loss
def test_leader_loss_kill_and_sigterm_mid_storm(crds: ControlPlane, ops: list[OperatorProcess]) -> None:
    plane = crds
    n = size(30, 200)
    ns = ns_for(plane, "rel-leader")
    client = driver(plane)
    audit = AuditLog(plane)
    lease = f"rel-{uuid.uuid4().hex[:6]}"
    lease_s, retry_s = 6.0, 1.0
    common = (
        "--leader-elect",
        "--leader-election-id",
        lease,
        "--leader-election-namespace",
        ns,
        "--lease-duration",
        f"{lease_s:.0f}s",
        "--renew-deadline",
        "4s",
        "--retry-period",
        f"{retry_s:.0f}s",
    )
    a = start_op(plane, *common, name="leader-a", namespaces=[ns], started=ops)
    wait_until(
        "a leads", lambda: holder(client, ns, lease) != "" and identity_of(a) == holder(client, ns, lease), 60
    )
    b = start_op(plane, *common, name="leader-b", namespaces=[ns], started=ops)
    wait_until("b ready (warm standby)", b.ready, 60)

    def work(suffix: str) -> int:
        """Requests of that operator other than its leader election's (which never stop)."""
        return sum(
            (e.get("objectRef") or {}).get("resource") != "leases"
            for e in by_operator(audit.events(ns), suffix)
        )

    # Phase 1: kill -9 of the leader while half the storm is being created.
    first = storm_bodies(ns, n // 2, "k")
    storm = threading.Thread(target=run_storm, args=(client, ns, first))
    storm.start()
    wait_until("the leader is at work", lambda: work("leader-a") > 20, 60, 0.2)
    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until("b leads", lambda: holder(client, ns, lease) == identity_of(b), 30, 0.05)
    kill_takeover = time.monotonic() - killed
    storm.join(120)
    wait_converged(client, ns, 2 * (n // 2), size(180, 900))
    assert kill_takeover <= lease_s + 2 * retry_s + 2, f"takeover took {kill_takeover:.1f}s"

    # Phase 2: graceful SIGTERM of the new leader mid-storm; a third replica takes over.
    c = start_op(plane, *common, name="leader-c", namespaces=[ns], started=ops)
    wait_until("c ready (warm standby)", c.ready, 60)
    second = storm_bodies(ns, n - n // 2, "t")
    storm = threading.Thread(target=run_storm, args=(client, ns, second))
    mark = work("leader-b")
    storm.start()
    wait_until(
        "b at work on the second storm",
        lambda: work("leader-b") > mark + 20,
        60,
        0.2,
    )
    b.signal(signal.SIGTERM)
    termed = time.monotonic()
    wait_until("c leads", lambda: holder(client, ns, lease) == identity_of(c), 30, 0.05)
    term_takeover = time.monotonic() - termed
    assert b.wait(40) == 0
    storm.join(120)
    took = wait_converged(client, ns, 2 * n, size(180, 900))
    problems = child_problems(client, ns)
    assert problems == [], problems[:20]

    # The audit log: once the new leader holds the lease, the old one writes nothing more.
    events = audit.events()

    def took_over_at(suffix: str) -> float:
        writes = [
            e
            for e in by_operator(events, suffix)
            if (e.get("objectRef") or {}).get("resource") == "leases"
            and (e.get("objectRef") or {}).get("name") == lease
            and e.get("verb") in ("create", "update", "patch")
            and (e.get("responseStatus") or {}).get("code", 0) < 300
        ]
        return min(ts(e["stageTimestamp"]) for e in writes)

    def late_writes(old: str, since: float) -> list[str]:
        return [
            f"{e['verb']} {e['requestURI']} at {e['requestReceivedTimestamp']}"
            for e in by_operator(events, old)
            if e.get("verb") in MUTATING and ts(e["requestReceivedTimestamp"]) > since
        ]

    b_at, c_at = took_over_at("leader-b"), took_over_at("leader-c")
    assert late_writes("leader-a", b_at) == []
    assert late_writes("leader-b", c_at) == []
    for op in (b, c):
        assert unexpected_failures(op) == []
    last_a = max(
        ts(e["requestReceivedTimestamp"]) for e in by_operator(events, "leader-a") if e["verb"] in MUTATING
    )
    last_b = max(
        ts(e["requestReceivedTimestamp"]) for e in by_operator(events, "leader-b") if e["verb"] in MUTATING
    )
    figure(
        "leader_loss",
        objects=2 * n,
        lease_duration_s=lease_s,
        retry_period_s=retry_s,
        kill9_takeover_s=round(kill_takeover, 1),
        sigterm_takeover_s=round(term_takeover, 1),
        old_leader_writes_after_takeover=0,
        a_last_write_before_b_took_over_s=round(b_at - last_a, 2),
        b_last_write_before_c_took_over_s=round(c_at - last_b, 2),
        converged_after_second_handover_s=round(took, 1),
    )


# =========================================================================== 5. operator restart
def test_operator_restart_mid_storm_writes_each_child_once(
    crds: ControlPlane, ops: list[OperatorProcess]
) -> None:
    plane = crds
    n = size(30, 200)
    ns = ns_for(plane, "rel-oprestart")
    client = driver(plane)
    audit = AuditLog(plane)
    first = start_op(plane, name="restart-1", namespaces=[ns], started=ops)
    wait_until("first operator ready", first.ready, 60)
    bodies = storm_bodies(ns, n, "o")
    storm = threading.Thread(target=run_storm, args=(client, ns, bodies))
    storm.start()
    wait_until(
        "first operator at work", lambda: len(by_operator(audit.events(ns), "restart-1")) > 3 * n, 120, 0.2
    )
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = start_op(plane, name="restart-2", namespaces=[ns], started=ops)
    storm.join(120)
    took = wait_converged(client, ns, 2 * n, size(180, 900))
    problems = child_problems(client, ns)
    assert problems == [], problems[:20]
    time.sleep(3)  # let late writes land before counting

    # Writes that succeeded. A request cut off by the kill -9 is logged with 504 whether or not it was
    # applied; those are counted apart.
    all_writes = [e for e in by_operator(audit.events(ns)) if e.get("verb") in MUTATING]
    events = [e for e in all_writes if (e.get("responseStatus") or {}).get("code", 0) < 300]
    interrupted = {
        f"{(e.get('objectRef') or {}).get('resource')}/{(e.get('objectRef') or {}).get('name')}"
        for e in all_writes
        if (e.get("responseStatus") or {}).get("code") == 504
    }
    applies: collections.Counter[str] = collections.Counter()
    creates: collections.Counter[str] = collections.Counter()
    status_writes: collections.Counter[str] = collections.Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        key = f"{ref.get('resource')}/{ref.get('name')}"
        if ref.get("resource") == "events":
            continue
        if ref.get("subresource") == "status":
            status_writes[key] += 1
        elif e["verb"] == "patch":
            applies[key] += 1
        elif e["verb"] == "create":
            creates[key] += 1
    children = {
        f"{res.plural}/{o['metadata']['name']}"
        for res in CHILD_RESOURCES
        for o in client.list(res, ns, label_selector=MANAGED)[0]
    }
    twice = {k: v for k, v in applies.items() if v > 1}
    assert twice == {}, f"children applied more than once: {sorted(twice.items())[:20]}"
    secrets_created = {k: v for k, v in creates.items() if k.startswith("secrets/")}
    assert all(v == 1 for v in secrets_created.values()), secrets_created
    written = set(applies) | set(secrets_created)
    assert children - written <= interrupted, sorted(children - written - interrupted)[:10]
    assert written <= children, sorted(written - children)[:10]
    by_second = by_operator(audit.events(ns), "restart-2")
    figure(
        "operator_restart",
        objects=2 * n,
        children=len(children),
        child_applies=sum(applies.values()),
        max_applies_per_child=max(applies.values()),
        secret_creates=sum(secrets_created.values()),
        status_writes=sum(status_writes.values()),
        max_status_writes_per_object=max(status_writes.values()),
        second_operator_mutations=len([e for e in by_second if e.get("verb") in MUTATING]),
        writes_cut_off_by_the_kill=len(interrupted),
        converged_after_restart_s=round(took, 1),
    )
    assert unexpected_failures(second) == []


# =========================================================================== 6. conflicts
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
    PLANTED.add("users-own-key-do-not-touch")
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


# =========================================================================== 7. OJS server faults
def test_ojs_server_faults_are_bounded_and_reported(
    crds: ControlPlane, shared: Shared, ojs: CountingOJSServer
) -> None:
    ns = shared.ns["faults"]
    client = driver(crds)
    op = shared.op
    queue = f"fq-{ns}"
    ojs.set_queue(queue, available=5, active=0)
    client.create(OJSCLUSTERS, cluster_body("faulty", ns), ns)
    client.create(OJSCLUSTERS, cluster_body("healthy", ns), ns)
    auto = {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 5,
        "targetJobsPerWorker": 10,
        "pollingInterval": "1s",
        "scaleDownDelay": "2s",
    }
    client.create(OJSWORKERS, worker_body("scaled", ns, "faulty", queues=[queue], autoScaling=auto), ns)
    client.create(OJSWORKERS, worker_body("control", ns, "healthy", queues=[queue], autoScaling=auto), ns)

    def replicas(name: str) -> int | None:
        return client.get(DEPLOYMENTS, name, ns)["spec"].get("replicas")

    def stats_ok(cluster: str) -> bool:
        return cond_of(client.get(OJSCLUSTERS, cluster, ns), "QueueStatsAvailable").get("status") == "True"

    wait_until("stats flowing", lambda: stats_ok("faulty") and stats_ok("healthy"), 60, 0.3)
    wait_until("one replica for 5 jobs", lambda: replicas("scaled-worker") == 1, 60, 0.3)
    rss_start = rss_mb(op.proc.pid)
    results: dict[str, dict[str, Any]] = {}
    faults: list[tuple[str, Callable[[], None]]] = [
        ("status_500", lambda: setattr(ojs.fail, "status_500", True)),
        ("slow_8s", lambda: setattr(ojs.fail, "slow", 8.0)),
        ("hang", lambda: (ojs._release.clear(), setattr(ojs.fail, "hang", True))),
        ("malformed_json", lambda: setattr(ojs.fail, "malformed_json", True)),
        (
            "huge_json_32MiB",
            lambda: (setattr(ojs.fail, "huge_bytes", 32 * 1024 * 1024), setattr(ojs.fail, "huge_json", True)),
        ),
        ("wrong_types", lambda: setattr(ojs.fail, "wrong_types", True)),
        ("negative_counts", lambda: setattr(ojs.fail, "negative_counts", True)),
    ]
    peak = rss_start
    try:
        for name, arm in faults:
            ojs.fail.paths = (f"/{ns}/faulty/",)
            control_before = ojs.poll_counts().get(f"/{ns}/healthy", 0)
            arm()
            armed = time.monotonic()
            time.sleep(0.3)  # a poll already past the fault check answers the old numbers
            # Garbage must never scale: the queue now says 45 jobs (5 replicas) but nobody can read it right.
            ojs.set_queue(queue, available=45)
            stop = threading.Event()
            samples: list[float] = []

            def sample(samples: list[float] = samples, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    samples.append(rss_mb(op.proc.pid))
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def reported() -> bool:
                c = cond_of(client.get(OJSCLUSTERS, "faulty", ns), "QueueStatsAvailable")
                return c.get("status") == "False" and c.get("reason") == "ServerUnreachable"

            wait_until(f"{name}: QueueStatsAvailable=False", reported, 45, 0.2)
            detected = time.monotonic() - armed
            msg = cond_of(client.get(OJSCLUSTERS, "faulty", ns), "QueueStatsAvailable")["message"]
            wcond = cond_of(client.get(OJSWORKERS, "scaled", ns), "Autoscaling")
            time.sleep(2)
            held = replicas("scaled-worker")
            control_polls = ojs.poll_counts().get(f"/{ns}/healthy", 0) - control_before
            stop.set()
            sampler.join()
            peak = max([peak, *samples])
            results[name] = {
                "condition_after_s": round(detected, 1),
                "message": msg[:120],
                "worker_reason": wcond.get("reason"),
                "replicas_held": held,
                "healthy_cluster_polls_meanwhile": control_polls,
                "rss_peak_mb": round(max(samples or [0.0]), 1),
            }
            assert held == 1, f"{name}: scaled on garbage to {held}"
            assert control_polls >= 2, f"{name}: the healthy cluster was not polled meanwhile"
            assert op.proc.poll() is None, f"{name}: the operator died"
            # Back to normal before the next fault (the queue first, so no poll sees 45).
            ojs.set_queue(queue, available=5)
            ojs.fail = type(ojs.fail)()
            ojs.release()
            wait_until(f"{name}: recovered", lambda: stats_ok("faulty"), 45, 0.2)
    finally:
        ojs.fail = type(ojs.fail)()
        ojs.release()
    assert peak - rss_start < 100, f"RSS grew from {rss_start:.0f} to {peak:.0f} MB"
    # After recovery the real depth scales as usual.
    ojs.set_queue(queue, available=45)
    wait_until("scales on real numbers again", lambda: replicas("scaled-worker") == 5, 60, 0.3)
    ojs.set_queue(queue, available=0)
    assert unexpected_failures(op) == []
    figure("ojs_faults", rss_start_mb=round(rss_start, 1), rss_peak_mb=round(peak, 1), faults=results)


# =========================================================================== 8. bad resources
# Hostile edits of a valid spec: rules only Python checks (they bypass admission while the webhook is off),
# rules CEL checks (rejected at create), values only the API server's Deployment/Pod validation or admission
# refuses (the operator's child is rejected), and references to things that do not exist.
CLUSTER_MUTATIONS: dict[str, dict[str, Any]] = {
    "requests>limits": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    "redis requests>limits": {
        "backend": {
            "type": "redis",
            "embedded": True,
            "url": None,
            "urlSecretRef": None,
            "redis": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        }
    },
    "lite with url": {
        "backend": {"type": "lite", "url": "redis://r:6379", "embedded": None, "urlSecretRef": None}
    },
    "lite with 3 replicas": {
        "backend": {"type": "lite", "url": None, "embedded": None, "urlSecretRef": None},
        "replicas": 3,
    },
    "embedded nats": {"backend": {"type": "nats", "url": None, "urlSecretRef": None, "embedded": True}},
    "redis without url": {"backend": {"type": "redis", "url": None, "urlSecretRef": None, "embedded": None}},
    "min>max": {"autoScaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 2}},
    "bad duration": {"autoScaling": {"enabled": True, "scaleDownCooldown": "abc"}},
    "pdb min and max": {"replicas": 2, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
    "bad pdb percent": {"podDisruptionBudget": {"maxUnavailable": "bad%"}},
    "reserved pod label": {"podLabels": {"app.kubernetes.io/name": "x"}},
    "bad pod label key": {"podLabels": {"bad key!": "x"}},
    "bad pod label value": {"podLabels": {"team": "-bad-"}},
    "bad annotation key": {"podAnnotations": {"bad key!": "x"}},
    "bad monitoring label": {"monitoring": {"enabled": True, "labels": {"x": "y" * 70}}},
    "bad node selector": {"nodeSelector": {"disk": "-ssd-"}},
    "root with runAsNonRoot": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
    "negative uid": {"securityContext": {"runAsUser": -1}},
    "bogus toleration": {"tolerations": [{"key": "k", "operator": "Bogus"}]},
    "zero skew": {
        "topologySpreadConstraints": [
            {
                "maxSkew": 0,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ]
    },
    "bad topology key": {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "bad key", "whenUnsatisfiable": "Sometimes"}
        ]
    },
    "spaced image": {"image": " spaced:1 "},
    "missing priority class": {"priorityClassName": "no-such-class"},
    "missing service account": {"serviceAccountName": "missing-sa"},
    "bad priority class name": {"priorityClassName": "Bad_Name"},
    "absent url secret": {
        "backend": {
            "type": "postgres",
            "url": None,
            "embedded": None,
            "urlSecretRef": {"name": "absent", "key": "url"},
        }
    },
    "absent key in url secret": {
        "backend": {
            "type": "postgres",
            "url": None,
            "embedded": None,
            "urlSecretRef": {"name": "bad-db", "key": "nope"},
        }
    },
    "absent api key secret": {"auth": {"apiKeySecretRef": {"name": "absent", "key": "api-key"}}},
    "inline password": {
        "backend": {
            "type": "postgres",
            "url": "postgres://u:hunter2-inline-pw@db/x",
            "embedded": None,
            "urlSecretRef": None,
        }
    },
    "bad quantity": {"resources": {"limits": {"memory": "lots"}}},
    "negative replicas": {"replicas": -1},
}
WORKER_MUTATIONS: dict[str, dict[str, Any]] = {
    "requests>limits": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    "duplicate env": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
    "env name with =": {"env": [{"name": "B=C", "value": "1"}]},
    "env value and valueFrom": {
        "env": [{"name": "A", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    },
    "duplicate job types": {"jobTypes": ["a.b", "a.b"]},
    "duplicate queues": {"queues": ["q", "q"]},
    "empty job type": {"jobTypes": [""]},
    "no job types": {"jobTypes": []},
    "scale to zero with cpu": {
        "autoScaling": {"enabled": True, "metric": "cpu", "minReplicas": 0, "maxReplicas": 2}
    },
    "cpu window over 1h": {
        "autoScaling": {
            "enabled": True,
            "metric": "cpu",
            "minReplicas": 1,
            "maxReplicas": 2,
            "scaleDownDelay": "2h",
        }
    },
    "min>max": {"autoScaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 1}},
    "sub-second polling": {"autoScaling": {"enabled": True, "pollingInterval": "0.5s"}},
    "bogus metric": {"autoScaling": {"enabled": True, "metric": "bogus"}},
    "negative grace": {"gracefulShutdown": {"timeoutSeconds": -1}},
    "negative concurrency": {"concurrency": -1},
    "absent cluster": {"clusterRef": "absent"},
    "invalid cluster": {"clusterRef": "broken"},
    "reserved pod label": {"podLabels": {"app.kubernetes.io/instance": "x"}},
    "bogus toleration": {"tolerations": [{"key": "k", "operator": "Bogus"}]},
    "spaced image": {"image": " spaced:1 "},
    "missing service account": {"serviceAccountName": "missing-sa"},
    "root with runAsNonRoot": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
    "drain with cpu": {
        "gracefulShutdown": {"drainBeforeShutdown": True},
        "autoScaling": {"enabled": True, "metric": "cpu", "minReplicas": 1, "maxReplicas": 2},
    },
}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a None value removes the key."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _strategies() -> Any:
    """(kind, spec, mutation names): mostly a valid base spec with up to two hostile edits, sometimes a spec
    drawn field by field from a hostile vocabulary."""
    from hypothesis import strategies as st

    def opt(d: dict[str, Any]) -> Any:
        return st.fixed_dictionaries({}, optional=d)

    base_cluster = st.sampled_from(
        [
            {"backend": {"type": "lite"}, "replicas": 1},
            {"backend": {"type": "nats", "url": "nats://n:4222"}, "replicas": 1},
            {"backend": {"type": "redis", "embedded": True}, "replicas": 1},
            {
                "backend": {"type": "postgres", "urlSecretRef": {"name": "bad-db", "key": "url"}},
                "replicas": 2,
            },
        ]
    )
    base_worker = st.sampled_from(
        [
            {"clusterRef": "anchor", "jobTypes": ["a.b"], "image": "example.invalid/w:1", "replicas": 1},
            {
                "clusterRef": "anchor",
                "jobTypes": ["a.b", "c.d"],
                "queues": ["q1"],
                "image": "example.invalid/w:1",
                "autoScaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2, "pollingInterval": "5s"},
            },
        ]
    )

    def mutated(kind: str, base: Any, table: dict[str, dict[str, Any]]) -> Any:
        names = st.lists(st.sampled_from(sorted(table)), max_size=2, unique=True)

        def build(pair: tuple[dict[str, Any], list[str]]) -> tuple[str, dict[str, Any], tuple[str, ...]]:
            spec, chosen = pair
            for name in chosen:
                spec = _merge(spec, table[name])
            return kind, spec, tuple(chosen)

        return st.tuples(base, names).map(build)

    quantity = st.sampled_from(["100m", "1", "0.5", "128Mi", "-1", "abc", "3Ti"])
    duration = st.sampled_from(["30s", "5m", "1h30m", "0s", "-5s", "abc", "999999h"])
    label_key = st.sampled_from(["team", "example.com/tier", "app.kubernetes.io/name", "bad key!"])
    labels = st.dictionaries(label_key, st.sampled_from(["a", "", "-bad-", "ok.value_1"]), max_size=2)
    raw_cluster = st.fixed_dictionaries(
        {
            "backend": st.fixed_dictionaries(
                {"type": st.sampled_from(["lite", "redis", "postgres", "nats", "kafka", "sqs", "bogus"])},
                optional={
                    "url": st.sampled_from(["redis://r:6379", "", "not a url"]),
                    "embedded": st.booleans(),
                },
            )
        },
        optional={
            "replicas": st.integers(-1, 3),
            "resources": opt({"requests": opt({"cpu": quantity}), "limits": opt({"cpu": quantity})}),
            "autoScaling": opt(
                {
                    "enabled": st.booleans(),
                    "minReplicas": st.integers(-1, 3),
                    "maxReplicas": st.integers(-1, 3),
                    "scaleUpCooldown": duration,
                }
            ),
            "podLabels": labels,
            "monitoring": opt(
                {"enabled": st.booleans(), "grafanaDashboard": st.booleans(), "interval": duration}
            ),
        },
    ).map(lambda spec: ("OJSCluster", spec, ("raw",)))
    raw_worker = st.fixed_dictionaries(
        {
            "clusterRef": st.sampled_from(["anchor", "absent", "broken"]),
            "jobTypes": st.lists(st.sampled_from(["a.b", "", "dup", "dup"]), max_size=3),
            "image": st.sampled_from(["example.invalid/w:1", "w", " spaced "]),
        },
        optional={
            "replicas": st.integers(-1, 3),
            "concurrency": st.integers(-1, 5),
            "env": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["A", "B=C", "", "A"])}, optional={"value": st.just("v")}
                ),
                max_size=2,
            ),
            "autoScaling": opt(
                {
                    "enabled": st.booleans(),
                    "metric": st.sampled_from(["queueDepth", "cpu"]),
                    "minReplicas": st.integers(-1, 3),
                    "maxReplicas": st.integers(-1, 3),
                    "pollingInterval": st.sampled_from(["1s", "abc", "0.5s"]),
                }
            ),
        },
    ).map(lambda spec: ("OJSWorker", spec, ("raw",)))
    return st.one_of(
        mutated("OJSCluster", base_cluster, CLUSTER_MUTATIONS),
        mutated("OJSWorker", base_worker, WORKER_MUTATIONS),
        mutated("OJSCluster", base_cluster, CLUSTER_MUTATIONS),
        mutated("OJSWorker", base_worker, WORKER_MUTATIONS),
        raw_cluster,
        raw_worker,
    )


READY_REASONS = {
    "Running",
    "Pending",
    "Scaling",
    "Degraded",
    "Draining",
    "Error",
    "InvalidSpec",
    "SecretNotFound",
    "NameConflict",
    "ClusterNotFound",
    "ClusterInvalid",
    "RolloutFailed",
    "WaitingForAPIKey",
}


def test_generated_bad_resources_get_a_condition_and_no_error_loop(
    crds: ControlPlane, shared: Shared
) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    ns = shared.ns["bad"]
    client = driver(crds)
    op = shared.op
    n = size(60, 500)
    client.create(
        SECRETS, secret(ns, "bad-db", {"url": "postgres://ojs:pw-generated-spec-9f3@db:5432/x"}), ns
    )
    PLANTED.update(
        {"postgres://ojs:pw-generated-spec-9f3@db:5432/x", "pw-generated-spec-9f3", "hunter2-inline-pw"}
    )
    client.create(OJSCLUSTERS, cluster_body("anchor", ns), ns)
    # A cluster that only Python refuses, for workers to point at.
    broken = client.create(
        OJSCLUSTERS,
        cluster_body("broken", ns, resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        ns,
    )
    strategy = _strategies()
    created: dict[tuple[str, str], dict[str, Any]] = {("OJSCluster", "broken"): broken}
    mutations_of: dict[str, tuple[str, ...]] = {"broken": ("requests>limits",)}
    rejected: collections.Counter[str] = collections.Counter()
    counter = iter(range(10**6))
    errors_before = sum(
        metric(op, "controller_runtime_reconcile_errors_total", {"controller": c})
        for c in ("ojscluster", "ojsworker")
    )

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def submit(item: tuple[str, dict[str, Any], tuple[str, ...]]) -> None:
        kind, spec, mutations = item
        i = next(counter)
        name = f"h-{i:04d}" if kind == "OJSCluster" else f"hw-{i:04d}"
        res = OJSCLUSTERS if kind == "OJSCluster" else OJSWORKERS
        body = {"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}
        try:
            obj = client.create(res, body, ns)
        except InvalidError as e:
            causes = e.causes
            rejected[(causes[0].get("field") if causes else "") or e.reason] += 1
            return
        created[(kind, name)] = obj
        mutations_of[name] = mutations

    started = time.monotonic()
    submit()
    submitted = time.monotonic() - started
    assert created, "CEL rejected every generated spec: the generator is too hostile"

    def settled() -> list[str]:
        pending = []
        for res in (OJSCLUSTERS, OJSWORKERS):
            live = {o["metadata"]["name"]: o for o in client.list(res, ns)[0]}
            for (kind, name), _ in created.items():
                if kind != res.kind:
                    continue
                o = live.get(name)
                st_ = status_of(o)
                if (
                    o is None
                    or st_.get("observedGeneration") != o["metadata"]["generation"]
                    or not cond_of(o, "Ready")
                ):
                    pending.append(name)
        return pending

    last: list[str] = []

    def all_settled() -> bool:
        nonlocal last
        last = settled()
        return not last

    try:
        wait_until("every created object has a Ready condition", all_settled, size(150, 600), 1.0)
    except AssertionError:
        raise AssertionError(
            f"{len(last)} objects without a current Ready condition, e.g. "
            f"{[(x, mutations_of.get(x)) for x in last[:8]]}; "
            f"failures {reconcile_failures(op)}; "
            + "; ".join(
                f"{r.get('key')}: {r.get('error_type')} {str(r.get('error'))[:160]}"
                for r in log_records(op)
                if r.get("event") == "reconcile failed"
            )[-1500:]
        ) from None
    converge_s = time.monotonic() - started

    # Every condition names the problem: the Python rules (which admission would have applied) decide.
    outcomes: collections.Counter[str] = collections.Counter()
    by_mutation: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    wrong: list[str] = []
    for res in (OJSCLUSTERS, OJSWORKERS):
        for o in client.list(res, ns)[0]:
            if (res.kind, o["metadata"]["name"]) not in created:
                continue
            ready = cond_of(o, "Ready")
            outcomes[f"{res.kind}:{ready.get('reason')}"] += 1
            for m in mutations_of.get(o["metadata"]["name"], ()) or ("none",):
                by_mutation[f"{res.kind} {m}"][str(ready.get("reason"))] += 1
            if res == OJSCLUSTERS:
                errors = validate_cluster(o).errors
            else:
                ref = (o.get("spec") or {}).get("clusterRef")
                exists = any(c["metadata"]["name"] == ref for c in client.list(OJSCLUSTERS, ns)[0])
                errors = validate_worker(o, cluster_exists=exists).errors
            if errors:
                if ready.get("reason") != "InvalidSpec" or errors[0].path not in ready.get("message", ""):
                    wrong.append(
                        f"{o['metadata']['name']}: want InvalidSpec naming {errors[0].path}, got {ready}"
                    )
            elif ready.get("reason") == "InvalidSpec":
                # Only a child the API server refused may make a spec the Python rules accept invalid.
                if "refused by the API server" not in ready.get("message", ""):
                    wrong.append(f"{o['metadata']['name']}: InvalidSpec without a rule: {ready}")
            elif ready.get("reason") not in READY_REASONS:
                wrong.append(f"{o['metadata']['name']}: unexpected {ready}")
            if ready.get("status") == "False" and not ready.get("message"):
                wrong.append(f"{o['metadata']['name']}: Ready=False without a message")
    assert wrong == [], wrong[:10]

    # No hot loop: once settled, reconcile errors grow slowly (exponential backoff), if at all.
    errors_settled = sum(
        metric(op, "controller_runtime_reconcile_errors_total", {"controller": c})
        for c in ("ojscluster", "ojsworker")
    )
    window = 10.0
    time.sleep(window)
    errors_later = sum(
        metric(op, "controller_runtime_reconcile_errors_total", {"controller": c})
        for c in ("ojscluster", "ojsworker")
    )
    rate = (errors_later - errors_settled) / window
    assert rate < 1.0, f"reconcile errors grow at {rate:.1f}/s after settling"
    assert unexpected_failures(op) == [], unexpected_failures(op)[:10]
    assert op.proc.poll() is None
    figure(
        "bad_resources",
        generated=sum(rejected.values()) + len(created),
        rejected_at_create=sum(rejected.values()),
        rejected_by_field=dict(rejected.most_common(12)),
        created=len(created),
        outcomes=dict(outcomes.most_common()),
        ready_reason_by_mutation={k: dict(v) for k, v in sorted(by_mutation.items())},
        submit_s=round(submitted, 1),
        all_conditions_s=round(converge_s, 1),
        reconcile_errors_while_settling=errors_settled - errors_before,
        reconcile_errors_per_s_after=round(rate, 2),
        failure_types=dict(reconcile_failures(op)),
    )


# =========================================================================== 9. pod security
def test_everything_created_is_admitted_under_restricted_pod_security(
    crds: ControlPlane, shared: Shared
) -> None:
    ns = shared.ns["psa"]
    client = driver(crds)
    audit = AuditLog(crds)
    objs = [
        (OJSCLUSTERS, cluster_body("lite", ns)),
        (OJSCLUSTERS, cluster_body("redis", ns, backend={"type": "redis", "embedded": True}, replicas=2)),
        (
            OJSCLUSTERS,
            cluster_body(
                "pvc",
                ns,
                backend={"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi"}}},
                securityContext={"runAsUser": 2000, "fsGroup": 2000},
            ),
        ),
        (OJSWORKERS, worker_body("plain", ns, "lite")),
        (
            OJSWORKERS,
            worker_body("custom", ns, "redis", securityContext={"runAsUser": 1000, "runAsGroup": 1000}),
        ),
        (
            OJSWORKERS,
            worker_body(
                "drained",
                ns,
                "redis",
                replicas=2,
                gracefulShutdown={"drainBeforeShutdown": True, "timeoutSeconds": 5},
            ),
        ),
        (
            OJSWORKERS,
            worker_body(
                "cpu",
                ns,
                "lite",
                resources={"requests": {"cpu": "100m"}},
                autoScaling={"enabled": True, "metric": "cpu", "minReplicas": 1, "maxReplicas": 3},
            ),
        ),
    ]
    # The namespace really enforces: a pod without the restricted settings is refused.
    with pytest.raises(ApiError) as refused:
        client.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "probe"},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]},
            },
            ns,
            dry_run=True,
        )
    assert refused.value.status == 403 and "restricted" in refused.value.message
    for res, body in objs:
        client.create(res, body, ns)

    def all_pods_created() -> bool:
        deps = client.list(DEPLOYMENTS, ns, label_selector=MANAGED)[0]
        if len(deps) != 9:  # 3 servers, 2 redis, 4 workers
            return False
        pods = client.list(PODS, ns)[0]
        for d in deps:
            sel = d["spec"]["selector"]["matchLabels"]
            mine = [
                p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
            ]
            if len(mine) < (d["spec"].get("replicas") or 0):
                return False
        return True

    wait_until("every pod of every Deployment admitted", all_pods_created, 120, 1.0)
    failed = []
    for rs in client.list(REPLICASETS, ns)[0]:
        for c in (rs.get("status") or {}).get("conditions") or []:
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
                failed.append(f"{rs['metadata']['name']}: {c.get('message')}")
    assert failed == []
    violations = [
        f"{e['verb']} {e['requestURI']}: {e['annotations']['pod-security.kubernetes.io/audit-violations']}"
        for e in audit.events(ns)
        if "pod-security.kubernetes.io/audit-violations" in (e.get("annotations") or {})
        and "dryRun" not in e.get("requestURI", "")  # the probe above
    ]
    assert violations == []
    denied = [
        e["requestURI"]
        for e in audit.events(ns)
        if (e.get("responseStatus") or {}).get("code") == 403 and "dryRun" not in e.get("requestURI", "")
    ]
    assert denied == []
    pods = client.list(PODS, ns)[0]
    figure(
        "pod_security",
        namespace_labels="enforce/warn/audit=restricted",
        deployments=len(client.list(DEPLOYMENTS, ns, label_selector=MANAGED)[0]),
        pods_admitted=len(pods),
        audit_violations=len(violations),
        replicaset_failures=len(failed),
    )


# =========================================================================== 10. metrics protection
def test_secure_metrics_refuse_unauthorised_scrapes(crds: ControlPlane, ops: list[OperatorProcess]) -> None:
    ns = ns_for(crds, "rel-metrics")
    client = driver(crds)
    audit = AuditLog(crds)
    op = start_op(crds, "--metrics-secure", name="rel-metrics", namespaces=[ns], started=ops)
    wait_until("operator ready", op.ready, 60)
    role = f"ojsctrl-metrics-reader-{ns}"
    for sa in ("scraper", "nobody"):
        client.create(
            SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}, ns
        )
    client.create(
        CLUSTERROLES,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
        },
    )
    client.create(
        CLUSTERROLEBINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": ns}],
        },
    )
    try:

        def token(sa: str) -> str:
            out = client.request(
                "POST",
                f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 600},
                },
            )
            PLANTED.add(out["status"]["token"])
            return str(out["status"]["token"])

        good, bad = token("scraper"), token("nobody")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def scrape(tok: str | None, scheme: str = "https") -> tuple[int, str]:
            req = urllib.request.Request(f"{scheme}://127.0.0.1:{op.metrics_port}/metrics")
            if tok:
                req.add_header("Authorization", f"Bearer {tok}")
            try:
                with urllib.request.urlopen(req, timeout=10, context=ctx if scheme == "https" else None) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        assert scrape(None)[0] == 401
        assert scrape("not-a-token")[0] == 401
        status, body = scrape(bad)
        assert status == 403 and f"system:serviceaccount:{ns}:nobody" in body
        scrapes = 10
        for _ in range(scrapes):
            status, body = scrape(good)
            assert status == 200 and "controller_runtime_reconcile_total" in body
        op.metrics_snapshot = body  # type: ignore[attr-defined]
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            scrape(good, scheme="http")
        reviews = collections.Counter(
            (e.get("objectRef") or {}).get("resource")
            for e in by_operator(audit.events(), "rel-metrics")
            if (e.get("objectRef") or {}).get("resource") in ("tokenreviews", "subjectaccessreviews")
        )
        # 10 authorised scrapes cost one review of each kind (cached), plus one per refused token.
        assert reviews["tokenreviews"] <= 3 + 1 and reviews["subjectaccessreviews"] <= 2 + 1, reviews
    finally:
        client.delete(CLUSTERROLEBINDINGS, role)
        client.delete(CLUSTERROLES, role)
    figure(
        "metrics_secure",
        no_token=401,
        invalid_token=401,
        sa_without_rbac=403,
        sa_with_rbac=200,
        plain_http="refused",
        authorised_scrapes=scrapes,
        tokenreviews=reviews["tokenreviews"],
        subjectaccessreviews=reviews["subjectaccessreviews"],
    )


# =========================================================================== 11. load
def test_load_autoscaling_workers_share_one_poll_per_cluster(
    crds: ControlPlane, ops: list[OperatorProcess]
) -> None:
    n_workers = size(200, 2000)
    n_clusters = n_workers // 10
    duration = size(60, 600)
    interval = 5.0
    queues = [f"load-{i}" for i in range(10)]
    srv = keyed_ojs_server(driver(crds))
    srv.start()
    try:
        for q in queues:
            srv.set_queue(q, available=0, active=0)
        ns = ns_for(crds, "rel-load")
        client = driver(crds)
        op = start_op(
            crds,
            "--kube-api-qps",
            "100",
            "--kube-api-burst",
            "200",
            name="rel-load",
            namespaces=[ns],
            ojs_url=srv.base_url + "/{namespace}/{name}",
            started=ops,
        )
        wait_until("operator ready", op.ready, 60)
        auto = {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetJobsPerWorker": 10,
            "pollingInterval": f"{interval:.0f}s",
            "scaleDownDelay": "10s",
        }
        bodies: list[tuple[Resource, dict[str, Any]]] = [
            (OJSCLUSTERS, cluster_body(f"lc{c:04d}", ns)) for c in range(n_clusters)
        ]
        bodies += [
            (
                OJSWORKERS,
                worker_body(
                    f"lw{w:05d}", ns, f"lc{w % n_clusters:04d}", queues=[queues[w % 10]], autoScaling=auto
                ),
            )
            for w in range(n_workers)
        ]
        setup_start = time.monotonic()
        run_storm(client, ns, bodies)

        def autoscaling_everywhere() -> bool:
            ws = client.list(OJSWORKERS, ns)[0]
            return len(ws) == n_workers and all(cond_of(w, "Autoscaling").get("status") == "True" for w in ws)

        wait_until("every worker autoscaling on polled stats", autoscaling_everywhere, size(300, 1800), 2.0)
        setup_s = time.monotonic() - setup_start

        polls_before = srv.poll_counts()
        rss: list[float] = []
        depth: list[float] = []
        started = time.monotonic()
        reconciles_before = metric(
            op, "controller_runtime_reconcile_total", {"controller": "ojsworker", "result": "requeue_after"}
        )
        cpu_before = cpu_seconds(op.proc.pid)
        step = 0
        while time.monotonic() - started < duration:
            if step % 5 == 0:
                # Every 10 s the next queue gets busy (its tenth of the workers want 2 replicas) and the
                # previous one goes idle (its workers scale down after scaleDownDelay).
                busy = (step // 5) % len(queues)
                for i, q in enumerate(queues):
                    srv.set_queue(q, available=15 if i == busy else 0)
            rss.append(rss_mb(op.proc.pid))
            depth.append(
                metric(op, "workqueue_depth", {"name": "ojsworker"})
                + metric(op, "workqueue_depth", {"name": "ojscluster"})
            )
            step += 1
            time.sleep(2)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(op.proc.pid) - cpu_before
        reconciles = (
            metric(
                op,
                "controller_runtime_reconcile_total",
                {"controller": "ojsworker", "result": "requeue_after"},
            )
            - reconciles_before
        )
        polls_after = srv.poll_counts()
        per_cluster = [
            polls_after.get(f"/{ns}/lc{c:04d}", 0) - polls_before.get(f"/{ns}/lc{c:04d}", 0)
            for c in range(n_clusters)
        ]
        expected = elapsed / interval
        scale_ups = metric_sum(op, "ojs_autoscaler_scale_total", {"direction": "up"})
        scale_downs = metric_sum(op, "ojs_autoscaler_scale_total", {"direction": "down"})
        third = max(1, len(rss) // 3)
        figure(
            "load",
            workers=n_workers,
            clusters=n_clusters,
            window_s=round(elapsed),
            polling_interval_s=interval,
            polls_total=sum(per_cluster),
            polls_per_cluster_min_max=(min(per_cluster), max(per_cluster)),
            polls_expected_per_cluster=round(expected, 1),
            polls_if_per_worker=round(expected * n_workers),
            rss_mb_first_last_max=(round(rss[0], 1), round(rss[-1], 1), round(max(rss), 1)),
            workqueue_depth_max_last_third=max(depth[-third:]),
            workqueue_depth_samples=depth,
            worker_reconciles_per_s=round(reconciles / elapsed, 1),
            operator_cpu_share=round(cpu / elapsed, 2),
            scale_ups=scale_ups,
            scale_downs=scale_downs,
            setup_s=round(setup_s, 1),
        )
        # One poll per cluster per interval, shared by its ten workers (not ten polls).
        assert max(per_cluster) <= expected + 2, per_cluster
        assert min(per_cluster) >= expected * 0.6, per_cluster
        assert sum(per_cluster) < expected * n_workers / 5
        assert scale_ups > 0 and scale_downs > 0, "the load did not make the workers scale"
        # Bounded memory: no growth trend beyond noise once running.
        assert sum(rss[-third:]) / third <= sum(rss[:third]) / third * 1.15 + 10, rss
        # No growing queue: the depth comes back down; the last samples are not a rising backlog.
        assert min(depth[-third:]) <= n_workers * 0.1, depth
        assert op.proc.poll() is None and unexpected_failures(op) == []
    finally:
        srv.stop()


# =========================================================================== 12. secrets (last)
def _secret_values(client: Client, ns: str) -> set[str]:
    out: set[str] = set()
    for s in client.list(SECRETS, ns)[0]:
        if s.get("type") == "kubernetes.io/service-account-token":
            continue
        for raw in (s.get("data") or {}).values():
            try:
                value = base64.b64decode(raw).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            if len(value) >= 8:
                out.add(value)
            try:
                pw = urlsplit(value).password
            except ValueError:
                pw = None
            if pw and len(pw) >= 6:
                out.add(pw)
    return out


def test_no_secret_value_leaks_anywhere(crds: ControlPlane, shared: Shared) -> None:
    """Runs last: every value of every Secret in the module's namespaces, and the tokens and passwords the
    tests planted, searched in every operator's log and metrics, and in events, statuses and ConfigMaps."""
    ns = shared.ns["secrets"]
    client = driver(crds)
    # A few more secret-bearing clusters, including a rotation, so there is something to leak.
    client.create(SECRETS, secret(ns, "backend", {"url": "redis://:pw-rotation-one-7a1@redis:6379/0"}), ns)
    client.create(SECRETS, secret(ns, "given-key", {"api-key": "api-key-given-by-user-5c2"}), ns)
    client.create(
        OJSCLUSTERS,
        cluster_body(
            "withref",
            ns,
            backend={"type": "redis", "urlSecretRef": {"name": "backend", "key": "url"}},
            auth={"apiKeySecretRef": {"name": "given-key", "key": "api-key"}},
        ),
        ns,
    )
    client.create(OJSCLUSTERS, cluster_body("embedded", ns, backend={"type": "redis", "embedded": True}), ns)
    client.create(OJSWORKERS, worker_body("w", ns, "withref"), ns)
    wait_until(
        "secret-bearing objects Running",
        lambda: not not_converged(client, ns) and len(client.list(OJSCLUSTERS, ns)[0]) == 2,
        90,
    )
    hash_before = client.get(DEPLOYMENTS, "withref-server", ns)["spec"]["template"]["metadata"][
        "annotations"
    ]["ojs.openjobspec.dev/config-hash"]
    client.patch(SECRETS, "backend", {"stringData": {"url": "redis://:pw-rotation-two-8b4@redis:6379/0"}}, ns)
    PLANTED.update(
        {
            "redis://:pw-rotation-one-7a1@redis:6379/0",
            "pw-rotation-one-7a1",
            "redis://:pw-rotation-two-8b4@redis:6379/0",
            "pw-rotation-two-8b4",
            "api-key-given-by-user-5c2",
        }
    )
    wait_until(
        "the rotation reached the server",
        lambda: (
            client.get(DEPLOYMENTS, "withref-server", ns)["spec"]["template"]["metadata"]["annotations"][
                "ojs.openjobspec.dev/config-hash"
            ]
            != hash_before
        ),
        30,
        0.2,
    )

    needles: set[str] = set(PLANTED)
    haystacks: dict[str, str] = {}
    planes: dict[int, ControlPlane] = {}
    for plane, name in NAMESPACES:
        planes[id(plane)] = plane
        c = driver(plane)
        try:
            needles |= _secret_values(c, name)
            haystacks[f"{name}/events"] = json.dumps(c.list(EVENTS, name)[0])
            haystacks[f"{name}/configmaps"] = json.dumps(c.list(CONFIGMAPS, name)[0])
            for res in (OJSCLUSTERS, OJSWORKERS):
                haystacks[f"{name}/{res.plural}.status"] = json.dumps(
                    [o.get("status") for o in c.list(res, name)[0]]
                )
        except ApiError:
            continue
    for op in OPERATORS:
        haystacks[f"log {op.name}"] = op.logs()
        if op.proc.poll() is None:
            with contextlib.suppress(Exception):
                haystacks[f"metrics {op.name}"] = op.metrics()
        saved = op.log_path.with_suffix(".metrics")
        if saved.exists():
            haystacks[f"metrics {op.name}"] = saved.read_text()
    needles = {n for n in needles if len(n) >= 6}
    leaks = [
        f"{where}: {needle[:4]}… ({len(needle)} chars)"
        for where, text in haystacks.items()
        for needle in needles
        if needle in text
    ]
    assert leaks == [], leaks[:20]
    assert len(needles) > 10 and len(haystacks) > 10
    log_bytes = sum(len(t) for w, t in haystacks.items() if w.startswith("log "))
    figure(
        "secrets",
        secret_values_searched=len(needles),
        places_searched=len(haystacks),
        operator_logs=len(OPERATORS),
        log_megabytes=round(log_bytes / 1e6, 1),
        leaks=len(leaks),
    )
