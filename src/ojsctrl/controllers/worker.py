"""The OJSWorker reconciler: the worker Deployment wired to its cluster, queue-depth autoscaling
with drain-before-shutdown, the CPU-mode HPA, and status."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from ojsctrl.api import OJSCluster, OJSWorker, validate_worker
from ojsctrl.api.common import API_VERSION
from ojsctrl.api.durations import duration_seconds
from ojsctrl.builders import cluster as cb
from ojsctrl.builders import worker as wb
from ojsctrl.builders.common import config_hash
from ojsctrl.controllers import metrics
from ojsctrl.controllers.cluster import ClusterReconciler, invalid_child_message, restored_edit
from ojsctrl.controllers.cluster_status import (
    deployment_state,
    highest,
    owned_replica_counts,
    rollout_settled,
    workload_conditions,
    workload_phase,
)
from ojsctrl.controllers.common import (
    AUTOSCALER_ANNOTATION,
    AUTOSCALER_MANAGER,
    FIELD_MANAGER,
    FOREIGN_REASON,
    HASH_ANNOTATION,
    MANAGED_SELECTOR,
    OJSWORKERS,
    STATUS_COALESCE,
    UNMANAGED_SELECTOR,
    ConflictEvents,
    ForeignWriters,
    StatusWriter,
    cached_child,
    condition,
    foreign_replica_manager,
    get_condition,
    hpa_targeting,
    now_rfc3339,
)
from ojsctrl.controllers.stats import PollResult, StatsPoller
from ojsctrl.ojs.autoscale import History, WorkerScaling, initial_replicas, worker_desired
from ojsctrl.ojs.client import DEFAULT_CLUSTER_DOMAIN, OJSClient, url_for
from ojsctrl.ojs.drain import DELETION_COST_ANNOTATION, DrainPlan, mark_silent, plan_drain
from ojsctrl.ojs.quiet import QuietSender, quiet_client
from ojsctrl.runtime.apply import Applier, controller_ref
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
    HPAS,
    JSON,
    PODS,
    SERVICES,
    ApiError,
    InvalidError,
    NotFoundError,
    Resource,
)
from ojsctrl.runtime.controller import Controller, Request, Result
from ojsctrl.runtime.events import NORMAL, WARNING, EventRecorder
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.manager import Manager, Runnable

log = structlog.get_logger("ojsctrl.worker")

CLUSTER_INDEX = "cluster-ref"
DELETION_COST = DELETION_COST_ANNOTATION
DEFAULT_TARGET_JOBS = 10
WORKERS_MATCHED = "WorkersMatched"
UNMATCHED_REASON = "WorkerIdsUnmatched"


def unmatched_message(grace_seconds: int, live_workers: int | None = None) -> str:
    """What a user with unmatched workers needs to know: how pods are matched, which SDKs match, and what
    keeps a scale-down safe without matching (SPEC §9.4; facts in reference/ojs-ecosystem.md)."""
    seen = "" if live_workers is None else f" ({live_workers} live workers reported by the server)"
    return (
        f"no pod matches a live OJS worker{seen}, so pods cannot be ranked by busyness: "
        "scale-down is plain and relies on graceful shutdown. "
        "A worker matches its pod when its id starts with worker_<pod name>_ "
        "(the Go SDK's ids carry the hostname, which is the pod name) "
        "or when the server reports its hostname or metadata.kubernetes_pod; "
        "the Python, JS, Rust, Java and Ruby SDKs use random ids and match only through such a server. "
        "Busy workers finish their jobs on SIGTERM within the SDKs' 25s grace; "
        f"terminationGracePeriodSeconds is {grace_seconds}s (Rust workers stop only on SIGINT)"
    )


def worker_cluster(obj: JSON) -> Iterable[str]:
    """Index function: `namespace/clusterRef` of a worker."""
    ref = (obj.get("spec") or {}).get("clusterRef") if isinstance(obj.get("spec"), dict) else None
    ns = (obj.get("metadata") or {}).get("namespace")
    return (f"{ns}/{ref}",) if isinstance(ref, str) and ref else ()


@dataclass
class WorkerOptions:
    """Operator flags the worker reconciler uses."""

    url_template: str
    max_concurrent_reconciles: int = 4
    # --cluster-domain: the workers' OJS_URL ends in .svc.<domain> (SPEC §9.11).
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


class WorkerReconciler:
    """Reconciles OJSWorkers. Construct, then `setup()`."""

    def __init__(
        self,
        manager: Manager,
        options: WorkerOptions,
        poller: StatsPoller,
        recorder: EventRecorder,
        ojs: OJSClient,
        clusters: ClusterReconciler,
        quiet: QuietSender | None = None,
    ) -> None:
        self.manager = manager
        self.client = manager.client
        self.options = options
        self.poller = poller
        self.recorder = recorder
        self.ojs = ojs
        self.cr = clusters
        # Quiet calls go out from a small pool of their own: a drain never waits on them (SPEC §9.4).
        self.quiet = quiet if quiet is not None else QuietSender(quiet_client())
        self.applier = Applier(self.client, FIELD_MANAGER, HASH_ANNOTATION)
        self.status_writer = StatusWriter(
            self.client, OJSWORKERS, recorder, keep=("lastScaleTime", "selector")
        )
        self.conflict_events = ConflictEvents(recorder)
        f = manager.informers
        self.workers = f.informer(OJSWORKERS)
        self.workers.add_indexers({CLUSTER_INDEX: worker_cluster})
        self.children: dict[Resource, Informer] = {
            DEPLOYMENTS: f.informer(DEPLOYMENTS, label_selector=MANAGED_SELECTOR),
            HPAS: f.informer(HPAS, label_selector=MANAGED_SELECTOR),
        }
        # Every HPA, ours or not: one aimed at a worker Deployment by hand is a foreign writer of its
        # replicas (issue 17 item 5). HPAs are few and small.
        self.all_hpas = f.informer(HPAS)
        self.others: dict[Resource, Informer] = {
            # Every worker has a Deployment; a CPU-mode HPA is rare: read with a GET before its first apply.
            DEPLOYMENTS: f.informer(DEPLOYMENTS, label_selector=UNMANAGED_SELECTOR, metadata_only=True),
        }
        # Worker pods are read only to drain: their informer starts with the first drain, so an
        # operator without drainBeforeShutdown workers never watches pods at all.
        self._pods: Informer | None = None
        self._history: dict[str, History] = {}
        self._polled: dict[str, str] = {}  # worker key -> cluster key it asked the poller for
        self._last_scale: dict[str, str] = {}  # worker key -> its last scale time (RFC 3339)
        self._matching: dict[str, JSON] = {}  # worker key -> its last WorkersMatched condition
        self.foreign_writers = ForeignWriters(recorder)
        self._lock = threading.Lock()
        self.controller = Controller(
            "ojsworker", self.reconcile, max_concurrent_reconciles=options.max_concurrent_reconciles
        )

    def setup(self) -> None:
        c = self.controller
        c.watch_primary(self.workers)
        for res, inf in self.children.items():
            c.watch_owned(
                inf,
                API_VERSION,
                "OJSWorker",
                status_delay=STATUS_COALESCE,
                settled=rollout_settled if res == DEPLOYMENTS else None,
            )
        c.watch_mapped(self.cr.clusters, self._workers_of_cluster)
        c.watch_mapped(self.all_hpas, _workers_of_hpa)
        c.watch_mapped(self.cr.secret_meta, self._workers_for_secret)
        self.poller.subscribe(self._stats_changed)
        self.manager.add_controller(c)

    def _workers_of_cluster(self, cluster: JSON) -> Iterable[Request]:
        meta = cluster.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        return [Request.for_object(w) for w in self.workers.store.by_index(CLUSTER_INDEX, key)]

    def _workers_for_secret(self, secret: JSON) -> Iterable[Request]:
        # The cluster's API key Secret feeds OJS_AUTH_TOKEN and the workers' template hash.
        out: list[Request] = []
        for c in self.cr._clusters_for_secret(secret):
            out.extend(
                Request.for_object(w)
                for w in self.workers.store.by_index(CLUSTER_INDEX, f"{c.namespace}/{c.name}")
            )
        return out

    def _stats_changed(self, cluster_key: str) -> None:
        for w in self.workers.store.by_index(CLUSTER_INDEX, cluster_key):
            self.controller.queue.add(Request.for_object(w))

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, req: Request) -> Result | None:
        obj = self.workers.store.get_by_name(req.namespace, req.name)
        key = str(req)
        if obj is None:
            with self._lock:
                self._history.pop(key, None)
                self._last_scale.pop(key, None)
                self._matching.pop(key, None)
                self.foreign_writers.forget(key)
            for ck in self.poller_keys_for(key):
                self.poller.release(ck, f"worker:{key}")
            metrics.forget_worker(req.namespace, req.name)
            self.conflict_events.forget(req.namespace, req.name)
            self.status_writer.forget(key)
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        generation = int(obj["metadata"].get("generation") or 0)
        ref = (obj.get("spec") or {}).get("clusterRef")
        cluster_obj = self.cr.clusters.store.get_by_name(req.namespace, ref) if isinstance(ref, str) else None
        result = validate_worker(obj, cluster_exists=cluster_obj is not None)
        if result.errors:
            msg = "; ".join(f"{e.path}: {e.message}" for e in result.errors)[:2000]
            self._status(
                obj, "Error", [condition("Ready", False, "InvalidSpec", msg, generation=generation)], {}
            )
            return None
        if cluster_obj is None:
            msg = f"OJSCluster {ref} not found in namespace {req.namespace}"
            self._status(
                obj,
                "Error",
                [
                    condition("Ready", False, "ClusterNotFound", msg, generation=generation),
                    condition("ClusterFound", False, "ClusterNotFound", msg, generation=generation),
                ],
                {},
                event=(WARNING, "ClusterNotFound", msg),
            )
            return None
        try:
            cluster = OJSCluster.from_dict(cluster_obj)
        except Exception as e:
            msg = f"OJSCluster {ref} is invalid: {str(e)[:300]}"
            self._status(
                obj,
                "Error",
                [
                    condition("Ready", False, "ClusterInvalid", msg, generation=generation),
                    condition("ClusterFound", True, "ClusterFound", "", generation=generation),
                ],
                {},
            )
            return None
        return _Run(self, obj, OJSWorker.from_dict(obj), cluster_obj, cluster, generation).run()

    def pod_cache(self) -> Informer | None:
        """The worker pods' cache, started on first use; None until it has synced."""
        with self._lock:
            if self._pods is None:
                self._pods = self.manager.informers.informer(PODS, label_selector=WORKER_PODS_SELECTOR)
            pods = self._pods
        return pods if pods.has_synced() else None

    def poller_keys_for(self, worker_key: str) -> list[str]:
        with self._lock:
            ck = self._polled.pop(worker_key, None)
        return [ck] if ck else []

    def _status(
        self, obj: JSON, phase: str, conds: list[JSON], extra: JSON, event: tuple[str, str, str] | None = None
    ) -> float | None:
        if phase == "Degraded":
            # OJSWorker has no Degraded phase (SPEC §1.2; the CRD's enum refuses it): a name conflict or a
            # failed rollout is an Error, and the Degraded condition says which.
            phase = "Error"
        if "replicas" not in extra:
            # An early stop (InvalidSpec, ClusterNotFound) leaves the Deployment running: show its pods.
            meta = obj["metadata"]
            dep = self.children[DEPLOYMENTS].store.get_by_name(meta["namespace"], f"{meta['name']}-worker")
            extra = {**owned_replica_counts(dep, str(meta.get("uid") or "")), **extra}
        metrics.worker_phase(obj["metadata"]["namespace"], obj["metadata"]["name"], phase)
        return self.status_writer.write(obj, phase, conds, extra, event)


WORKER_PODS_SELECTOR = f"{MANAGED_SELECTOR},app.kubernetes.io/component=worker"


class _Run:
    """One reconcile of one worker."""

    def __init__(
        self,
        r: WorkerReconciler,
        obj: JSON,
        worker: OJSWorker,
        cluster_obj: JSON,
        cluster: OJSCluster,
        generation: int,
    ) -> None:
        self.r = r
        self.obj = obj
        self.worker = worker
        self.spec = worker.spec
        self.cluster_obj = cluster_obj
        self.cluster = cluster
        self.generation = generation
        self.ns: str = obj["metadata"]["namespace"]
        self.name: str = obj["metadata"]["name"]
        self.uid: str = obj["metadata"]["uid"]
        self.key = f"{self.ns}/{self.name}"
        self.cluster_key = f"{self.ns}/{cluster_obj['metadata']['name']}"
        self.dep_name = f"{self.name}-worker"
        self.conflicts: list[str] = []
        self.problems: list[str] = []  # children the API server refused
        self.scaling_cond: JSON | None = None
        self.requeue: float | None = None
        self.draining = False
        self.desired: int | None = None
        self.scaled_at: str | None = None
        self.matching: JSON | None = None  # the WorkersMatched condition when this reconcile read workers
        self.foreign: str | None = None  # who else writes the Deployment's replicas (we then yield)

    def cached(self, resource: Resource, name: str) -> JSON | None:
        return self.r.children[resource].store.get_by_name(self.ns, name)

    def ensure(self, resource: Resource, body: JSON | None) -> JSON | None:
        if body is None:
            return None
        live = cached_child(self.r.children, self.r.others, resource, self.ns, body["metadata"]["name"])
        try:
            out = self.r.applier.ensure(resource, body, self.uid, live, in_cache=resource in self.r.others)
        except InvalidError as e:
            # A spec value only the API server refuses: report it. Retrying cannot help until the spec
            # changes, which enqueues the worker again.
            self.problems.append(invalid_child_message(resource, body["metadata"]["name"], e))
            return None
        if out.conflict:
            self.conflicts.append(out.conflict)
            return None
        if restored_edit(out.written, live, out.obj):
            log.info(
                "restored a hand edit", worker=self.key, kind=resource.kind, name=body["metadata"]["name"]
            )
        return out.obj

    def remove(self, resource: Resource, name: str) -> None:
        live = self.cached(resource, name)
        if live is None:
            return
        ref = controller_ref(live)
        if ref is None or ref.get("uid") != self.uid:
            return
        with contextlib.suppress(NotFoundError):
            self.r.client.delete(resource, name, self.ns, uid=live["metadata"]["uid"])

    # ------------------------------------------------------------------ steps
    def foreign_cluster_children(self) -> list[str]:
        """The cluster's children the workers would use (its server Service as their endpoint, its generated
        API key Secret) whose names a foreign object holds (SPEC §9.12)."""
        cluster_uid = self.cluster_obj["metadata"].get("uid")
        cluster_name = self.cluster_obj["metadata"]["name"]
        found = []
        svc_name = f"{cluster_name}-server"
        svc = cached_child(self.r.cr.children, self.r.cr.others, SERVICES, self.ns, svc_name)
        held = [("Service", svc_name, svc)]
        if cb.generates_api_key(self.cluster):
            key_name = cb.api_key_secret_name(self.cluster)
            held.append(("Secret", key_name, self.r.cr.secrets.meta(self.ns, key_name)))
        for kind, name, live in held:
            ref = controller_ref(live) if live is not None else None
            if live is not None and (ref is None or ref.get("uid") != cluster_uid):
                found.append(
                    f"{kind} {self.ns}/{name} of OJSCluster {cluster_name} exists and is not owned by it"
                )
        return found

    def hands_off(self, foreign: list[str]) -> Result | None:
        """A foreign object holds a name the workers would use: report it, leave the running Deployment as
        it is (nothing deleted, nothing applied that would reference the object) and poll nothing."""
        self.conflicts.extend(foreign)
        self.conflicts.append(f"left as it is while the name is taken: Deployment {self.ns}/{self.dep_name}")
        with self.r._lock:
            self.r._history.pop(self.key, None)
        self.r.poller.release(self.cluster_key, f"worker:{self.key}")
        live = self.cached(DEPLOYMENTS, self.dep_name)
        ref = controller_ref(live) if live is not None else None
        self.status(live if ref is not None and ref.get("uid") == self.uid else None, None)
        return Result(requeue_after=self.requeue) if self.requeue else None

    def run(self) -> Result | None:
        a = self.spec.auto_scaling
        foreign = self.foreign_cluster_children()
        if foreign:
            return self.hands_off(foreign)
        api_key = self.api_key()
        live = self.cached(DEPLOYMENTS, self.dep_name)
        if api_key is None and live is None and cb.generates_api_key(self.cluster):
            return self.wait_for_api_key()
        # The template shows the spec itself; the hash adds what it does not: the key's value.
        digest = config_hash(api_key or b"", salt=self.uid)
        holds = ((live or {}).get("metadata") or {}).get("annotations", {}).get(
            AUTOSCALER_ANNOTATION
        ) == "true"
        if not a.enabled:
            replicas: int | None = self.spec.replicas
        elif live is None:
            replicas = (
                initial_replicas(self.spec.replicas, a.min_replicas, a.max_replicas)
                if a.metric != "cpu"
                else max(1, initial_replicas(self.spec.replicas, a.min_replicas, a.max_replicas))
            )
        elif holds:
            replicas = None
        else:
            replicas = int((live.get("spec") or {}).get("replicas") or 0)
        if live is not None:
            self.foreign = self.foreign_writer(live, replicas)
            if self.foreign is not None and replicas is not None:
                # Yield: send back what the foreign writer set, so nothing changes the pod count.
                replicas = int((live.get("spec") or {}).get("replicas") or 0)
        dep = self.ensure(
            DEPLOYMENTS,
            wb.worker_deployment(
                self.worker,
                self.cluster,
                config_hash=digest,
                replicas=replicas,
                cluster_domain=self.r.options.cluster_domain,
            ),
        )
        if self.foreign is None:
            dep = self.handover(dep, a.enabled, holds) or dep

        hpa = wb.worker_hpa(self.worker)
        if hpa is None:
            self.remove(HPAS, self.dep_name)
        else:
            self.ensure(HPAS, hpa)

        stats = None
        if a.enabled and a.metric == "queueDepth":
            stats = self.poll(api_key)
            dep = self.autoscale(dep, stats, api_key) or dep
        else:
            with self.r._lock:
                self.r._history.pop(self.key, None)
            self.r.poller.release(self.cluster_key, f"worker:{self.key}")
            stats = self.r.poller.result(self.cluster_key)
        self.status(dep, stats)
        return Result(requeue_after=self.requeue) if self.requeue else None

    def wait_for_api_key(self) -> Result:
        """The cluster has not generated its API key yet. A Deployment made now would roll again the
        moment the key exists (the template hash covers it), so wait: the Secret's creation re-enqueues
        the worker."""
        ready = get_condition((self.cluster_obj.get("status") or {}).get("conditions"), "Ready")
        cluster_failed = (
            ready is not None and ready.get("status") == "False" and ready.get("reason") != "Pending"
        )
        if not self.obj.get("status") and not cluster_failed:
            # Usually a matter of milliseconds (the cluster was created alongside): no status write
            # for that; the Secret's creation brings the worker back. A cluster that reports a problem
            # (say InvalidSpec) may never make the key: then the worker says so.
            return Result(requeue_after=5.0)
        cluster = self.cluster_obj["metadata"]["name"]
        secret = cb.api_key_secret_name(self.cluster)
        msg = f"waiting for OJSCluster {cluster} to create its API key Secret {secret}"
        if cluster_failed and ready is not None:
            msg += f" (the cluster is not ready: {ready.get('reason')}: {str(ready.get('message'))[:300]})"
        self.r._status(
            self.obj,
            "Pending",
            [
                condition("Ready", False, "WaitingForAPIKey", msg, generation=self.generation),
                condition(
                    "ClusterFound",
                    True,
                    "ClusterFound",
                    f"OJSCluster {cluster}",
                    generation=self.generation,
                ),
            ],
            {},
        )
        return Result(requeue_after=5.0)

    def api_key(self) -> str | None:
        ref = cb.api_key_ref(self.cluster)
        if ref is None:
            return None
        value = self.r.cr.secrets.value(self.ns, ref.name, ref.key)
        return value.decode(errors="replace") if value else None

    def handover(self, dep: JSON | None, enabled: bool, holds: bool) -> JSON | None:
        """spec.replicas passes between ojsctrl and the autoscaler's field manager (SPEC §8.3)."""
        if dep is None:
            return None
        body: JSON = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.dep_name, "namespace": self.ns},
        }
        a = self.spec.auto_scaling
        if enabled and not holds:
            live = int((dep.get("spec") or {}).get("replicas") or 0)
            lo = max(1, a.min_replicas) if a.metric == "cpu" else a.min_replicas
            body["metadata"]["annotations"] = {AUTOSCALER_ANNOTATION: "true"}
            body["spec"] = {"replicas": max(lo, min(a.max_replicas, live))}
            self.requeue = 0.5  # next pass, ojsctrl stops sending replicas
            return dict(self.r.client.apply(DEPLOYMENTS, body, field_manager=AUTOSCALER_MANAGER, force=True))
        if not enabled and holds:
            return dict(self.r.client.apply(DEPLOYMENTS, body, field_manager=AUTOSCALER_MANAGER, force=True))
        return None

    def poll(self, api_key: str | None) -> PollResult | None:
        interval = duration_seconds(self.spec.auto_scaling.polling_interval)
        url = url_for(
            self.r.options.url_template,
            self.cluster_obj["metadata"]["name"],
            self.ns,
            cluster_domain=self.r.options.cluster_domain,
        )
        self.r.poller.register(self.cluster_key, url, api_key, interval, requester=f"worker:{self.key}")
        with self.r._lock:
            self.r._polled[self.key] = self.cluster_key
        # No periodic requeue: the poller re-enqueues this worker when the counts change, and autoscale()
        # asks to come back while a decision waits on time (a stabilising scale-down).
        return self.r.poller.result(self.cluster_key)

    def target(self) -> int:
        a = self.spec.auto_scaling
        if a.target_jobs_per_worker:
            return int(a.target_jobs_per_worker)
        return int(self.cluster.spec.auto_scaling.target_jobs_per_worker or DEFAULT_TARGET_JOBS)

    def load(self, stats: PollResult) -> tuple[int, int]:
        available = sum(stats.queues.get(q, (0, 0))[0] for q in self.spec.queues)
        active = sum(stats.queues.get(q, (0, 0))[1] for q in self.spec.queues)
        return available, active

    def autoscale(self, dep: JSON | None, stats: PollResult | None, api_key: str | None) -> JSON | None:
        a = self.spec.auto_scaling
        if dep is None:
            return None
        holds = ((dep.get("metadata") or {}).get("annotations") or {}).get(AUTOSCALER_ANNOTATION) == "true"
        if not holds:
            return None
        current = int((dep.get("spec") or {}).get("replicas") or 0)
        ok = stats is not None and stats.ok
        available, active = self.load(stats) if stats is not None and stats.ok else (0, 0)
        with self.r._lock:
            history = self.r._history.get(self.key) or History()
        decision = worker_desired(
            available + active,
            current,
            WorkerScaling(
                a.min_replicas,
                a.max_replicas,
                self.target(),
                int(a.scale_up_threshold),
                duration_seconds(a.scale_down_delay),
            ),
            history,
            time.time(),
            stats_available=ok,
            failed_polls=stats.failures if stats is not None else None,
        )
        with self.r._lock:
            self.r._history[self.key] = decision.history
        self.desired = decision.desired
        metrics.WORKER_DESIRED.labels(self.ns, self.name).set(decision.desired)
        metrics.worker_scaling(self.ns, self.name, available, a.max_replicas)
        reason, message = decision.reason, decision.message
        if decision.waits_on_time:
            # Same counts, different answer later: re-evaluate on the polling interval meanwhile.
            interval = duration_seconds(a.polling_interval)
            self.requeue = min(self.requeue or interval, interval)
        target = decision.desired
        if target < current and self.spec.graceful_shutdown.drain_before_shutdown and ok:
            target, reason, message = self.drain(current, target, api_key, reason, message)
        self.scaling_cond = condition(
            "Autoscaling",
            ok,
            reason if ok else "StatsUnavailable",
            message
            if ok
            else f"holding {current} replicas: {(stats.error if stats else 'no poll yet') or ''}",
            generation=self.generation,
        )
        if target == current:
            return None
        foreign = self.foreign or self.replica_manager(dep)
        if foreign is not None:
            self.foreign = foreign
            self.scaling_cond = condition(
                "Autoscaling",
                False,
                FOREIGN_REASON,
                f"holding {current} replicas (would scale to {target}: {message}): {foreign} writes them",
                generation=self.generation,
            )
            return None
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": self.dep_name,
                "namespace": self.ns,
                "annotations": {AUTOSCALER_ANNOTATION: "true"},
            },
            "spec": {"replicas": target},
        }
        out = self.r.client.apply(DEPLOYMENTS, body, field_manager=AUTOSCALER_MANAGER, force=True)
        direction = "up" if target > current else "down"
        metrics.scaled(self.ns, "OJSWorker", self.name, direction)
        self.scaled_at = now_rfc3339()
        self.r.recorder.event(
            self.obj, NORMAL, "Scaled", f"scaled workers from {current} to {target}: {message}"
        )
        log.info(
            "scaled", worker=self.key, replicas_from=current, replicas_to=target, reason=reason, why=message
        )
        return dict(out)

    def foreign_writer(self, live: JSON, wanted: int | None) -> str | None:
        """Who else writes the Deployment's spec.replicas, if anyone: an HPA aimed at it that is not this
        worker's own, or (when the live count differs from ours) a field manager other than ojsctrl's
        that set it within FOREIGN_WRITER_QUIET."""
        hpa = hpa_targeting(self.r.all_hpas, self.ns, self.dep_name, self.uid)
        if hpa is not None:
            return hpa
        have = (live.get("spec") or {}).get("replicas")
        if wanted is None or have is None or int(have) == wanted:
            return None
        return self.replica_manager(live)

    def replica_manager(self, live: JSON) -> str | None:
        """The field manager other than ojsctrl's that wrote spec.replicas lately (one GET: the caches
        hold no managedFields), or None."""
        try:
            full = self.r.client.get(DEPLOYMENTS, self.dep_name, self.ns)
        except (NotFoundError, ApiError):
            return None
        manager = foreign_replica_manager(full, time.time())
        return f"field manager {manager}" if manager else None

    def drain(
        self, current: int, desired: int, api_key: str | None, reason: str, message: str
    ) -> tuple[int, str, str]:
        """Remove idle pods first (SPEC §9.4): rank the pods by the live OJS workers matched to them, set
        deletion costs, quiet the idle victims in the background, shrink by the pods that may go."""
        cache = self.r.pod_cache()
        if cache is None:
            self.requeue = min(self.requeue or 1.0, 1.0)
            return current, reason, f"{message}; waiting for the pod cache before draining"
        pods = [
            p
            for p in cache.store.by_index("namespace", self.ns)
            if (p.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/instance") == self.name
            and (p.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/component") == "worker"
            and not (p.get("metadata") or {}).get("deletionTimestamp")
        ]
        names = sorted(p["metadata"]["name"] for p in pods)
        url = url_for(
            self.r.options.url_template,
            self.cluster_obj["metadata"]["name"],
            self.ns,
            cluster_domain=self.r.options.cluster_domain,
        )
        try:
            workers = mark_silent(self.r.ojs.workers(url, api_key), time.time())
        except Exception as e:
            # Without the workers list a scale-down could kill busy workers: hold and retry.
            return current, "StatsUnavailable", f"cannot read workers for the drain: {str(e)[:200]}"
        plan = plan_drain(
            names, workers, current, desired, [p["metadata"]["name"] for p in pods if not _ranks_ready(p)]
        )
        live_workers = sum(not w.stale for w in workers)
        self.matching = self.matching_condition(plan, len(names), live_workers)
        if plan.unmatched:
            return (
                desired,
                UNMATCHED_REASON,
                f"{message}; {unmatched_message(wb.termination_grace_seconds(self.worker), live_workers)}",
            )
        by_name = {p["metadata"]["name"]: p for p in pods}
        for pod, cost in plan.deletion_costs.items():
            live = by_name.get(pod)
            have = ((live or {}).get("metadata") or {}).get("annotations", {}).get(DELETION_COST)
            if live is not None and have != str(cost):
                try:
                    self.r.client.patch(
                        PODS, pod, {"metadata": {"annotations": {DELETION_COST: str(cost)}}}, self.ns
                    )
                except ApiError as e:
                    log.warning("could not set pod deletion cost", pod=pod, status=e.status)
        if plan.quiet:
            # Fire and forget: the removal does not depend on it (servers pass quiet on as a heartbeat
            # directive, which the SDKs do not read today), and a slow server must not hold this thread.
            self.r.quiet.send(url, api_key, plan.quiet)
        self.draining = plan.draining
        if plan.draining:
            self.requeue = min(self.requeue or 5.0, 5.0)
            return (
                plan.replicas,
                "Draining",
                f"removing idle workers first; busy workers finish their jobs "
                f"({plan.replicas} now, {desired} wanted)",
            )
        return plan.replicas, reason, message

    def matching_condition(self, plan: DrainPlan, pods: int, live: int) -> JSON:
        """WorkersMatched: whether the drain could tie pods to live OJS workers, kept between drains."""
        if plan.unmatched:
            return condition(
                WORKERS_MATCHED,
                False,
                UNMATCHED_REASON,
                unmatched_message(wb.termination_grace_seconds(self.worker), live),
                generation=self.generation,
            )
        msg = f"{plan.matched} of {pods} pods matched to live OJS workers"
        if plan.unmatched_pods:
            msg += (
                f"; {len(plan.unmatched_pods)} without a live worker rank between idle and busy pods "
                f"(e.g. {', '.join(plan.unmatched_pods[:3])})"
            )
        return condition(WORKERS_MATCHED, True, "WorkersMatched", msg, generation=self.generation)

    def matching_status(self) -> JSON | None:
        """The WorkersMatched condition to write: this reconcile's, else the last one known (workers are
        only read when a drain plans a scale-down), else Unknown; None when drain is off."""
        a = self.spec.auto_scaling
        if not (self.spec.graceful_shutdown.drain_before_shutdown and a.enabled and a.metric == "queueDepth"):
            with self.r._lock:
                self.r._matching.pop(self.key, None)
            return None
        with self.r._lock:
            if self.matching is not None:
                self.r._matching[self.key] = self.matching
            last = self.r._matching.get(self.key)
        if last is None:
            # After an operator restart: what the status said before.
            last = get_condition((self.obj.get("status") or {}).get("conditions"), WORKERS_MATCHED)
        if last is None or last.get("status") not in ("True", "False"):
            return condition(
                WORKERS_MATCHED,
                "Unknown",
                "NotChecked",
                "pods are matched to OJS workers when a scale-down is planned",
                generation=self.generation,
            )
        matched = last["status"] == "True"
        return condition(
            WORKERS_MATCHED,
            matched,
            str(last.get("reason") or ("WorkersMatched" if matched else UNMATCHED_REASON)),
            str(last.get("message") or ""),
            generation=self.generation,
        )

    def replicas_condition(self) -> JSON:
        """ReplicasManaged: whether ojsctrl writes the replicas (see ForeignWriters on why it yields)."""
        return self.r.foreign_writers.condition(
            self.obj,
            self.foreign,
            deployment=self.dep_name,
            instead=(
                f"Scale the OJSWorker instead (its scale subresource: kubectl scale ojsw {self.name}, an HPA "
                f"with scaleTargetRef kind OJSWorker name {self.name}, or spec.autoScaling)"
            ),
            generation=self.generation,
        )

    # ------------------------------------------------------------------ status
    def status(self, dep: JSON | None, stats: PollResult | None) -> None:
        gen = self.generation
        state = deployment_state(dep)
        phase = workload_phase(state, (self.obj.get("status") or {}).get("phase"))
        if self.scaled_at is not None and phase == "Pending" and state.ready > 0:
            # This reconcile changed only the replica count; until the deployment controller observes
            # it the Deployment looks unobserved, but the workers are serving: that is Scaling.
            phase = "Scaling"
        if self.draining:
            phase = highest(phase, "Draining")
        if self.conflicts:
            phase = highest(phase, "Degraded")
        if self.problems:
            phase = highest(phase, "Error")
        a = self.spec.auto_scaling
        conds = workload_conditions(
            phase,
            state,
            what="worker",
            problems=[("InvalidSpec", m) for m in self.problems],
            conflicts=self.conflicts,
            generation=gen,
            deployment=self.dep_name,
        )
        conds += [
            condition(
                "ClusterFound",
                True,
                "ClusterFound",
                f"OJSCluster {self.cluster_obj['metadata']['name']}",
                generation=gen,
            ),
        ]
        matching = self.matching_status()
        if matching is not None:
            conds.append(matching)
        conds.append(self.replicas_condition())
        if self.scaling_cond is not None:
            cond = dict(self.scaling_cond)
            if "replicas" in (self.obj.get("spec") or {}):
                cond["message"] += (
                    f" (spec.replicas {self.spec.replicas} is ignored while autoscaling is "
                    "enabled: it was only the initial value)"
                )
            conds.append(cond)
        elif a.enabled and a.metric == "cpu":
            conds.append(
                condition(
                    "Autoscaling",
                    True,
                    "HorizontalPodAutoscaler",
                    f"CPU utilisation target {a.cpu_utilization}% via HPA {self.dep_name}",
                    generation=gen,
                )
            )
        elif a.enabled:
            conds.append(
                condition(
                    "Autoscaling", False, "WaitingForStats", "waiting for the first poll", generation=gen
                )
            )
        else:
            conds.append(
                condition(
                    "Autoscaling", False, "Disabled", "replicas come from spec.replicas", generation=gen
                )
            )
        extra: JSON = {
            "replicas": state.replicas,
            "readyReplicas": state.ready,
            "selector": wb.worker_selector_string(self.worker),
        }
        if self.desired is not None:
            extra["desiredReplicas"] = self.desired
        elif not a.enabled:
            extra["desiredReplicas"] = self.spec.replicas
        else:
            old = (self.obj.get("status") or {}).get("desiredReplicas")
            if old is not None:
                extra["desiredReplicas"] = old
        if stats is not None and stats.ok:
            available, active = self.load(stats)
            extra["queueDepth"] = available
            extra["activeJobs"] = active
        else:
            old_status = self.obj.get("status") or {}
            for k in ("queueDepth", "activeJobs"):
                if k in old_status:
                    extra[k] = old_status[k]
        # Remembered in memory too: the cached object may not show our last status write yet, and an
        # apply without the field would remove it.
        with self.r._lock:
            if self.scaled_at:
                self.r._last_scale[self.key] = self.scaled_at
            last = self.r._last_scale.get(self.key)
        if last:
            extra["lastScaleTime"] = last
        # A name conflict's Warning event comes from ConflictEvents (naming the objects), once per conflict.
        held = self.r._status(self.obj, phase, conds, extra)
        if held is not None:
            self.requeue = min(self.requeue or held, held)
        self.r.conflict_events.report(self.obj, self.conflicts)


def _workers_of_hpa(hpa: JSON) -> Iterable[Request]:
    """The worker whose Deployment an HPA targets (its name is <worker>-worker)."""
    target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    name = target.get("name")
    ns = (hpa.get("metadata") or {}).get("namespace")
    if target.get("kind") != "Deployment" or not isinstance(name, str) or not name.endswith("-worker"):
        return ()
    return (Request(str(ns), name[: -len("-worker")]),)


def build(
    manager: Manager,
    options: WorkerOptions,
    poller: StatsPoller,
    recorder: EventRecorder,
    ojs: OJSClient,
    clusters: ClusterReconciler,
) -> WorkerReconciler:
    """Create and wire the worker reconciler."""
    r = WorkerReconciler(manager, options, poller, recorder, ojs, clusters)
    r.setup()
    manager.add_runnable(Runnable("ojs-quiet-sender", lambda: None, r.quiet.close, needs_leader=False))
    return r


def _ranks_ready(pod: JSON) -> bool:
    """Whether the ReplicaSet controller would weigh this pod's deletion cost against the others': it
    first removes pods that are unscheduled, not Running or not Ready, whatever their cost."""
    status = pod.get("status") or {}
    if not (pod.get("spec") or {}).get("nodeName") or status.get("phase") != "Running":
        return False
    ready = get_condition(status.get("conditions"), "Ready")
    return ready is not None and ready.get("status") == "True"
