"""The write limit: the requests ojsctrl must make for N clusters + N workers, and nothing else.

`python -m bench.limit --kubeconfig K --namespace NS --qps Q --burst B --concurrency C`

A minimal process with our runtime's `Client` (raw JSON, the same client-side rate limit), no
informer, no reconcile logic. It watches OJSClusters and OJSWorkers and, as each one appears,
issues exactly the writes ojsctrl issues for it on creation, with bodies from `ojsctrl.builders`
(field manager `ojsctrl`, force, the same applied-hash annotation, and the pod templates' config digest
computed as ojsctrl computes it: salted with the owner's uid, PBKDF2, `ojsctrl.builders.common.config_hash`):

- OJSCluster: POST Secret `<name>-api-key` (created once), apply ConfigMap `<name>-config`,
  Deployment `<name>-server`, Service `<name>-server` (replicas 1: no PodDisruptionBudget);
- OJSWorker: apply Deployment `<worker>-worker`.

It also watches the Deployments and, when one is available (condition Available=True and
readyReplicas >= 1, what ojsctrl's phase Running needs), writes its owner's status once:
`phase: Running` and `observedGeneration`. One status apply per object, no events, no GETs.

Two thread pools of `--concurrency` threads each, one per kind, as ojsctrl runs two controllers
with `--max-concurrent-reconciles` workers each. Prints READY once its watches are open and
runs until SIGTERM, so the bench can sample its memory and CPU like the operators'.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import secrets as pysecrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ojsctrl.api import OJSCluster, OJSWorker
from ojsctrl.api.common import GROUP, VERSION
from ojsctrl.builders import cluster as cb
from ojsctrl.builders import worker as wb
from ojsctrl.builders.common import config_hash
from ojsctrl.runtime.apply import body_digest
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    JSON,
    SECRETS,
    SERVICES,
    AlreadyExistsError,
    Client,
    ClientOptions,
    Resource,
)

OJSCLUSTERS = Resource(GROUP, VERSION, "ojsclusters", "OJSCluster")
OJSWORKERS = Resource(GROUP, VERSION, "ojsworkers", "OJSWorker")
FIELD_MANAGER = "ojsctrl"
HASH_ANNOTATION = f"{GROUP}/applied-hash"
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=ojsctrl"
USER_AGENT = "ojsctrl-limit/0.1.0"


def hashed(body: JSON) -> JSON:
    """The body as ojsctrl's Applier sends it: with the applied-hash annotation of the body."""
    body = copy.deepcopy(body)
    meta = body.setdefault("metadata", {})
    meta.setdefault("annotations", {}).pop(HASH_ANNOTATION, None)
    meta["annotations"][HASH_ANNOTATION] = body_digest(body)[0]
    return body


class Limit:
    """The whole script's state: the objects seen, the keys generated, what was written."""

    def __init__(self, client: Client, namespace: str, concurrency: int, server_image: str | None) -> None:
        self.client = client
        self.ns = namespace
        self.server_image = server_image
        self.clusters: dict[str, JSON] = {}
        self.workers: dict[str, JSON] = {}
        self.keys: dict[str, str] = {}
        self.status_done: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.cluster_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="limit-cluster")
        self.worker_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="limit-worker")
        self.stop = threading.Event()
        self.errors = 0

    def key_for(self, cluster: str) -> str:
        """The API key of a cluster: generated once, shared by the Secret and the template hashes."""
        with self.lock:
            return self.keys.setdefault(cluster, pysecrets.token_urlsafe(32))

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:
            with self.lock:
                self.errors += 1
            print(f"limit: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ children
    def cluster_children(self, obj: JSON) -> None:
        cluster = OJSCluster.from_dict(obj)
        key = self.key_for(obj["metadata"]["name"])
        with contextlib.suppress(AlreadyExistsError):
            self.client.create(SECRETS, cb.api_key_secret(cluster, key), self.ns, field_manager=FIELD_MANAGER)
        self.client.apply(CONFIGMAPS, hashed(cb.server_config_map(cluster)), field_manager=FIELD_MANAGER)
        dep = cb.server_deployment(
            cluster,
            image=cluster.spec.effective_image(self.server_image),
            config_hash=config_hash(key.encode(), salt=obj["metadata"]["uid"]),
            replicas=cluster.spec.effective_replicas(),
        )
        self.client.apply(DEPLOYMENTS, hashed(dep), field_manager=FIELD_MANAGER)
        self.client.apply(SERVICES, hashed(cb.server_service(cluster)), field_manager=FIELD_MANAGER)

    def worker_children(self, obj: JSON, attempt: int = 0) -> None:
        ref = obj["spec"]["clusterRef"]
        with self.lock:
            cluster_obj = self.clusters.get(ref)
        if cluster_obj is None:
            # Its cluster's watch event has not arrived yet: try again shortly (bounded).
            if attempt < 600 and not self.stop.is_set():
                time.sleep(0.05)
                self.worker_pool.submit(self._guard, lambda: self.worker_children(obj, attempt + 1))
            return
        worker = OJSWorker.from_dict(obj)
        cluster = OJSCluster.from_dict(cluster_obj)
        dep = wb.worker_deployment(
            worker,
            cluster,
            config_hash=config_hash(self.key_for(ref), salt=obj["metadata"]["uid"]),
            replicas=worker.spec.replicas,
        )
        self.client.apply(DEPLOYMENTS, hashed(dep), field_manager=FIELD_MANAGER)

    def write_status(self, resource: Resource, obj: JSON) -> None:
        meta = obj["metadata"]
        body = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": {"phase": "Running", "observedGeneration": int(meta.get("generation") or 0)},
        }
        self.client.apply_status(resource, body, field_manager=FIELD_MANAGER)

    # ------------------------------------------------------------------ events
    def on_cluster(self, obj: JSON) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            new = name not in self.clusters
            self.clusters[name] = obj
        if new:
            self.cluster_pool.submit(self._guard, lambda: self.cluster_children(obj))

    def on_worker(self, obj: JSON) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            new = name not in self.workers
            self.workers[name] = obj
        if new:
            self.worker_pool.submit(self._guard, lambda: self.worker_children(obj))

    def on_deployment(self, dep: JSON) -> None:
        status = dep.get("status") or {}
        available = any(
            c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions") or ()
        )
        if not available or int(status.get("readyReplicas") or 0) < 1:
            return
        owner = next((r for r in dep["metadata"].get("ownerReferences") or () if r.get("controller")), None)
        if owner is None:
            return
        kind, name = owner["kind"], owner["name"]
        with self.lock:
            if (kind, name) in self.status_done:
                return
            obj = (self.clusters if kind == "OJSCluster" else self.workers).get(name)
            if obj is None:
                return
            self.status_done.add((kind, name))
        if kind == "OJSCluster":
            self.cluster_pool.submit(self._guard, lambda: self.write_status(OJSCLUSTERS, obj))
        else:
            self.worker_pool.submit(self._guard, lambda: self.write_status(OJSWORKERS, obj))

    def watch(
        self,
        resource: Resource,
        handler: Callable[[JSON], None],
        listed: threading.Event,
        selector: str | None = None,
    ) -> None:
        """List, then watch from the list's resourceVersion until stopped (re-watch when it ends)."""
        items, rv = self.client.list(resource, self.ns, label_selector=selector)
        for o in items:
            o.setdefault("apiVersion", resource.api_version)
            o.setdefault("kind", resource.kind)
            handler(o)
        listed.set()
        while not self.stop.is_set():
            try:
                for ev in self.client.watch(
                    resource, self.ns, resource_version=rv, label_selector=selector, timeout_seconds=3600
                ):
                    if self.stop.is_set():
                        return
                    rv = ev.object.get("metadata", {}).get("resourceVersion", rv)
                    if ev.type in ("ADDED", "MODIFIED"):
                        handler(ev.object)
            except Exception as e:
                if self.stop.is_set():
                    return
                print(f"limit: watch {resource}: {e}", file=sys.stderr, flush=True)
                time.sleep(0.5)
                items, rv = self.client.list(resource, self.ns, label_selector=selector)
                for o in items:
                    o.setdefault("apiVersion", resource.api_version)
                    o.setdefault("kind", resource.kind)
                    handler(o)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.limit")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--qps", type=float, default=50.0)
    p.add_argument("--burst", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--server-image", default=None)
    args = p.parse_args(argv)
    client = Client.from_kubeconfig(
        args.kubeconfig,
        options=ClientOptions(
            qps=args.qps, burst=args.burst, user_agent=USER_AGENT, pool_size=2 * args.concurrency + 8
        ),
    )
    limit = Limit(client, args.namespace, args.concurrency, args.server_image)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    listed = [threading.Event() for _ in range(3)]
    threads = [
        threading.Thread(target=limit.watch, args=(OJSCLUSTERS, limit.on_cluster, listed[0]), daemon=True),
        threading.Thread(target=limit.watch, args=(OJSWORKERS, limit.on_worker, listed[1]), daemon=True),
        threading.Thread(
            target=limit.watch,
            args=(DEPLOYMENTS, limit.on_deployment, listed[2], MANAGED_SELECTOR),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    for ev in listed:
        ev.wait(60)
    time.sleep(0.2)  # the watches open right after their lists
    print("READY", flush=True)
    while not done.wait(0.5):
        pass
    limit.stop.set()
    limit.cluster_pool.shutdown(wait=False, cancel_futures=True)
    limit.worker_pool.shutdown(wait=False, cancel_futures=True)
    print(f"limit: {len(limit.status_done)} statuses written, {limit.errors} errors", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
