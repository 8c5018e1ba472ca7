"""Shared helpers for e2e tests."""

from __future__ import annotations

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
from ojsctrl.runtime.client import CONFIGMAPS, DEPLOYMENTS, Client, ClientOptions, NotFoundError, Resource
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


def mutating_by_operator(plane: ControlPlane, since: float, ns: str) -> list[str]:
    """The operator's writes in namespace ns since then (wall clock), from the plane's audit log."""
    out = []
    for e in plane.audit_events():
        if not e.get("userAgent", "").startswith(UA) or e.get("verb") in ("get", "list", "watch"):
            continue
        ts = e.get("stageTimestamp", "")
        if not ts:
            continue
        t = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if t >= since and f"/namespaces/{ns}/" in e.get("requestURI", ""):
            out.append(f"{e['verb']} {e['requestURI']}")
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


class OperatorProcess:
    """An operator (the real `ojsctrl` or a test app) run as a process against a plane."""

    def __init__(
        self,
        plane: ControlPlane,
        module: str,
        *args: str,
        name: str = "op",
        env: dict[str, str] | None = None,
    ) -> None:
        import subprocess
        import sys

        from tests.harness.controlplane import free_port

        self.name = name
        self.metrics_port, self.health_port = free_port(), free_port()
        self.log_path = plane.workdir / "logs" / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        argv = [
            sys.executable,
            "-m",
            module,
            "--kubeconfig",
            str(plane.kubeconfig),
            "--metrics-bind-address",
            f"127.0.0.1:{self.metrics_port}",
            "--health-probe-bind-address",
            f"127.0.0.1:{self.health_port}",
            *args,
        ]
        full_env = {**os.environ, **(env or {})}
        if os.environ.get("OJSCTRL_E2E_AS_SA") == "1" and module == "ojsctrl":
            # The whole suite as the deployed ServiceAccount: a missing permission fails a test.
            from tests.e2e.test_delivery import service_account_kubeconfig

            argv += ["--kubeconfig", str(service_account_kubeconfig(plane))]
            full_env.setdefault("OJSCTRL_LEADER_ELECTION_NAMESPACE", "ojs-system")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, stdin=subprocess.DEVNULL
        )

    def get(self, port: int, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> str:
        return self.get(self.metrics_port, "/metrics")[1]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for fam in text_string_to_metric_families(self.metrics()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(s.value)
        return None

    def ready(self) -> bool:
        return self.get(self.health_port, "/readyz")[0] == 200

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def start_ojsctrl(plane: ControlPlane, ojs_url: str, *args: str, name: str) -> OperatorProcess:
    """The real `ojsctrl` (debug logs, OJS servers at the URL template ojs_url), once it is ready."""
    op = OperatorProcess(
        plane, "ojsctrl", "--ojs-url-template", ojs_url, "--log-level", "debug", *args, name=name
    )
    wait_until("operator ready", op.ready, 60)
    return op


# --------------------------------------------------------------------------- API keys of clusters
class ClusterKeys:
    """The key resolver of an e2e OJS double (``server.key_resolver = ClusterKeys(client)``).

    The operator reaches the double at ``/<namespace>/<cluster>``; for such a prefix this answers the key
    the cluster's Secret holds, as the server the cluster deploys would be configured with it:
    ``spec.auth.apiKeySecretRef`` when set, else the generated ``<cluster>-api-key`` (key ``api-key``).
    A cluster with auth disabled, or whose Secret is not there, has no key here (the double then wants its
    own server-wide key, which the operator cannot know). Reads go through the test's driver clients
    (one per plane the double serves).
    """

    def __init__(self, *clients: Client) -> None:
        self.clients = list(clients)

    def add(self, client: Client) -> None:
        """Serve the clusters of another plane too."""
        self.clients.append(client)

    def __call__(self, prefix: str) -> str | None:
        import base64

        from ojsctrl.runtime.client import SECRETS

        parts = prefix.strip("/").split("/")
        if len(parts) != 2:
            return None
        ns, name = parts
        for client in list(self.clients):
            try:
                obj = get(client, OJSCLUSTERS, ns, name)
            except Exception:
                continue
            if obj is None:
                continue
            auth = (obj.get("spec") or {}).get("auth") or {}
            if auth.get("disabled"):
                return None
            ref = auth.get("apiKeySecretRef") or {}
            secret_name = ref.get("name") or f"{name}-api-key"
            key = ref.get("key") or "api-key"
            sec = get(client, SECRETS, ns, secret_name)
            value = ((sec or {}).get("data") or {}).get(key)
            return base64.b64decode(value).decode() if value else None
        return None


def cluster_api_key(client: Client, ns: str, name: str) -> str:
    """The value of a cluster's generated API key (waits for the Secret)."""
    keys = ClusterKeys(client)
    found: list[str] = []

    def present() -> bool:
        v = keys(f"/{ns}/{name}")
        if v:
            found.append(v)
        return bool(v)

    wait_until(f"Secret {name}-api-key", present, 60)
    return found[-1]


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
