"""A minimal kopf operator that does what ojsctrl does for the scale benchmark, written the way kopf's
documentation shows: sync handlers, the official `kubernetes` client for the children, kopf's defaults
for everything else (progress annotations, handler events, no client-side rate limit).

Run: `KUBECONFIG=K python -m kopf run --standalone --namespace NS -m bench.peers.kopf_peer`

- OJSCluster created: Secret `<name>-api-key` (random key, created once), ConfigMap `<name>-config`,
  Deployment `<name>-server`, Service `<name>-server`, with the bodies of `ojsctrl.builders`.
- OJSWorker created: Deployment `<worker>-worker` (its cluster and key Secret must exist first;
  a TemporaryError retries it).
- A Deployment of ours becomes available: its owner's status gets `phase: Running` and
  `observedGeneration` (a merge patch of the status subresource).

Environment: KOPF_PEER_WORKERS (handler threads, default 8), KOPF_PEER_STATS (where to write the handler
durations at exit, JSON).
"""

from __future__ import annotations

import base64
import json
import os
import secrets as pysecrets
import threading
import time
from typing import Any

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from ojsctrl.api import OJSCluster, OJSWorker
from ojsctrl.api.common import GROUP, VERSION
from ojsctrl.builders import cluster as cb
from ojsctrl.builders import worker as wb
from ojsctrl.builders.common import config_hash

USER_AGENT = "kopf-peer/1.0"
MANAGED = {"app.kubernetes.io/managed-by": "ojsctrl"}

_api: list[kubernetes.client.ApiClient] = []  # the one shared client, made on first use
_generations: dict[tuple[str, str, str], int] = {}  # (kind, namespace, name) -> generation
_clusters: dict[tuple[str, str], dict[str, Any]] = {}
_status_done: set[tuple[str, str, str, int]] = set()
_lock = threading.Lock()
_durations: dict[str, list[float]] = {"ojscluster": [], "ojsworker": [], "status": []}


def api() -> kubernetes.client.ApiClient:
    if not _api:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(client_configuration=cfg)
        cfg.connection_pool_maxsize = int(os.environ.get("KOPF_PEER_WORKERS", "8")) + 4
        client = kubernetes.client.ApiClient(cfg)
        client.user_agent = USER_AGENT
        _api.append(client)
    return _api[0]


def plain(body: Any) -> dict[str, Any]:
    """A kopf Body view as a plain dict."""
    out: dict[str, Any] = json.loads(json.dumps(dict(body), default=dict))
    return out


def timed(kind: str, started: float) -> None:
    with _lock:
        _durations[kind].append(time.perf_counter() - started)


def create_ignoring_conflict(fn: Any, namespace: str, body: dict[str, Any]) -> None:
    try:
        fn(namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.execution.max_workers = int(os.environ.get("KOPF_PEER_WORKERS", "8"))
    api()


@kopf.on.cleanup()
def write_stats(**_: Any) -> None:
    path = os.environ.get("KOPF_PEER_STATS")
    if path:
        with _lock, open(path, "w") as f:
            json.dump(_durations, f)


@kopf.on.event(GROUP, VERSION, "ojsclusters")
def remember_cluster(body: Any, namespace: str, name: str, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    with _lock:
        _clusters[(namespace, name)] = plain(body)
        _generations[("OJSCluster", namespace, name)] = int(body["metadata"].get("generation") or 0)


@kopf.on.event(GROUP, VERSION, "ojsworkers")
def remember_worker(body: Any, namespace: str, name: str, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    with _lock:
        _generations[("OJSWorker", namespace, name)] = int(body["metadata"].get("generation") or 0)


@kopf.on.create(GROUP, VERSION, "ojsclusters")
def cluster_created(body: Any, namespace: str, **_: Any) -> None:
    started = time.perf_counter()
    cluster = OJSCluster.from_dict(plain(body))
    core = kubernetes.client.CoreV1Api(api())
    apps = kubernetes.client.AppsV1Api(api())
    key = pysecrets.token_urlsafe(32)
    try:
        core.create_namespaced_secret(namespace, cb.api_key_secret(cluster, key))
    except ApiException as e:
        if e.status != 409:
            raise

        secret = core.read_namespaced_secret(cb.api_key_secret_name(cluster), namespace)
        key = base64.b64decode(secret.data[cb.API_KEY_SECRET_KEY]).decode()
    create_ignoring_conflict(core.create_namespaced_config_map, namespace, cb.server_config_map(cluster))
    dep = cb.server_deployment(
        cluster,
        image=cluster.spec.effective_image(),
        config_hash=config_hash(key),
        replicas=cluster.spec.effective_replicas(),
    )
    create_ignoring_conflict(apps.create_namespaced_deployment, namespace, dep)
    create_ignoring_conflict(core.create_namespaced_service, namespace, cb.server_service(cluster))
    timed("ojscluster", started)


@kopf.on.create(GROUP, VERSION, "ojsworkers")
def worker_created(body: Any, namespace: str, spec: Any, **_: Any) -> None:
    started = time.perf_counter()
    ref = spec["clusterRef"]
    with _lock:
        cluster_obj = _clusters.get((namespace, ref))
    if cluster_obj is None:
        raise kopf.TemporaryError(f"OJSCluster {ref} not seen yet", delay=1)
    cluster = OJSCluster.from_dict(cluster_obj)
    core = kubernetes.client.CoreV1Api(api())

    try:
        secret = core.read_namespaced_secret(f"{ref}-api-key", namespace)
    except ApiException as e:
        if e.status == 404:
            raise kopf.TemporaryError(f"Secret {ref}-api-key not there yet", delay=1) from e
        raise
    key = base64.b64decode(secret.data[cb.API_KEY_SECRET_KEY]).decode()
    worker = OJSWorker.from_dict(plain(body))
    dep = wb.worker_deployment(worker, cluster, config_hash=config_hash(key), replicas=worker.spec.replicas)
    create_ignoring_conflict(kubernetes.client.AppsV1Api(api()).create_namespaced_deployment, namespace, dep)
    timed("ojsworker", started)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_changed(body: Any, namespace: str, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    status = body.get("status") or {}
    available = any(
        c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    if not available or int(status.get("readyReplicas") or 0) < 1:
        return
    owner = next((r for r in body["metadata"].get("ownerReferences") or () if r.get("controller")), None)
    if owner is None or owner.get("kind") not in ("OJSCluster", "OJSWorker"):
        return
    kind, name = owner["kind"], owner["name"]
    with _lock:
        generation = _generations.get((kind, namespace, name))
        if generation is None or (kind, namespace, name, generation) in _status_done:
            return
        _status_done.add((kind, namespace, name, generation))
    started = time.perf_counter()
    kubernetes.client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "ojsclusters" if kind == "OJSCluster" else "ojsworkers",
        name,
        {"status": {"phase": "Running", "observedGeneration": generation}},
    )
    timed("status", started)
