"""The OJSCluster reconciler: OJS server Deployment, Service, config, credentials, optional
embedded Redis, disruption budget, monitoring objects, server autoscaling and status."""

from __future__ import annotations

import secrets as pysecrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from cachetools import LRUCache

from ojsctrl.api import OJSCluster, validate_cluster
from ojsctrl.api.durations import duration_seconds
from ojsctrl.builders import cluster as cluster_builders
from ojsctrl.builders.common import config_hash, selector_string
from ojsctrl.controllers import metrics
from ojsctrl.controllers.children import (
    ChildCaches,
    Problem,
    autoscaler_holds,
    child_update_matters,
    invalid_child_message,
    is_controlled_by,
)
from ojsctrl.controllers.cluster_status import (
    POLLED_REASONS,
    ClusterStatusInputs,
    cluster_autoscaling_condition,
    cluster_status,
)
from ojsctrl.controllers.common import (
    AUTOSCALER_ANNOTATION,
    FIELD_MANAGER,
    OJSCLUSTERS,
    PROBLEM_PHASES,
    SERVICEMONITOR_CRD,
    SERVICEMONITORS,
    UNMANAGED_SELECTOR,
    Expiring,
    condition,
    get_condition,
    managed_informer,
    now_rfc3339,
)
from ojsctrl.controllers.owner import OwnerReconciler, OwnerSync, owner_of_hpa
from ojsctrl.controllers.secrets import SecretReader
from ojsctrl.controllers.stats import PollResult, StatsPoller, top_queues
from ojsctrl.controllers.storage import (
    adopt_patch,
    adoption_problem,
    claim_change_problem,
    grow_refused_message,
    is_released,
    release_patch,
)
from ojsctrl.ojs.autoscale import History, server_desired
from ojsctrl.ojs.client import DEFAULT_CLUSTER_DOMAIN, DEFAULT_URL_TEMPLATE, url_for
from ojsctrl.runtime.apply import owner_reference
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    HPAS,
    JSON,
    PDBS,
    PVCS,
    SECRETS,
    SERVICES,
    ApiError,
    InvalidError,
    NotFoundError,
    Resource,
)
from ojsctrl.runtime.controller import Request, Result, not_status_only
from ojsctrl.runtime.events import NORMAL, WARNING, EventRecorder
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.manager import Manager

log = structlog.get_logger("ojsctrl.cluster")

SECRET_REF_INDEX = "secret-refs"  # noqa: S105 - an index name
API_KEY_KEY = "api-key"
STATS_INTERVAL = 30.0
FIRST_POLL_WAIT = 10.0
"""The longest a status write waits for the cluster's first poll once a server is ready."""


def referenced_secrets(obj: JSON) -> Iterable[str]:
    """Index function: ``namespace/name`` of every Secret an OJSCluster's servers read (the builders' own
    list, so a rotation of any of them enqueues the cluster) and of the Secrets it generates (API key,
    embedded Redis password: their deletion or a foreign one in their place matters too).

    An object that does not parse (the reconciler reports it as InvalidSpec) indexes its generated names.
    """
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace"), meta.get("name")
    if not isinstance(name, str):
        return ()
    # The names follow from the spec alone, and the spec changes only with metadata.generation: a status
    # write (several per cluster while it converges) re-indexes the cluster without parsing it again.
    generation = meta.get("generation")
    memo_key = (ns, name, meta.get("uid"), generation) if isinstance(generation, int) else None
    if memo_key is not None:
        with _SECRET_REFS_LOCK:
            known = _SECRET_REFS.get(memo_key)
        if known is not None:
            return known
    refs = _referenced_secrets(obj, ns, name)
    if memo_key is not None:
        with _SECRET_REFS_LOCK:
            _SECRET_REFS[memo_key] = refs
    return refs


_SECRET_REFS: LRUCache[tuple[Any, ...], tuple[str, ...]] = LRUCache(maxsize=8192)
_SECRET_REFS_LOCK = threading.Lock()


def _referenced_secrets(obj: JSON, ns: str | None, name: str) -> tuple[str, ...]:
    names = {cluster_builders.api_key_secret_name_of(name), cluster_builders.redis_name_of(name)}
    try:
        cluster = OJSCluster.from_dict(obj, status=False)
    except ValueError:  # pydantic's ValidationError is one
        cluster = None
    if cluster is not None:
        names.update(ref.name for ref in cluster_builders.referenced_secret_keys(cluster))
    return tuple(f"{ns}/{secret}" for secret in sorted(names))


@dataclass
class ClusterOptions:
    """Operator flags the cluster reconciler uses."""

    # The --server-image template ({backend}, {tag}); None: the pinned image of each backend.
    server_image: str | None
    url_template: str = DEFAULT_URL_TEMPLATE
    max_concurrent_reconciles: int = 4
    stats_interval: float = STATS_INTERVAL
    # --cluster-domain: the names the operator builds end in .svc.<domain> (design.md §cluster-domain).
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


class ClusterReconciler(OwnerReconciler):
    """Reconciles OJSClusters. Construct, then `setup()`."""

    def __init__(
        self, manager: Manager, options: ClusterOptions, poller: StatsPoller, recorder: EventRecorder
    ) -> None:
        super().__init__(
            manager,
            poller,
            recorder,
            name="ojscluster",
            max_concurrent_reconciles=options.max_concurrent_reconciles,
        )
        self.options = options
        informers = manager.informers
        self.clusters = informers.informer(OJSCLUSTERS, resync=True, spec_follows_generation=True)
        self.clusters.add_indexers({SECRET_REF_INDEX: referenced_secrets})
        self.secret_meta = informers.informer(SECRETS, metadata_only=True)
        self.secrets = SecretReader(self.client, self.secret_meta)
        self.caches = ChildCaches(
            managed={
                kind: managed_informer(informers, kind)
                for kind in (DEPLOYMENTS, SERVICES, CONFIGMAPS, PDBS, PVCS)
            },
            unmanaged={
                kind: informers.informer(kind, label_selector=UNMANAGED_SELECTOR, metadata_only=True)
                for kind in (DEPLOYMENTS, SERVICES, CONFIGMAPS)  # made for every cluster; PDBs and PVCs: GET
            },
            # Metadata is all it takes to check a Secret's ownership.
            metadata={SECRETS: self.secret_meta},
        )
        self.crds = informers.informer(CRDS, metadata_only=True)
        # cluster uid -> when a status write first waited for its first poll (design.md §polling).
        self.first_poll_waits = Expiring(120.0)
        # Every HPA: one aimed at a server Deployment by hand is a foreign writer of its replicas.
        self.all_hpas = informers.informer(HPAS)
        self.status = self.status_for(
            OJSCLUSTERS, cluster_builders.server_name_of, publish_phase=metrics.cluster_phase
        )

    # ------------------------------------------------------------------ wiring
    def setup(self) -> None:
        """Watch clusters, their children, referenced Secrets, the ServiceMonitor CRD and HPAs, and the
        clusters' polled stats (a change re-enqueues the cluster); register the controller."""
        self.poller.subscribe(self.enqueue_key)
        self.poller.wait_for_servers(self.has_server)
        controller = self.controller
        # Our own status writes do not wake us again (design.md §resync).
        controller.watch_primary(self.clusters, not_status_only)
        self.watch_children("OJSCluster")
        controller.watch_mapped(self.secret_meta, self.clusters_for_secret)
        controller.watch_mapped(self.crds, self._clusters_for_crd)
        controller.watch_mapped(self.all_hpas, _clusters_of_hpa, child_update_matters(HPAS))
        self.watch_held_names(self.name_sources())
        self.manager.add_controller(controller)

    def name_sources(self) -> dict[str, tuple[Informer, ...]]:
        """Per kind, the informers that together see every object of it: a name a foreign object holds
        is watched there (PDBs, claims and ServiceMonitors are not: GETs see those)."""
        caches = self.caches
        sources: dict[str, tuple[Informer, ...]] = {
            kind.kind: (caches.managed[kind], caches.unmanaged[kind]) for kind in caches.unmanaged
        }
        sources[SECRETS.kind] = (self.secret_meta,)
        sources[HPAS.kind] = (self.all_hpas,)
        return sources

    def enqueue_key(self, key: str) -> None:
        """Reconcile the cluster ``namespace/name`` (its polled stats changed)."""
        ns, _, name = key.partition("/")
        self.controller.enqueue(Request(ns, name), "poller")

    def clusters_for_secret(self, secret: JSON) -> Iterable[Request]:
        """The clusters whose spec references a Secret (or would generate it)."""
        meta = secret.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        return [Request.for_object(o) for o in self.clusters.store.by_index(SECRET_REF_INDEX, key)]

    def _clusters_for_crd(self, crd: JSON) -> Iterable[Request]:
        if (crd.get("metadata") or {}).get("name") != SERVICEMONITOR_CRD:
            return ()
        return [
            Request.for_object(o)
            for o in self.clusters.store.objects()
            if ((o.get("spec") or {}).get("monitoring") or {}).get("serviceMonitor")
        ]

    def servicemonitor_served(self) -> bool:
        """Whether the ServiceMonitor CRD is installed (and not being deleted)."""
        crd = self.crds.store.get(SERVICEMONITOR_CRD)
        return crd is not None and not (crd.get("metadata") or {}).get("deletionTimestamp")

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, req: Request) -> Result | None:
        """Bring one cluster's children and status in line with its spec."""
        live = self.live(self.clusters, req)
        if live is None:
            return None
        obj, generation = live
        if self.spec_invalid(req, obj, generation, lambda: validate_cluster(obj)):
            return None
        cluster = OJSCluster.from_dict(obj, status=False)
        return ClusterSync(self, obj, cluster, generation).run()

    def has_server(self, key: str) -> bool:
        """Whether the cluster ``namespace/name`` has a server that can answer its first poll (the poller
        asks, design.md §polling): its server Deployment, as cached, has a ready replica, or its status
        records an earlier poll (after a restart, an outage in progress is then counted as before)."""
        namespace, _, name = key.partition("/")
        dep = self.caches.managed_child(DEPLOYMENTS, namespace, cluster_builders.server_name_of(name))
        if dep is not None and int((dep.get("status") or {}).get("readyReplicas") or 0) > 0:
            return True
        obj = self.clusters.store.get_by_name(namespace, name)
        polled = get_condition(((obj or {}).get("status") or {}).get("conditions"), "QueueStatsAvailable")
        return polled is not None and polled.get("reason") in POLLED_REASONS

    def makes_its_key(self, obj: JSON) -> bool:
        """Whether a reconcile of this cluster would generate its API key: not being deleted, and a spec
        that passes the checks its reconcile makes first (from memory when this generation passed them
        already). Whether the spec asks for a generated key is the caller's to check."""
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return False
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 0)
        if generation and self.memory.spec_validated(key, uid, generation):
            return True
        return not validate_cluster(obj).errors

    def generate_api_key(self, obj: JSON, cluster: OJSCluster) -> str | None:
        """Create the cluster's generated API key Secret for a worker that needs it before the cluster's
        own reconcile made it (design.md §api-key), as that reconcile would; returns the key, or None
        when the cluster would make none now or a Secret of that name exists already (its creation or
        its cache entry brings the worker back)."""
        ns = obj["metadata"]["namespace"]
        name = cluster_builders.api_key_secret_name(cluster)
        if self.secrets.meta(ns, name) is not None or self.secrets.created_here(ns, name):
            return None  # there already: its value, if any, is read through the reader
        if not self.makes_its_key(obj):
            return None
        body = cluster_builders.api_key_secret(cluster, pysecrets.token_urlsafe(32))
        if self.secrets.create(body, ns, FIELD_MANAGER) is None:
            return None
        log.info(
            "created the API key Secret for the cluster's first worker",
            cluster=f"{ns}/{obj['metadata']['name']}",
            secret=name,
        )
        value = self.secrets.value(ns, name, API_KEY_KEY)
        return value.decode(errors="replace") if value else None

    def forget(self, req: Request) -> None:
        """A deleted cluster: stop polling it and drop everything kept about it, its metrics included."""
        self.poller.unregister(str(req))
        super().forget(req)
        metrics.forget_cluster(req.namespace, req.name)


class ClusterSync(OwnerSync):
    """One reconcile of one cluster: the steps that only a cluster has (credentials, embedded Redis,
    monitoring, server autoscaling and status); child ownership goes through :class:`Children`."""

    def __init__(
        self, reconciler: ClusterReconciler, obj: JSON, cluster: OJSCluster, generation: int
    ) -> None:
        super().__init__(reconciler, obj, generation, "cluster")
        self.reconciler = reconciler
        self.cluster = cluster
        self.spec = cluster.spec
        self.server = cluster_builders.server_name(cluster)
        self.api_key_secret = cluster_builders.api_key_secret_name(cluster)
        self.redis = cluster_builders.redis_name(cluster)
        # Children whose name a foreign object holds (self.children.taken): nothing that depends on one is
        # applied, mounted, referenced or polled while the conflict lasts (design.md §name-conflict);
        # left_alone says what this reconcile left as it is because of them.
        self.left_alone: list[str] = []
        self.degraded: list[Problem] = []  # not as declared, still serving
        self.claim: JSON | None = None  # the live Redis claim, for the status message
        self.redis_dep: JSON | None = None  # the embedded Redis Deployment, when there is one
        self.conditions: list[JSON] = []
        self.first_poll_now = False  # a server is ready and the cluster's first poll is under way
        self.api_key_pending = False  # the generated key's Secret exists, its value not readable yet

    def create_once(self, body: JSON) -> JSON | None:
        """Create a generated Secret once; never rewrite it (its value is the user's credential now)."""
        name = body["metadata"]["name"]
        meta = self.reconciler.secrets.meta(self.ns, name)
        if meta is not None:
            if not is_controlled_by(meta, self.uid):
                self.children.conflicts.append(
                    f"Secret {self.ns}/{name} exists and is not owned by this resource"
                )
                self.children.taken.add(("Secret", name))
            return None
        if self.reconciler.secrets.created_here(self.ns, name):
            return None  # made a moment ago (by a worker that needed the key first): not in the cache yet
        return self.reconciler.secrets.create(body, self.ns, FIELD_MANAGER)

    # ------------------------------------------------------------------ steps
    def run(self) -> Result | None:
        """Run the steps in order: credentials, backend Secrets, embedded Redis, config, server Deployment and
        Service, disruption budget, monitoring, polling, autoscaling, status."""
        spec = self.spec
        image = spec.effective_image(self.reconciler.options.server_image)

        # Credentials first: the Deployment's config hash covers their values.
        # Only inputs the pod template does not already show: a spec change rolls the pods by changing
        # the template itself, and must not roll them when only, say, autoscaling bounds changed.
        hash_parts: list[Any] = []
        api_key = self.ensure_api_key(hash_parts)
        backend_url_ok = self.check_backend_secret(hash_parts)

        if spec.embedded_redis():
            self.ensure_redis(hash_parts)
        else:
            self.release_redis()

        self.children.ensure(CONFIGMAPS, cluster_builders.server_config_map(self.cluster))
        server_inputs = [
            ("Secret", self.api_key_secret),
            ("ConfigMap", cluster_builders.config_map_name(self.cluster)),
        ]
        if spec.embedded_redis():
            server_inputs += [("Secret", self.redis), ("Service", self.redis)]
        if self.children.blocked_by(*server_inputs):
            # A foreign Secret, ConfigMap or Service would feed the servers: the Deployment running now
            # stays as it is (nothing is deleted), and no new spec that references it is applied.
            dep = self.children.ours(DEPLOYMENTS, self.server)
            self.left_alone.append(f"Deployment {self.ns}/{self.server}")
        elif self.api_key_pending:
            # The key's Secret exists but its value is not known here yet; its informer event brings this
            # cluster back, and the Deployment is applied then, once, with the key in its hash.
            dep = self.children.ours(DEPLOYMENTS, self.server)
        else:
            digest = config_hash(*hash_parts, salt=self.uid)
            replicas = self.server_replicas()
            self.replica_writer, replicas = self.children.replicas_to_send(
                self.reconciler.all_hpas,
                self.children.cached(DEPLOYMENTS, self.server),
                self.server,
                replicas,
            )
            dep = self.children.ensure(
                DEPLOYMENTS,
                cluster_builders.server_deployment(
                    self.cluster, image=image, config_hash=digest, replicas=replicas
                ),
            )
            if self.replica_writer is not None:
                pass  # no hand-over while another writer holds the replicas
            elif spec.auto_scaling.enabled:
                dep = self.hand_over_replicas(dep, True) or dep
            else:
                self.hand_over_replicas(dep, False)
        self.children.ensure(SERVICES, cluster_builders.server_service(self.cluster))

        pdb = cluster_builders.pod_disruption_budget(self.cluster)
        if pdb is None:
            self.children.remove(PDBS, self.server)
        else:
            self.children.ensure(PDBS, pdb)
        self.ensure_monitoring()

        stats = self.poll(api_key)
        scaled_at = self.autoscale(dep, stats)
        self.status(dep, stats, scaled_at, backend_url_ok, image)
        return self.result()

    def ensure_api_key(self, hash_parts: list[Any]) -> str | None:
        """The API key the servers want (None when auth is off or the key is missing or not ours), created
        once when generated; its value goes into the config hash."""
        auth = self.spec.auth
        if auth.disabled:
            hash_parts.append("auth-disabled")
            return None
        if auth.api_key_secret_ref is not None:
            ref = auth.api_key_secret_ref
            value = self.reconciler.secrets.value(self.ns, ref.name, ref.key)
            if value is None:
                self.children.problems.append(
                    (
                        "SecretNotFound",
                        f"spec.auth.apiKeySecretRef: Secret {ref.name} key {ref.key} not found in {self.ns}",
                    )
                )
            hash_parts.append(value or b"")
            return value.decode(errors="replace") if value else None
        name = self.api_key_secret
        self.create_once(cluster_builders.api_key_secret(self.cluster, pysecrets.token_urlsafe(32)))
        if self.children.blocked_by(("Secret", name)):
            return None  # someone else's Secret: its value is neither used nor sent anywhere
        value = self.reconciler.secrets.value(self.ns, name, API_KEY_KEY)
        if value is None and self.reconciler.secrets.meta(self.ns, name) is None:
            # Our POST found it made a moment ago (a worker's reconcile, design.md §api-key) and its value
            # is not readable yet: a template hash without it would roll the servers a second time.
            self.api_key_pending = True
        hash_parts.append(value or b"")
        return value.decode(errors="replace") if value else None

    def check_backend_secret(self, hash_parts: list[Any]) -> bool:
        """Whether the backend's (and the state store's) URL Secrets exist; their values go into the config
        hash."""
        backend = self.spec.backend
        refs = [("spec.backend.urlSecretRef", backend.url_secret_ref)]
        if backend.state_store is not None:
            # kafka's state store: its Secret value is a server input like the backend URL.
            refs.append(("spec.backend.stateStore.urlSecretRef", backend.state_store.url_secret_ref))
        ok = True
        for field, ref in refs:
            if ref is None:
                continue
            value = self.reconciler.secrets.value(self.ns, ref.name, ref.key)
            hash_parts.append(value or b"")
            if value is None:
                self.children.problems.append(
                    ("SecretNotFound", f"{field}: Secret {ref.name} key {ref.key} not found in {self.ns}")
                )
                ok = False
        return ok

    def ensure_redis(self, hash_parts: list[Any]) -> None:
        """The embedded Redis: its password Secret (adopted back when released), claim, Deployment and
        Service, held while a name it needs is taken."""
        name = self.redis
        secret_meta = self.reconciler.secrets.meta(self.ns, name)
        if is_released(secret_meta) and secret_meta is not None:
            # The password of a kept claim's data: adopted back, never replaced.
            adopted = self.adopt(SECRETS, secret_meta)
            if adopted is not None:
                self.reconciler.secrets.remember(adopted)
        else:
            self.create_once(
                cluster_builders.redis_secret(
                    self.cluster, pysecrets.token_urlsafe(24), self.reconciler.options.cluster_domain
                )
            )
        foreign_secret = self.children.blocked_by(("Secret", name))
        data = {} if foreign_secret else (self.reconciler.secrets.data(self.ns, name) or {})
        hash_parts.append(data.get("password", b""))
        hash_parts.append(data.get("url", b""))
        redis_hash = config_hash(data.get("password", b""), salt=self.uid)
        pvc = cluster_builders.redis_pvc(self.cluster)
        live_pvc = self.children.cached(PVCS, name)
        if pvc is None:
            self.release(PVCS, live_pvc, "spec.backend.redis.storage was removed")
        else:
            self.claim = self.ensure_claim(pvc, live_pvc)
        claim_refused = pvc is not None and self.claim is None and bool(self.children.conflicts)
        if claim_refused or self.children.blocked_by(("Secret", name), ("PersistentVolumeClaim", name)):
            # Someone else's password or volume is never handed to a Redis the tenant's spec shapes, and
            # a released claim that no longer fits is not mounted (design.md §name-conflict).
            self.redis_dep = self.children.ours(DEPLOYMENTS, name)
            self.left_alone.append(f"Deployment {self.ns}/{name}")
        else:
            body = cluster_builders.redis_deployment(self.cluster, config_hash=redis_hash)
            self.redis_dep = self.children.ensure(DEPLOYMENTS, body, self.adopt_cached(DEPLOYMENTS, name))
        self.children.ensure(
            SERVICES, cluster_builders.redis_service(self.cluster), self.adopt_cached(SERVICES, name)
        )

    def ensure_claim(self, pvc: JSON, live: JSON | None) -> JSON | None:
        """Apply the Redis claim: adopt a released one that fits; report a class change or a shrink (which
        the API server would refuse with a raw diff) and a refused growth in words, keeping the live one."""
        if live is not None and is_released(live):
            problem = adoption_problem(live, pvc)
            if problem is not None:
                self.children.conflicts.append(problem)
                self.children.taken.add((PVCS.kind, pvc["metadata"]["name"]))
                return None
            live = self.adopt(PVCS, live)
            if live is None:
                return None
        ours = is_controlled_by(live, self.uid)
        if live is not None and ours:
            problem = claim_change_problem(live, pvc)
            if problem is not None:
                self.degraded.append(("StorageChangeRefused", problem))
                return live
        try:
            out = self.reconciler.applier.ensure(PVCS, pvc, self.uid, live, in_cache=False)
        except ApiError as e:
            if live is not None and ours and (isinstance(e, InvalidError) or e.status == 403):
                self.degraded.append(("StorageChangeRefused", grow_refused_message(live, pvc, e.message)))
                return live
            if isinstance(e, InvalidError):
                self.children.problems.append(
                    ("InvalidSpec", invalid_child_message(PVCS, pvc["metadata"]["name"], e))
                )
                return None
            raise
        if out.conflict:
            self.children.conflicts.append(out.conflict)
            self.children.taken.add((PVCS.kind, pvc["metadata"]["name"]))
            return None
        return out.obj

    def adopt_cached(self, resource: Resource, name: str) -> JSON | None:
        """A released child from the cache, adopted back (None when there is none to adopt)."""
        live = self.children.cached(resource, name)
        return self.adopt(resource, live) if live is not None and is_released(live) else None

    def adopt(self, resource: Resource, live: JSON) -> JSON | None:
        """Make a released object this cluster's child again; None when it changed meanwhile (retried)."""
        name = live["metadata"]["name"]
        try:
            out: JSON = self.reconciler.client.patch(
                resource,
                name,
                adopt_patch(live, owner_reference(self.obj)),
                self.ns,
                field_manager=FIELD_MANAGER,
            )
        except ApiError as e:
            if not isinstance(e, NotFoundError) and e.status != 409:
                # Say so and go on (RBAC without patch, say): the rest of the cluster still converges.
                self.degraded.append(("ReleaseFailed", f"cannot adopt {resource.kind} {name}: {e.reason}"))
            self.children.requeue_within(1.0)
            return None
        log.info("adopted a released object", cluster=self.key, kind=resource.kind, name=name)
        self.reconciler.recorder.event(
            self.obj, NORMAL, "Adopted", f"{resource.kind} {name} kept from before is used again"
        )
        return out

    def release(self, resource: Resource, live: JSON | None, reason: str) -> None:
        """Keep a child that holds data (or unlocks it) when the spec no longer wants it: remove the owner
        reference so garbage collection leaves it, annotate why, and say how to delete it by hand."""
        if live is None:
            return
        patch = release_patch(live, self.uid, reason, now_rfc3339())
        if patch is None:
            return
        name = live["metadata"]["name"]
        try:
            self.reconciler.client.patch(resource, name, patch, self.ns, field_manager=FIELD_MANAGER)
        except ApiError as e:
            if not isinstance(e, NotFoundError) and e.status != 409:
                # Never fall back to deleting: keep the owner reference, say so, and let the rest converge.
                self.degraded.append(("ReleaseFailed", f"cannot release {resource.kind} {name}: {e.reason}"))
            self.children.requeue_within(1.0)
            return
        kind = resource.kind
        log.warning(
            "released a child instead of deleting it", cluster=self.key, kind=kind, name=name, why=reason
        )
        self.reconciler.recorder.event(
            self.obj,
            WARNING,
            "Released",
            f"{kind} {name} is kept, not deleted ({reason}): it is no longer deleted with the cluster; "
            f"when its data is no longer needed: kubectl delete {kind.lower()} {name} -n {self.ns}",
        )

    def release_redis(self) -> None:
        """The embedded Redis is no longer wanted. The claim and the password Secret are released (the
        data, and what reads it). The Deployment and Service go when a claim held the data; without one
        the data lives only in the running pod, so they are released too."""
        name = self.redis
        reason = "the embedded Redis was turned off (spec.backend)"
        dep = self.children.cached(DEPLOYMENTS, name)
        volumes = ((((dep or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes")
        on_claim = any("persistentVolumeClaim" in v for v in volumes or () if isinstance(v, dict))
        if dep is not None and not on_claim:
            self.release(DEPLOYMENTS, dep, reason + "; its data lives only in the running pod")
            self.release(SERVICES, self.children.cached(SERVICES, name), reason)
        else:
            self.children.remove(DEPLOYMENTS, name)
            self.children.remove(SERVICES, name)
        self.release(PVCS, self.children.cached(PVCS, name), reason)
        self.release(SECRETS, self.reconciler.secrets.meta(self.ns, name), reason)

    def server_replicas(self) -> int | None:
        """The replicas ojsctrl sends: the spec's when autoscaling is off; with autoscaling on,
        none once the autoscaler's field manager holds the field (design.md §field-managers hand-over)."""
        if not self.spec.auto_scaling.enabled:
            return self.spec.effective_replicas()
        live = self.children.cached(DEPLOYMENTS, self.server)
        if live is None:
            # First creation: start inside the bounds; the autoscaler takes the field right after.
            autoscaling = self.spec.auto_scaling
            return max(
                autoscaling.min_replicas, min(autoscaling.max_replicas, self.spec.effective_replicas())
            )
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        if annotations.get(AUTOSCALER_ANNOTATION) == "true":
            return None
        return int((live.get("spec") or {}).get("replicas") or 1)

    def hand_over_replicas(self, dep: JSON | None, autoscale: bool) -> JSON | None:
        """Hand the server replicas to the autoscaler's field manager, or back (design.md §field-managers)."""
        bounds = self.spec.auto_scaling
        return self.children.hand_over_replicas(
            dep,
            autoscale=autoscale,
            held_by_autoscaler=autoscaler_holds(dep),
            start=lambda live: max(bounds.min_replicas, min(bounds.max_replicas, live)),
            unset=1,
        )

    def ensure_monitoring(self) -> None:
        """The ServiceMonitor (when asked for and its CRD is served) and the dashboard ConfigMap, with the
        MonitoringReady condition."""
        mon = self.spec.monitoring
        want_sm = mon.enabled and mon.service_monitor
        # The ServiceMonitor hands the API key Secret to Prometheus and points it at the server Service.
        sm_blocked = self.children.blocked_by(("Secret", self.api_key_secret), ("Service", self.server))
        if want_sm and sm_blocked:
            self.left_alone.append(f"ServiceMonitor {self.ns}/{self.server}")
            self.conditions.append(
                condition(
                    "MonitoringReady",
                    False,
                    "NameConflict",
                    "the ServiceMonitor is not applied while a name it uses is taken",
                    generation=self.generation,
                )
            )
        elif want_sm:
            if self.reconciler.servicemonitor_served():
                self.children.ensure(SERVICEMONITORS, cluster_builders.service_monitor(self.cluster))
                self.conditions.append(
                    condition(
                        "MonitoringReady",
                        True,
                        "ServiceMonitorApplied",
                        "the ServiceMonitor is applied",
                        generation=self.generation,
                    )
                )
            else:
                self.conditions.append(
                    condition(
                        "MonitoringReady",
                        False,
                        "CRDNotInstalled",
                        f"the {SERVICEMONITOR_CRD} CRD is not installed; "
                        "the ServiceMonitor is created when it is",
                        generation=self.generation,
                    )
                )
        else:
            # Only a cluster whose status says it had one may still have a ServiceMonitor; this spares
            # a GET on every reconcile of every other cluster (ServiceMonitors are not cached).
            had = get_condition((self.obj.get("status") or {}).get("conditions"), "MonitoringReady")
            if (
                self.reconciler.servicemonitor_served()
                and had
                and had.get("reason") == "ServiceMonitorApplied"
            ):
                self.children.remove(SERVICEMONITORS, self.server)
            self.conditions.append(
                condition(
                    "MonitoringReady",
                    True,
                    "NotRequested" if not mon.enabled else "Configured",
                    "",
                    generation=self.generation,
                )
            )
        dash = cluster_builders.dashboard_config_map(self.cluster)
        if dash is None:
            self.children.remove(CONFIGMAPS, cluster_builders.dashboard_name(self.cluster))
        else:
            self.children.ensure(CONFIGMAPS, dash)

    def poll(self, api_key: str | None) -> Any:
        """Register the cluster with the stats poller and return its last result; nothing is polled while the
        server Service or API key is not this cluster's."""
        if self.children.blocked_by(("Service", self.server), ("Secret", self.api_key_secret)):
            # Someone else's Service (an ExternalName one too) is never dialled, and no key is sent to it.
            self.reconciler.poller.unregister(self.key)  # for the workers too: they see the same conflict
            self.left_alone.append("queue-stats polling")
            return None
        url = url_for(
            self.reconciler.options.url_template,
            self.name,
            self.ns,
            cluster_domain=self.reconciler.options.cluster_domain,
        )
        poller = self.reconciler.poller
        poller.register(self.key, url, api_key, self.reconciler.options.stats_interval, requester="cluster")
        result = poller.result(self.key)
        if result is None and self.reconciler.has_server(self.key):
            poller.poll_soon(self.key)
            self.first_poll_now = True
        return result

    def autoscale(self, dep: JSON | None, stats: Any) -> str | None:
        """Apply the queue-depth decision to the server replicas when the autoscaler holds them; returns the
        time of a scale written now."""
        autoscaling = self.spec.auto_scaling
        if not autoscaling.enabled or dep is None:
            return None
        if not autoscaler_holds(dep):
            return None
        current = int((dep.get("spec") or {}).get("replicas") or 1)
        ok = stats is not None and stats.ok
        depth = sum(av for av, _ in stats.queues.values()) if ok else 0
        history = self.reconciler.memory.history(self.key)
        decision = server_desired(
            depth,
            current,
            min_replicas=autoscaling.min_replicas,
            max_replicas=autoscaling.max_replicas,
            target_queue_depth=autoscaling.target_queue_depth,
            scale_up_cooldown=duration_seconds(autoscaling.scale_up_cooldown),
            scale_down_cooldown=duration_seconds(autoscaling.scale_down_cooldown),
            history=history or History(),
            now=time.time(),
            # A failed poll, seen now or missed between reconciles, is a hold sample (design.md
            # §stabilisation).
            stats_available=ok,
            failed_polls=stats.failures if stats is not None else None,
        )
        self.reconciler.memory.set_history(self.key, decision.history)
        self.children.requeue = self.reconciler.options.stats_interval
        if not ok:
            return None  # hold the last decision while stats are unavailable
        if decision.desired == current:
            return None
        if self.replica_writer is not None:
            return None  # hold: ReplicasManaged says who writes them
        _, self.replica_writer = self.children.write_replicas(dep["metadata"]["name"], decision.desired)
        if self.replica_writer is not None:
            return None
        metrics.scaled(self.ns, "OJSCluster", self.name, decision.direction)
        log.info(
            "scaled",
            cluster=self.key,
            replicas_from=current,
            replicas_to=decision.desired,
            why=decision.message,
        )
        self.reconciler.recorder.event(
            self.obj,
            NORMAL,
            "Scaled",
            f"scaled servers from {current} to {decision.desired}: {decision.message}",
        )
        return now_rfc3339()

    # ------------------------------------------------------------------ status
    def status(
        self, dep: JSON | None, stats: PollResult | None, scaled_at: str | None, backend_ok: bool, image: str
    ) -> None:
        """Publish the queue metrics and write the status :func:`cluster_status` derives."""
        if stats is not None and stats.ok:
            metrics.publish_queues(self.ns, self.name, top_queues(stats.queues))
        bounds = self.spec.auto_scaling
        replicas_managed = self.reconciler.foreign_writers.condition(
            self.obj,
            self.replica_writer,
            deployment=self.server,
            instead=(
                "Scale the OJSCluster instead (spec.replicas, or spec.autoScaling; "
                f"kubectl edit ojs {self.name})"
            ),
            generation=self.generation,
        )
        result = cluster_status(
            ClusterStatusInputs(
                name=self.name,
                generation=self.generation,
                previous=self.obj.get("status") or {},
                server_deployment=dep,
                server_name=self.server,
                embedded_redis=self.spec.embedded_redis(),
                redis_deployment=self.redis_dep,
                redis_name=self.redis,
                claim=self.claim,
                backend_ok=backend_ok,
                autoscaling=cluster_autoscaling_condition(
                    enabled=bounds.enabled,
                    replicas=self.spec.replicas,
                    effective_replicas=self.spec.effective_replicas(),
                    target_queue_depth=bounds.target_queue_depth,
                    min_replicas=bounds.min_replicas,
                    max_replicas=bounds.max_replicas,
                    generation=self.generation,
                ),
                replicas_managed=replicas_managed,
                selector=selector_string(cluster_builders.server_selector(self.cluster)),
                endpoint=cluster_builders.endpoint(self.cluster, self.reconciler.options.cluster_domain),
                image=image,
                stats=stats,
                last_scale=self.reconciler.memory.note_scale(self.key, scaled_at),
                problems=tuple(self.children.problems),
                conflicts=tuple(self.children.conflicts),
                left_alone=tuple(self.left_alone),
                degraded=tuple(self.degraded),
                extra_conditions=tuple(self.conditions),
            )
        )
        if self.first_poll_now and result.phase not in PROBLEM_PHASES and self.await_first_poll():
            return  # its outcome brings the cluster back, and one write then says it all
        # A name conflict's Warning event comes from ConflictEvents (naming the objects), once per conflict.
        self.reconciler.status.finish(self.obj, result, self.children)

    def await_first_poll(self) -> bool:
        """Whether to hold this status write for the cluster's first poll, under way (design.md §polling):
        up to FIRST_POLL_WAIT seconds from the first reconcile that held it, then the status is written
        whatever the poll does."""
        now = time.monotonic()
        started = self.reconciler.first_poll_waits.setdefault(self.uid, now)
        left = FIRST_POLL_WAIT - (now - started)
        if left <= 0:
            return False
        self.children.requeue_within(left)
        return True


def _clusters_of_hpa(hpa: JSON) -> Iterable[Request]:
    """The cluster whose server Deployment an HPA targets."""
    return owner_of_hpa(hpa, cluster_builders.cluster_of_server_name)
