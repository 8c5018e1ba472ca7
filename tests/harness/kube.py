"""Reaching the control plane from a test: clients, namespaces, object bodies, reading objects back,
waiting, events and the audit log."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    LEASES,
    AlreadyExistsError,
    ApiError,
    Client,
    ClientOptions,
    NotFoundError,
    Resource,
)
from tests.harness import ledger
from tests.harness.controlplane import ControlPlane

FULL = os.environ.get("OJSCTRL_FULL") == "1"
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"
OJS_API = "ojs.openjobspec.dev/v1alpha1"
UA = "ojsctrl/"  # the operator's user agent starts so


def size(reduced: int, full: int) -> int:
    """Test sizes: reduced by default, the issue's sizes with OJSCTRL_FULL=1."""
    return full if FULL else reduced


def driver(plane: ControlPlane, agent: str = "ojsctrl-e2e-driver") -> Client:
    """A client for the test itself (no client-side rate limit), distinct user agent."""
    return Client.from_kubeconfig(
        str(plane.kubeconfig), options=ClientOptions(qps=0, burst=1, user_agent=agent, pool_size=32)
    )


def namespace(plane: ControlPlane, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    plane.create_namespace(name)
    return name


def parallel(fn: Callable[[Any], Any], items: list[Any], workers: int = 16) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def configmap(ns: str, name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "data": data,
    }


def secret(ns: str, name: str, string_data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": string_data,
    }


def foreign_deployment(
    ns: str, name: str, app: str, image: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A one-container Deployment of a user's (not the operator's), e.g. squatting on a child's name."""
    metadata: dict[str, Any] = {"name": name, "namespace": ns}
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }


def ojs_object(kind: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": OJS_API, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ojs_cluster(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return ojs_object("OJSCluster", ns, name, spec)


def ojs_worker(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return ojs_object("OJSWorker", ns, name, spec)


def install_crds(plane: ControlPlane) -> ControlPlane:
    """Install the operator's CRDs (server-side apply, as `make install` does) and wait until they serve."""
    files = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
    args = ["apply", "--server-side", "--field-manager=ojsctrl-install"]
    for f in files:
        args += ["-f", str(f)]
    plane.kubectl(*args)
    for f in files:
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(f))
    return plane


def sample(name: str) -> list[dict[str, Any]]:
    """The documents of a file in deploy/samples."""
    return [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d]


def create(client: Client, obj: dict[str, Any], ns: str) -> dict[str, Any]:
    """Create an OJSCluster or OJSWorker document (a sample, say) in namespace ns."""
    obj = dict(obj)
    obj["metadata"] = {**obj["metadata"], "namespace": ns}
    res = OJSCLUSTERS if obj["kind"] == "OJSCluster" else OJSWORKERS
    return client.create(res, obj, ns)


def _audit_time(event: dict[str, Any]) -> float | None:
    """An audit event's time (whole seconds, wall clock), or None when it has none."""
    ts = event.get("stageTimestamp", "")
    if not ts:
        return None
    return time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


def mutating_by_operator(plane: ControlPlane, since: float, ns: str) -> list[str]:
    """The operator's writes in namespace ns since then (wall clock), from the plane's audit log."""
    out = []
    for e in plane.audit_events():
        if not e.get("userAgent", "").startswith(UA) or e.get("verb") in ("get", "list", "watch"):
            continue
        t = _audit_time(e)
        if t is not None and t >= since and f"/namespaces/{ns}/" in e.get("requestURI", ""):
            out.append(f"{e['verb']} {e['requestURI']}")
    return out


def operator_requests_on(plane: ControlPlane, since: float, ns: str, resource: str, name: str) -> list[str]:
    """Every request of the operator (reads too) on one object since then (wall clock), from the plane's
    audit log, as "verb query-string"."""
    out = []
    for e in plane.audit_events():
        ref = e.get("objectRef") or {}
        if not e.get("userAgent", "").startswith(UA) or ref.get("resource") != resource:
            continue
        t = _audit_time(e)
        if ref.get("namespace") == ns and ref.get("name") == name and t is not None and t >= since:
            query = e["requestURI"].split("?", 1)[1] if "?" in e["requestURI"] else ""
            out.append(f"{e['verb']} {query}".strip())
    return out


# --------------------------------------------------------------------------- reading objects back
def get(client: Client, res: Resource, ns: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        return client.get(res, name, ns)
    except NotFoundError:
        return None


def status_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    return ((obj or {}).get("status")) or {}


def cond_of(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The object's condition of that type ({} when there is none)."""
    for c in status_of(obj).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def phase(client: Client, ns: str, name: str) -> str | None:
    """An OJSCluster's phase (None while it has none, or when the cluster does not exist)."""
    return status_of(get(client, OJSCLUSTERS, ns, name)).get("phase")


def cond(client: Client, ns: str, name: str, type_: str) -> dict[str, Any]:
    """An OJSCluster's condition of that type ({} when there is none)."""
    return cond_of(get(client, OJSCLUSTERS, ns, name), type_)


def wstatus(client: Client, ns: str, name: str) -> dict[str, Any]:
    """An OJSWorker's status ({} when there is none)."""
    return status_of(get(client, OJSWORKERS, ns, name))


def wcond(client: Client, ns: str, name: str, type_: str) -> dict[str, Any]:
    """An OJSWorker's condition of that type ({} when there is none)."""
    return cond_of(get(client, OJSWORKERS, ns, name), type_)


def gone(client: Client, ns: str, name: str, *resources: Resource) -> bool:
    """No object of these kinds by that name exists."""
    return all(get(client, res, ns, name) is None for res in resources)


def replicas(client: Client, ns: str, dep: str) -> int | None:
    """A Deployment's spec.replicas (None when it is unset or the Deployment does not exist)."""
    obj = get(client, DEPLOYMENTS, ns, dep)
    return None if obj is None else obj["spec"].get("replicas")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0, interval: float = 0.1) -> float:
    """Poll until check() is true; returns the seconds it took."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception as e:
            last = f" (last error: {type(e).__name__}: {e})"
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{last}")


class Recorder:
    """An informer event handler that records (type, key, resourceVersion) in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    @staticmethod
    def _key(obj: Any) -> tuple[str, str]:
        from ojsctrl.runtime.informer import DeletedFinalStateUnknown

        if isinstance(obj, DeletedFinalStateUnknown):
            return obj.key, str(obj.obj["metadata"].get("resourceVersion"))
        meta = obj["metadata"]
        return f"{meta.get('namespace')}/{meta['name']}", str(meta.get("resourceVersion"))

    def on_add(self, obj: Any) -> None:
        with self.lock:
            self.events.append(("add", *self._key(obj)))

    def on_update(self, old: Any, new: Any) -> None:
        with self.lock:
            self.events.append(("update", *self._key(new)))

    def on_delete(self, obj: Any) -> None:
        from ojsctrl.runtime.informer import DeletedFinalStateUnknown

        kind = "tombstone" if isinstance(obj, DeletedFinalStateUnknown) else "delete"
        with self.lock:
            self.events.append((kind, *self._key(obj)))

    def of(self, key: str) -> list[str]:
        with self.lock:
            return [t for t, k, _ in self.events if k == key]


def cache_equals_list(client: Client, informer: Any, ns: str) -> bool:
    """The informer's cache holds exactly what a fresh list returns (names and resourceVersions)."""
    items, _ = client.list(CONFIGMAPS, ns, label_selector=informer.label_selector)
    fresh = {f"{ns}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in items}
    cached = {
        k: o["metadata"]["resourceVersion"]
        for k, o in ((k, informer.store.get(k)) for k in informer.store.keys())
        if o is not None and k.startswith(ns + "/")
    }
    return fresh == cached


# --------------------------------------------------------------------------- events
def events_of(client: Client, ns: str, kind: str, name: str) -> list[dict[str, Any]]:
    """The core/v1 Events whose involved object is that object (oldest first)."""
    from ojsctrl.runtime.client import EVENTS

    items, _ = client.list(EVENTS, ns)
    mine = [
        e
        for e in items
        if (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == name
    ]
    return sorted(mine, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def has_event(client: Client, ns: str, kind: str, name: str, reason: str, type_: str | None = None) -> bool:
    """An Event with that reason (and type: Normal/Warning) was recorded for the object."""
    return any(
        e.get("reason") == reason and (type_ is None or e.get("type") == type_)
        for e in events_of(client, ns, kind, name)
    )


# --------------------------------------------------------------------------- missing tools
def missing_tool(reason: str) -> None:
    """A tool a test needs is not installed: skip locally (saying how to get it), fail under CI=true.

    CI installs every tool the suite uses (`make deps`, hack/install-deps.sh; the control-plane build
    brings Go, its module cache, kubectl and helm), so there a missing one is a broken job, not a pass.
    """
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- namespaces, audit, retries
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTERROLEBINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
# What the manager appends to the user agent of the leader elector's own client.
LEADER_ELECTION_UA = "/leader-election"
# Pod Security labels of a namespace enforcing (and warning and auditing) the restricted standard.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


def ns_for(plane: ControlPlane, prefix: str, labels: dict[str, str] | None = None) -> str:
    """A new namespace (with those labels), registered with the running module's secret ledger."""
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
    ledger.register_namespace(plane, name)  # its Secrets are searched for at the module's end
    return name


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
