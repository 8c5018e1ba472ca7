"""The OJSWorker reconciler: the worker Deployment wired to its cluster, queue-depth autoscaling
with drain-before-shutdown, the CPU-mode HPA, and status."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import structlog

from ojsctrl.api import OJSCluster, OJSWorker, validate_worker
from ojsctrl.api.durations import duration_seconds
from ojsctrl.api.worker import (
    OPERATOR_METRICS,
    OJSWorkerSpec,
    WorkerAutoScaling,
    parse_pause_annotations,
)
from ojsctrl.builders import cluster as cluster_builders
from ojsctrl.builders import worker as worker_builders
from ojsctrl.builders.common import config_hash
from ojsctrl.controllers import metrics
from ojsctrl.controllers.children import (
    ChildCaches,
    autoscaler_holds,
    child_update_matters,
    cluster_ready_changed,
    cluster_update_matters_to_workers,
    is_controlled_by,
)
from ojsctrl.controllers.cluster import ClusterReconciler
from ojsctrl.controllers.common import (
    FOREIGN_REASON,
    MANAGED_SELECTOR,
    OJSWORKERS,
    UNMANAGED_SELECTOR,
    condition,
    get_condition,
    managed_informer,
    now_rfc3339,
    routine_reason,
)
from ojsctrl.controllers.owner import OwnerReconciler, OwnerSync, owner_of_hpa
from ojsctrl.controllers.stats import PollResult, StatsPoller
from ojsctrl.controllers.worker_status import WorkerStatusInputs, scaling_status_hold, worker_status
from ojsctrl.ojs.autoscale import Decision, History, WorkerScaling, initial_replicas, worker_desired
from ojsctrl.ojs.client import DEFAULT_CLUSTER_DOMAIN, OJSClient, url_for
from ojsctrl.ojs.drain import DELETION_COST_ANNOTATION, DrainPlan, mark_silent, plan_drain
from ojsctrl.ojs.quiet import QuietSender, quiet_client
from ojsctrl.ojs.waittime import (
    Estimate,
    Estimator,
    PauseOutcome,
    Sample,
    StartupTracker,
    WaitTimeScaling,
    autoscaling_status,
    fallback_decision,
    pause_decision,
    wait_time_desired,
)
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
    HPAS,
    JSON,
    PODS,
    SECRETS,
    SERVICES,
    ApiError,
)
from ojsctrl.runtime.controller import Request, Result, not_status_only
from ojsctrl.runtime.events import NORMAL, WARNING, EventRecorder
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.manager import Manager, Runnable

log = structlog.get_logger("ojsctrl.worker")

CLUSTER_INDEX = "cluster-ref"
# A worker waiting for its cluster's generated API key is woken by the Secret's creation (the clusters'
# Secret index names generated keys) and by a change of the cluster's Ready condition; this re-check is
# only a safety net against a bug in those wake-ups (watches do not lose events: a broken watch relists
# and delivers what changed). At 5 s, 1,000 waiting workers cost 200 reconciles/s that starved the cluster
# reconciles creating those very keys; at 30 s doubling, the workers whose clusters got their keys late
# in an N=1000 convergence (four minutes) still came back twice each for nothing (6.9 reconciles per
# worker against 4.9 wake-ups). So the net starts at 5 minutes and doubles up to 30.
API_KEY_RECHECK = 300.0
API_KEY_RECHECK_MAX = 1800.0

# A stabilising scale-down comes back this long after its window allows it (the window compares with >=).
RETRY_MARGIN = 0.05


def api_key_recheck(waits: int) -> float:
    """Seconds until a worker that has waited ``waits`` reconciles in a row for its API key looks again."""
    return min(API_KEY_RECHECK_MAX, API_KEY_RECHECK * 2.0 ** max(0, min(waits - 1, 16)))


DELETION_COST = DELETION_COST_ANNOTATION
DEFAULT_TARGET_JOBS = 10
WORKERS_MATCHED = "WorkersMatched"
UNMATCHED_REASON = "WorkerIdsUnmatched"


def unmatched_message(grace_seconds: int, live_workers: int | None = None) -> str:
    """What a user with unmatched workers needs to know: how pods are matched, which SDKs match, and what
    keeps a scale-down safe without matching (design.md §drain; facts in reference/ojs-ecosystem.md)."""
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
    # --cluster-domain: the workers' OJS_URL ends in .svc.<domain> (design.md §cluster-domain).
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


class WorkerReconciler(OwnerReconciler):
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
        super().__init__(
            manager,
            poller,
            recorder,
            name="ojsworker",
            max_concurrent_reconciles=options.max_concurrent_reconciles,
        )
        self.options = options
        self.ojs = ojs
        self.cluster_reconciler = clusters
        # Quiet calls go out from a small pool of their own: a drain never waits on them (design.md §drain).
        self.quiet = quiet if quiet is not None else QuietSender(quiet_client())
        informers = manager.informers
        self.workers = informers.informer(OJSWORKERS, resync=True, spec_follows_generation=True)
        self.workers.add_indexers({CLUSTER_INDEX: worker_cluster})
        self.caches = ChildCaches(
            managed={
                DEPLOYMENTS: managed_informer(informers, DEPLOYMENTS),
                HPAS: managed_informer(informers, HPAS),
            },
            # Every worker has a Deployment; a CPU-mode HPA is rare: read with a GET before its first apply.
            unmanaged={
                DEPLOYMENTS: informers.informer(
                    DEPLOYMENTS, label_selector=UNMANAGED_SELECTOR, metadata_only=True
                ),
            },
        )
        # Every HPA, ours or not: one aimed at a worker Deployment by hand is a foreign writer of its
        # replicas (issue 17 item 5). HPAs are few and small.
        self.all_hpas = informers.informer(HPAS)
        # Worker pods are read only to drain: their informer starts with the first drain, so an
        # operator without drainBeforeShutdown workers never watches pods at all.
        self._pods: Informer | None = None
        # OJSWorker has no Degraded phase (design.md §api-worker; the CRD's enum refuses it): a name conflict
        # or a failed rollout is an Error, and the Degraded condition says which.
        self.status = self.status_for(
            OJSWORKERS,
            worker_builders.deployment_name_of,
            phase_map={"Degraded": "Error"},
            publish_phase=metrics.worker_phase,
            # Each scaling has its Scaled event (the autoscaler's) or is the user's own kubectl scale.
            quiet_transitions=(frozenset(("Running", "Scaling")),),
        )
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Watch workers, their children, their clusters, HPAs and the clusters' Secrets; register the
        controller with the manager."""
        controller = self.controller
        # Our own status writes do not wake us again (design.md §resync).
        controller.watch_primary(self.workers, not_status_only)
        self.watch_children("OJSWorker")
        # A worker reads its cluster's spec and identity, not the cluster's polled numbers; the Ready
        # condition only while it waits for the API key (then it says why the cluster is not ready).
        controller.watch_mapped(
            self.cluster_reconciler.clusters, self._workers_of_cluster, cluster_update_matters_to_workers
        )
        controller.watch_mapped(
            self.cluster_reconciler.clusters, self._workers_waiting_for_key, cluster_ready_changed
        )
        controller.watch_mapped(self.all_hpas, _workers_of_hpa, child_update_matters(HPAS))
        controller.watch_mapped(self.cluster_reconciler.secret_meta, self._workers_for_secret)
        clusters = self.cluster_reconciler.caches
        self.watch_held_names(
            {
                # Its own Deployment, and the cluster's Service and API key Secret it would use.
                DEPLOYMENTS.kind: (self.caches.managed[DEPLOYMENTS], self.caches.unmanaged[DEPLOYMENTS]),
                HPAS.kind: (self.all_hpas,),
                SERVICES.kind: (clusters.managed[SERVICES], clusters.unmanaged[SERVICES]),
                SECRETS.kind: (self.cluster_reconciler.secret_meta,),
            }
        )
        self.poller.subscribe_outcomes(self._stats_changed)
        self.manager.add_controller(controller)
        self.manager.add_runnable(
            Runnable("ojs-quiet-sender", lambda: None, self.quiet.close, needs_leader=False)
        )

    def _workers_of_cluster(self, cluster: JSON) -> Iterable[Request]:
        meta = cluster.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        return [Request.for_object(w) for w in self.workers.store.by_index(CLUSTER_INDEX, key)]

    def _workers_waiting_for_key(self, cluster: JSON) -> Iterable[Request]:
        return [r for r in self._workers_of_cluster(cluster) if self.memory.may_wait_for_key(str(r))]

    def _workers_for_secret(self, secret: JSON) -> Iterable[Request]:
        # The cluster's API key Secret feeds OJS_AUTH_TOKEN and the workers' template hash.
        out: list[Request] = []
        for cluster in self.cluster_reconciler.clusters_for_secret(secret):
            out.extend(
                Request.for_object(w)
                for w in self.workers.store.by_index(CLUSTER_INDEX, f"{cluster.namespace}/{cluster.name}")
            )
        return out

    def _stats_changed(self, cluster_key: str, prev: PollResult | None, result: PollResult) -> None:
        for w in self.workers.store.by_index(CLUSTER_INDEX, cluster_key):
            if poll_is_news(w, prev, result):
                self.controller.enqueue(Request.for_object(w), "poller")

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, req: Request) -> Result | None:
        """Bring one worker's Deployment, HPA, replicas and status in line with its spec."""
        live = self.live(self.workers, req)
        if live is None:
            return None
        obj, generation = live
        ref = (obj.get("spec") or {}).get("clusterRef")
        cluster_obj = (
            self.cluster_reconciler.clusters.store.get_by_name(req.namespace, ref)
            if isinstance(ref, str)
            else None
        )
        if self.spec_invalid(
            req, obj, generation, lambda: validate_worker(obj, cluster_exists=cluster_obj is not None)
        ):
            return None
        if cluster_obj is None:
            msg = f"OJSCluster {ref} not found in namespace {req.namespace}"
            found = condition("ClusterFound", False, "ClusterNotFound", msg, generation=generation)
            self.cluster_unusable(obj, generation, "ClusterNotFound", msg, found, notify=True)
            return None
        try:
            cluster = OJSCluster.from_dict(cluster_obj, status=False)
        except Exception as e:
            msg = f"OJSCluster {ref} is invalid: {str(e)[:300]}"
            found = condition("ClusterFound", True, "ClusterFound", "", generation=generation)
            self.cluster_unusable(obj, generation, "ClusterInvalid", msg, found, notify=False)
            return None
        return WorkerSync(
            self, obj, OJSWorker.from_dict(obj, status=False), cluster_obj, cluster, generation
        ).run()

    def forget(self, req: Request) -> None:
        """A deleted worker: release its poller interest and drop everything kept about it, its metrics
        included."""
        key = str(req)
        polled = self.memory.take_polled(key)
        if polled:
            self.poller.release(polled, f"worker:{key}")
        super().forget(req)
        metrics.forget_worker(req.namespace, req.name)

    def cluster_unusable(
        self, obj: JSON, generation: int, reason: str, msg: str, found: JSON, *, notify: bool
    ) -> None:
        """Report a worker whose cluster is missing or unusable (a Warning event too when ``notify``)."""
        conds = [condition("Ready", False, reason, msg, generation=generation), found]
        self.status.write(obj, "Error", conds, {}, event=(WARNING, reason, msg) if notify else None)

    def pod_cache(self) -> Informer | None:
        """The worker pods' cache, started on first use; None until it has synced."""
        with self._lock:
            if self._pods is None:
                self._pods = self.manager.informers.informer(PODS, label_selector=WORKER_PODS_SELECTOR)
            pods = self._pods
        return pods if pods.has_synced() else None


WORKER_PODS_SELECTOR = f"{MANAGED_SELECTOR},app.kubernetes.io/component=worker"


class WorkerSync(OwnerSync):
    """One reconcile of one worker: the steps only a worker has (the cluster's names, the API key, queue
    depth autoscaling with drain, status); child ownership goes through :class:`Children`."""

    def __init__(
        self,
        reconciler: WorkerReconciler,
        obj: JSON,
        worker: OJSWorker,
        cluster_obj: JSON,
        cluster: OJSCluster,
        generation: int,
    ) -> None:
        super().__init__(reconciler, obj, generation, "worker")
        self.reconciler = reconciler
        self.worker = worker
        self.spec = worker.spec
        self.cluster_obj = cluster_obj
        self.cluster = cluster
        self.cluster_key = f"{self.ns}/{cluster_obj['metadata']['name']}"
        self.dep_name = worker_builders.worker_deployment_name(worker)
        self.scaling_cond: JSON | None = None
        self.draining = False
        self.desired: int | None = None
        self.scaled_at: str | None = None
        self.matching: JSON | None = None  # the WorkersMatched condition when this reconcile read workers
        self.autoscaling: JSON | None = None  # status.autoscaling when the autoscaler decided

    # ------------------------------------------------------------------ steps
    def foreign_cluster_children(self) -> list[str]:
        """The cluster's children the workers would use (its server Service as their endpoint, its generated
        API key Secret) whose names a foreign object holds (design.md §name-conflict)."""
        cluster_uid = self.cluster_obj["metadata"].get("uid")
        cluster_name = self.cluster_obj["metadata"]["name"]
        found = []
        clusters = self.reconciler.cluster_reconciler
        service = cluster_builders.server_name(self.cluster)
        used = [("Service", service, clusters.caches.any_object(SERVICES, self.ns, service))]
        if cluster_builders.generates_api_key(self.cluster):
            key_name = cluster_builders.api_key_secret_name(self.cluster)
            used.append(("Secret", key_name, clusters.secrets.meta(self.ns, key_name)))
        for kind, name, live in used:
            if live is not None and not is_controlled_by(live, str(cluster_uid)):
                self.children.taken.add((kind, name))
                found.append(
                    f"{kind} {self.ns}/{name} of OJSCluster {cluster_name} exists and is not owned by it"
                )
        return found

    def hands_off(self, foreign: list[str]) -> Result | None:
        """A foreign object holds a name the workers would use: report it, leave the running Deployment as
        it is (nothing deleted, nothing applied that would reference the object) and poll nothing."""
        self.children.conflicts.extend(foreign)
        self.children.conflicts.append(
            f"left as it is while the name is taken: Deployment {self.ns}/{self.dep_name}"
        )
        self.reconciler.memory.set_history(self.key, None)
        self.reconciler.poller.release(self.cluster_key, f"worker:{self.key}")
        self.status(self.children.ours(DEPLOYMENTS, self.dep_name), None)
        return self.result()

    def run(self) -> Result | None:
        """Run the steps in order: the cluster's names, the API key, the Deployment with its replicas
        hand-over, the CPU-mode HPA, polling and autoscaling, status."""
        autoscaling = self.spec.auto_scaling
        foreign = self.foreign_cluster_children()
        if foreign:
            return self.hands_off(foreign)
        api_key = self.api_key()
        memory = self.reconciler.memory
        live = memory.fresher(self.key, self.children.cached(DEPLOYMENTS, self.dep_name))
        waiting = api_key is None and live is None and cluster_builders.generates_api_key(self.cluster)
        if waiting:
            # The first to need the cluster's key makes it: a worker created with its cluster does not
            # wait for the cluster's turn in its queue (design.md §api-key).
            api_key = self.reconciler.cluster_reconciler.generate_api_key(self.cluster_obj, self.cluster)
            waiting = api_key is None
        waits = self.reconciler.memory.note_waiting_for_key(self.key, waiting)
        if waiting:
            return self.wait_for_api_key(waits)
        # The template shows the spec itself; the hash adds what it does not: the key's value.
        digest = config_hash(api_key or b"", salt=self.uid)
        held_by_autoscaler = autoscaler_holds(live)
        if not autoscaling.enabled:
            replicas: int | None = self.spec.replicas
        elif live is None:
            replicas = (
                initial_replicas(self.spec.replicas, autoscaling.min_replicas, autoscaling.max_replicas)
                if autoscaling.metric != "cpu"
                else max(
                    1,
                    initial_replicas(self.spec.replicas, autoscaling.min_replicas, autoscaling.max_replicas),
                )
            )
        elif held_by_autoscaler:
            replicas = None
        else:
            replicas = int((live.get("spec") or {}).get("replicas") or 0)
        self.replica_writer, replicas = self.children.replicas_to_send(
            self.reconciler.all_hpas, live, self.dep_name, replicas
        )
        dep = self.children.ensure(
            DEPLOYMENTS,
            worker_builders.worker_deployment(
                self.worker,
                self.cluster,
                config_hash=digest,
                replicas=replicas,
                cluster_domain=self.reconciler.options.cluster_domain,
            ),
        )
        if self.replica_writer is None:
            dep = self.hand_over_replicas(dep, autoscaling.enabled, held_by_autoscaler) or dep
        dep = memory.fresher(self.key, dep)

        hpa = worker_builders.worker_hpa(self.worker)
        if hpa is None:
            self.children.remove(HPAS, self.dep_name)
        else:
            self.children.ensure(HPAS, hpa)

        stats = None
        if autoscaling.enabled and autoscaling.metric in OPERATOR_METRICS:
            stats = self.poll(api_key)
            dep = self.autoscale(dep, stats, api_key) or dep
        else:
            self.reconciler.memory.set_history(self.key, None)
            self.reconciler.memory.set_wait_state(self.key, None, None)
            metrics.forget_worker_autoscaling_inputs(self.ns, self.name)
            self.reconciler.poller.release(self.cluster_key, f"worker:{self.key}")
            stats = self.reconciler.poller.result(self.cluster_key)
        if self.scaled_at is not None:
            # The replicas are written; the status of the scaling is bookkeeping: it waits behind the other
            # workers' decisions and goes with the rollout's first step (design.md §resync).
            # What only this reconcile learned is kept for that status: the time of the scale and the
            # drain's WorkersMatched finding (the next reconcile decides again on the same counts).
            memory.note_scale(self.key, self.scaled_at)
            if self.matching is not None:
                memory.matching(self.key, self.matching)
            memory.defer_status(self.key, time.monotonic())
            # result() records the child names foreign objects hold; the next reconcile asks its requeues.
            self.result()
            return Result(low=True)
        held = self.status(dep, stats)
        out = self.result()
        if held is None:
            return out
        if out is None or out.requeue_after is None:
            # Only the held status is due: bookkeeping, at low priority.
            return Result(requeue_after=held, low=True)
        # A step asked to come back (a scale-down coming due...): at normal priority, whichever is first.
        return Result(requeue_after=min(held, out.requeue_after))

    def wait_for_api_key(self, waits: int) -> Result:
        """The cluster's API key does not exist, and the worker could not make it (the cluster is being
        deleted, its spec is invalid, or the Secret was made a moment ago and is not readable yet). A
        Deployment made now would roll again the moment the key exists (the template hash covers it), so
        wait: the Secret's creation re-enqueues the worker."""
        ready = get_condition((self.cluster_obj.get("status") or {}).get("conditions"), "Ready")
        cluster_failed = (
            ready is not None and ready.get("status") == "False" and ready.get("reason") != "Pending"
        )
        if not self.obj.get("status") and not cluster_failed:
            # Usually a matter of milliseconds (the cluster was created alongside): no status write
            # for that; the Secret's creation brings the worker back. A cluster that reports a problem
            # (say InvalidSpec) may never make the key: then the worker says so.
            return Result(requeue_after=api_key_recheck(waits))
        cluster = self.cluster_obj["metadata"]["name"]
        secret = cluster_builders.api_key_secret_name(self.cluster)
        msg = f"waiting for OJSCluster {cluster} to create its API key Secret {secret}"
        if cluster_failed and ready is not None:
            msg += f" (the cluster is not ready: {ready.get('reason')}: {str(ready.get('message'))[:300]})"
        held = self.reconciler.status.write(
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
        # A first Pending status is held for the grace (StatusWriter): come back when it is due, not at
        # the safety net's minutes, by when the hold would have started afresh.
        return Result(requeue_after=held if held is not None else api_key_recheck(waits))

    def api_key(self) -> str | None:
        """The cluster's API key as the workers get it, or None (auth off, or the Secret not there yet)."""
        ref = cluster_builders.api_key_ref(self.cluster)
        if ref is None:
            return None
        value = self.reconciler.cluster_reconciler.secrets.value(self.ns, ref.name, ref.key)
        return value.decode(errors="replace") if value else None

    def hand_over_replicas(self, dep: JSON | None, autoscale: bool, held_by_autoscaler: bool) -> JSON | None:
        """Hand the worker replicas to the autoscaler's field manager, or back (design.md §field-managers); a
        CPU-mode HPA never starts from zero."""
        bounds = self.spec.auto_scaling
        low = max(1, bounds.min_replicas) if bounds.metric == "cpu" else bounds.min_replicas
        return self.children.hand_over_replicas(
            dep,
            autoscale=autoscale,
            held_by_autoscaler=held_by_autoscaler,
            start=lambda live: max(low, min(bounds.max_replicas, live)),
            unset=0,
        )

    def poll(self, api_key: str | None) -> PollResult | None:
        """Ask the poller for the cluster's queue counts at the worker's polling interval; return the last
        result."""
        interval = duration_seconds(self.spec.auto_scaling.polling_interval)
        url = url_for(
            self.reconciler.options.url_template,
            self.cluster_obj["metadata"]["name"],
            self.ns,
            cluster_domain=self.reconciler.options.cluster_domain,
        )
        self.reconciler.poller.register(
            self.cluster_key, url, api_key, interval, requester=f"worker:{self.key}"
        )
        self.reconciler.memory.set_polled(self.key, self.cluster_key)
        # No periodic requeue: the poller re-enqueues this worker when the counts change, and autoscale()
        # asks to come back while a decision waits on time (a stabilising scale-down).
        return self.reconciler.poller.result(self.cluster_key)

    def target(self) -> int:
        """Jobs per worker pod: the worker's, else its cluster's default, else 10."""
        cluster_default = self.cluster.spec.auto_scaling.target_jobs_per_worker
        return int(self.spec.auto_scaling.effective_target_jobs_per_worker(cluster_default))

    def load(self, stats: PollResult) -> tuple[int, int]:
        """(available, active) jobs of the worker's own queues."""
        available = sum(stats.queues.get(q, (0, 0))[0] for q in self.spec.queues)
        active = sum(stats.queues.get(q, (0, 0))[1] for q in self.spec.queues)
        return available, active

    def autoscale(self, dep: JSON | None, stats: PollResult | None, api_key: str | None) -> JSON | None:
        """Decide the replicas (pause first, then the fallback after failed polls, then the metric:
        queueDepth or waitTime), draining idle pods first when asked, and write them when the autoscaler
        holds them; returns the Deployment as written."""
        autoscaling = self.spec.auto_scaling
        if dep is None:
            return None
        if not autoscaler_holds(dep):
            return None
        current = int((dep.get("spec") or {}).get("replicas") or 0)
        ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
        ok = stats is not None and stats.ok
        available, active = self.load(stats) if stats is not None and stats.ok else (0, 0)
        now = time.time()
        memory = self.reconciler.memory
        history = memory.history(self.key) or History()
        scaling = WorkerScaling(
            autoscaling.min_replicas,
            autoscaling.max_replicas,
            self.target(),
            int(autoscaling.scale_up_threshold),
            duration_seconds(autoscaling.scale_down_delay),
        )
        estimator, tracker = self.wait_state(stats, available, active, now, ready, current)
        pause = self.pause(current, history, now)
        fallback = None if pause.paused else self.fallback(stats, current, scaling, history, now)
        decision: Decision
        if pause.outcome.decision is not None:
            decision = pause.outcome.decision
        elif fallback is not None:
            decision = fallback
        else:
            decision = self.metric_decision(
                stats, available, active, current, ready, scaling, history, now, estimator, tracker
            )
        memory.set_history(self.key, decision.history)
        self.desired = decision.desired
        metrics.WORKER_DESIRED.labels(self.ns, self.name).set(decision.desired)
        metrics.worker_scaling(self.ns, self.name, available, autoscaling.max_replicas)
        reason, message = decision.reason, decision.message
        if pause.error:
            message = f"{message}; {pause.error}"
        if pause.outcome.expired:
            # While the ended pause's annotation stays, say so; the metric's own reason stays in the message.
            reason, message = "PauseExpired", f"{pause.outcome.message}; {decision.reason}: {message}"
        self.explain(decision, reason, message, ok, estimator, tracker, available, active)
        self.schedule_next(decision, ok, pause.outcome.resume_at, now)
        target = decision.desired
        # A paused-replicas below the current count drains too: the pause fixes the count, not the way.
        if target < current and self.spec.graceful_shutdown.drain_before_shutdown and ok:
            target, reason, message = self.drain(current, target, api_key, reason, message)
        if pause.paused or fallback is not None or ok:
            cond_reason, cond_message = reason, message
        else:
            cond_reason = "StatsUnavailable"
            cond_message = f"holding {current} replicas: {(stats.error if stats else 'no poll yet') or ''}"
        status_ok = ok and not pause.paused and fallback is None
        self.scaling_cond = condition(
            "Autoscaling", status_ok, cond_reason, cond_message, generation=self.generation
        )
        if target == current:
            return None
        written = self.write_scale(current, target, reason, message, now, estimator, tracker)
        if written is not None and ok and stats is not None and not pause.paused:
            # From when the counts that call for it were first seen (a scale-down: scaleDownDelay after
            # that), at most from the poll it read.
            due = stats.counts_since(self.spec.queues)
            if target < current:
                due += scaling.scale_down_delay
            metrics.decision_written("OJSWorker", min(due, stats.at), time.monotonic())
        return written

    def metric_decision(
        self,
        stats: PollResult | None,
        available: int,
        active: int,
        current: int,
        ready: int,
        scaling: WorkerScaling,
        history: History,
        now: float,
        estimator: Estimator,
        tracker: StartupTracker,
    ) -> Decision:
        """The metric's own decision: queueDepth on the load, or waitTime on the estimated wait."""
        autoscaling = self.spec.auto_scaling
        ok = stats is not None and stats.ok
        failed_polls = stats.failures if stats is not None else None
        if autoscaling.metric != "waitTime":
            # Evaluated when the counts move, not on a timer: the last recommendation held until the poll
            # that first showed these counts (on the wall clock of ``now`` and the history).
            since = None
            if ok and stats is not None:
                since = now - (self.reconciler.poller.now() - stats.counts_since(self.spec.queues))
            return worker_desired(
                available + active,
                current,
                scaling,
                history,
                now,
                stats_available=ok,
                failed_polls=failed_polls,
                inputs_since=since,
            )
        assert autoscaling.target_wait_time is not None  # the API requires it with waitTime
        return wait_time_desired(
            available,
            active,
            current,
            scaling,
            WaitTimeScaling(duration_seconds(autoscaling.target_wait_time), self.slots_per_pod()),
            self.on_wall_clock(estimator.estimate(), now),
            history,
            now,
            ready=ready,
            startup_latency=tracker.value(),
            stats_available=ok,
            failed_polls=failed_polls,
        )

    def on_wall_clock(self, estimate: Estimate, now: float) -> Estimate:
        """The estimate with ``measured_at`` moved from the poller's clock (the samples' times) to the wall
        clock of ``now`` and the history, which it is compared with."""
        if estimate.measured_at is None:
            return estimate
        return replace(estimate, measured_at=now - (self.reconciler.poller.now() - estimate.measured_at))

    def schedule_next(self, decision: Decision, ok: bool, resume_at: float | None, now: float) -> None:
        """Come back on the polling interval when the same counts may answer otherwise later (a
        stabilising scale-down, a cooldown), for every poll of a waitTime estimate (rates fall when
        nothing changes), and while polls fail towards a fallback (failed polls look alike and wake no
        one); and at the end of a timed pause, whatever else happens."""
        autoscaling = self.spec.auto_scaling
        failing_towards_fallback = not ok and autoscaling.fallback is not None
        if decision.waits_on_time or autoscaling.metric == "waitTime" or failing_towards_fallback:
            interval = duration_seconds(autoscaling.polling_interval)
            self.children.requeue = min(self.children.requeue or interval, interval)
        if decision.retry_at is not None:
            # A stabilising scale-down comes back when its window allows it, not up to an interval late.
            self.children.requeue_within(max(RETRY_MARGIN, decision.retry_at - now + RETRY_MARGIN))
        if resume_at is not None:
            self.children.requeue_within(max(0.5, resume_at - now))

    def write_scale(
        self,
        current: int,
        target: int,
        reason: str,
        message: str,
        now: float,
        estimator: Estimator,
        tracker: StartupTracker,
    ) -> JSON | None:
        """Write ``target`` replicas unless another writer holds them (then say so in the condition);
        record the scale (metrics, event, log, the start-up tracker of a scale-up)."""
        foreign = self.replica_writer
        out: JSON | None = None
        if foreign is None:
            out, foreign = self.children.write_replicas(self.dep_name, target)
        if foreign is not None:
            self.replica_writer = foreign
            self.scaling_cond = condition(
                "Autoscaling",
                False,
                FOREIGN_REASON,
                f"holding {current} replicas (would scale to {target}: {message}): {foreign} writes them",
                generation=self.generation,
            )
            return None
        assert out is not None  # written above when no other writer holds the replicas
        self.reconciler.memory.note_written(self.key, out)
        if target > current and self.spec.auto_scaling.metric == "waitTime":
            self.reconciler.memory.set_wait_state(self.key, estimator, tracker.scaled_up(now, target))
        direction = "up" if target > current else "down"
        metrics.scaled(self.ns, "OJSWorker", self.name, direction)
        self.scaled_at = now_rfc3339()
        self.reconciler.recorder.event(
            self.obj, NORMAL, "Scaled", f"scaled workers from {current} to {target}: {message}"
        )
        log.info(
            "scaled", worker=self.key, replicas_from=current, replicas_to=target, reason=reason, why=message
        )
        return out

    def slots_per_pod(self) -> int:
        """Jobs one pod runs at once, for waitTime: spec.concurrency, else targetJobsPerWorker (the SDKs'
        defaults differ, so the jobs-per-pod the depth mode assumes stands in)."""
        return self.spec.concurrency or self.target()

    def wait_state(
        self, stats: PollResult | None, available: int, active: int, now: float, ready: int, current: int
    ) -> tuple[Estimator, StartupTracker]:
        """The worker's wait-time estimator after this poll and its start-up tracker after this look at
        the Ready pods, kept in memory (dropped with the worker, or when it stops using waitTime)."""
        memory = self.reconciler.memory
        if self.spec.auto_scaling.metric != "waitTime":
            memory.set_wait_state(self.key, None, None)
            return Estimator(), StartupTracker()
        kept_estimator, kept_tracker = memory.wait_state(self.key)
        estimator = kept_estimator if isinstance(kept_estimator, Estimator) else Estimator()
        tracker = kept_tracker if isinstance(kept_tracker, StartupTracker) else StartupTracker()
        if stats is not None and stats.ok:
            completed = sum(stats.completed.get(q, 0) for q in self.spec.queues)
            # The poll's own time (the poller's clock): a poll read twice is one sample, not two.
            estimator = estimator.observe(Sample(stats.at, available, active, completed))
        tracker = tracker.observe(now, ready, current)
        memory.set_wait_state(self.key, estimator, tracker)
        return estimator, tracker

    def pause(self, current: int, history: History, now: float) -> _Pause:
        """The pause annotations now. An unreadable one is reported and left out: autoscaling goes on
        unless a readable one pauses it."""
        parsed = parse_pause_annotations((self.obj.get("metadata") or {}).get("annotations"))
        outcome = pause_decision(
            current,
            history,
            now,
            paused=parsed.paused,
            until=parsed.until.timestamp() if parsed.until else None,
            replicas=parsed.replicas,
        )
        return _Pause(outcome, parsed.error)

    def fallback(
        self, stats: PollResult | None, current: int, scaling: WorkerScaling, history: History, now: float
    ) -> Decision | None:
        """The fallback decision when the stats have failed more than failureThreshold polls in a row and
        a fallback is set; None otherwise (missing data then holds the replicas)."""
        fb = self.spec.auto_scaling.fallback
        if fb is None or stats is None or stats.ok:
            return None
        return fallback_decision(
            current,
            scaling,
            history,
            now,
            consecutive_failures=stats.consecutive_failures,
            failure_threshold=fb.failure_threshold,
            replicas=fb.replicas,
            behavior=fb.behavior,
        )

    def explain(
        self,
        decision: Decision,
        reason: str,
        message: str,
        ok: bool,
        estimator: Estimator,
        tracker: StartupTracker,
        available: int,
        active: int,
    ) -> None:
        """status.autoscaling and the input gauges from this decision; an event when the reason changed
        since the last decision (not on every poll)."""
        wait_time = self.spec.auto_scaling.metric == "waitTime"
        estimate = estimator.estimate() if wait_time and ok else None
        latency = tracker.latency if wait_time else None
        block = autoscaling_status(
            self.spec.auto_scaling.metric,
            replace(decision, reason=reason, message=message),
            available=available if ok else None,
            active=active if ok else None,
            estimate=estimate,
            startup_latency=latency,
        )
        self.autoscaling = block
        metrics.worker_autoscaling_inputs(
            self.ns,
            self.name,
            {
                "depth": available if ok else None,
                "active": active if ok else None,
                "arrival_rate": estimate.arrival_rate if estimate else None,
                "throughput": estimate.throughput if estimate else None,
                "service_time": estimate.service_time if estimate else None,
                "estimated_wait": estimate.estimated_wait if estimate else None,
                "startup_latency": latency,
            },
        )
        before = self.reconciler.memory.note_reason(self.key, reason)
        if before is None:
            before = ((self.obj.get("status") or {}).get("autoscaling") or {}).get("reason")
        # A move between routine reasons (a scaling and the steady count after it) records no event: the
        # Scaled event tells each scaling (design.md §status-writes).
        if routine_reason(before) != routine_reason(reason):
            kind = WARNING if reason in ("Fallback", "StatsUnavailable") else NORMAL
            self.reconciler.recorder.event(self.obj, kind, f"Autoscaling{reason}", message[:1000])

    def drain(
        self, current: int, desired: int, api_key: str | None, reason: str, message: str
    ) -> tuple[int, str, str]:
        """Remove idle pods first (design.md §drain): rank the pods by the live OJS workers matched to them,
        set deletion costs, quiet the idle victims in the background, shrink by the pods that may go."""
        cache = self.reconciler.pod_cache()
        if cache is None:
            self.children.requeue_within(1.0)
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
            self.reconciler.options.url_template,
            self.cluster_obj["metadata"]["name"],
            self.ns,
            cluster_domain=self.reconciler.options.cluster_domain,
        )
        try:
            workers = mark_silent(self.reconciler.ojs.workers(url, api_key), time.time())
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
                f"{message}; {unmatched_message(self.grace_seconds(), live_workers)}",
            )
        by_name = {p["metadata"]["name"]: p for p in pods}
        for pod, cost in plan.deletion_costs.items():
            live = by_name.get(pod)
            have = ((live or {}).get("metadata") or {}).get("annotations", {}).get(DELETION_COST)
            if live is not None and have != str(cost):
                try:
                    self.reconciler.client.patch(
                        PODS, pod, {"metadata": {"annotations": {DELETION_COST: str(cost)}}}, self.ns
                    )
                except ApiError as e:
                    log.warning("could not set pod deletion cost", pod=pod, status=e.status)
        if plan.quiet:
            # Fire and forget: the removal does not depend on it (servers pass quiet on as a heartbeat
            # directive, which the SDKs do not read today), and a slow server must not hold this thread.
            self.reconciler.quiet.send(url, api_key, plan.quiet)
        self.draining = plan.draining
        if plan.draining:
            self.children.requeue_within(5.0)
            return (
                plan.replicas,
                "Draining",
                f"removing idle workers first; busy workers finish their jobs "
                f"({plan.replicas} now, {desired} wanted)",
            )
        return plan.replicas, reason, message

    def grace_seconds(self) -> int:
        """The worker pods' terminationGracePeriodSeconds."""
        return worker_builders.termination_grace_seconds(self.worker)

    def matching_condition(self, plan: DrainPlan, pods: int, live: int) -> JSON:
        """WorkersMatched: whether the drain could tie pods to live OJS workers, kept between drains."""
        if plan.unmatched:
            return condition(
                WORKERS_MATCHED,
                False,
                UNMATCHED_REASON,
                unmatched_message(self.grace_seconds(), live),
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
        autoscaling = self.spec.auto_scaling
        if not (
            self.spec.graceful_shutdown.drain_before_shutdown
            and autoscaling.enabled
            and autoscaling.metric in OPERATOR_METRICS
        ):
            self.reconciler.memory.drop_matching(self.key)
            return None
        last = self.reconciler.memory.matching(self.key, self.matching)
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
        return self.reconciler.foreign_writers.condition(
            self.obj,
            self.replica_writer,
            deployment=self.dep_name,
            instead=(
                f"Scale the OJSWorker instead (its scale subresource: kubectl scale ojsw {self.name}, an HPA "
                f"with scaleTargetRef kind OJSWorker name {self.name}, or spec.autoScaling)"
            ),
            generation=self.generation,
        )

    # ------------------------------------------------------------------ status
    def status(self, dep: JSON | None, stats: PollResult | None) -> float | None:
        """Write the status :func:`worker_status` derives from this reconcile; returns the seconds the
        status of a scaling is held for its rollout's end (:func:`scaling_status_hold`), else None."""
        bounds = self.spec.auto_scaling
        memory = self.reconciler.memory
        deferred_at = memory.deferred_status_since(self.key)
        previous = self.obj.get("status") or {}
        result = worker_status(
            WorkerStatusInputs(
                cluster_name=self.cluster_obj["metadata"]["name"],
                generation=self.generation,
                previous=previous,
                deployment=dep,
                deployment_name=self.dep_name,
                selector=worker_builders.worker_selector_string(self.worker),
                autoscaling_enabled=bounds.enabled,
                metric=bounds.metric,
                cpu_utilization=bounds.cpu_utilization,
                spec_replicas=self.spec.replicas,
                spec_sets_replicas="replicas" in (self.obj.get("spec") or {}),
                matching=self.matching_status(),
                replicas_managed=self.replicas_condition(),
                scaling=self.scaling_cond,
                scaled=self.scaled_at is not None or deferred_at is not None,
                draining=self.draining,
                desired=self.desired,
                queue_load=self.load(stats) if stats is not None and stats.ok else None,
                # Remembered in memory too: the cached object may not show our last status write yet,
                # and an apply without the field would remove it.
                last_scale=self.reconciler.memory.note_scale(self.key, self.scaled_at),
                autoscaling=self.autoscaling,
                problems=tuple(self.children.problems),
                conflicts=tuple(self.children.conflicts),
            )
        )
        held = scaling_status_hold(
            deferred_at,
            time.monotonic(),
            result,
            previous,
            self.generation,
            self.reconciler.manager.options.status_min_interval,
        )
        if held is not None:
            return held
        memory.take_deferred_status(self.key)
        # A name conflict's Warning event comes from ConflictEvents (naming the objects), once per conflict.
        self.reconciler.status.finish(self.obj, result, self.children)
        return None


@dataclass(frozen=True)
class _Pause:
    """The pause annotations' meaning now, with the error of an unreadable one."""

    outcome: PauseOutcome
    error: str | None

    @property
    def paused(self) -> bool:
        """Whether the pause holds the replicas now."""
        return self.outcome.paused


_METRIC_DEFAULT = WorkerAutoScaling.model_fields["metric"].default
_ENABLED_DEFAULT = WorkerAutoScaling.model_fields["enabled"].default


def autoscales_on_polls(worker: JSON) -> bool:
    """Whether the operator scales this worker on the polled counts (queueDepth or waitTime), read from
    the cached object with the API model's defaults."""
    auto = (worker.get("spec") or {}).get("autoScaling") or {}
    if not isinstance(auto, dict):
        return False
    return (
        auto.get("enabled", _ENABLED_DEFAULT) is True
        and auto.get("metric", _METRIC_DEFAULT) in OPERATOR_METRICS
    )


_QUEUES_DEFAULT: list[str] = OJSWorkerSpec.model_fields["queues"].get_default(call_default_factory=True)


def poll_is_news(worker: JSON, prev: PollResult | None, result: PollResult) -> bool:
    """Whether a cluster's new poll outcome changes anything this worker reads (design.md §resync): the
    counts of its own queues, and for a worker the operator scales on the counts, also the poll's success
    or failure and its queues' completed counters (wait-time rates). A cluster's ten workers on ten queues
    are then not all woken when one queue moves."""
    spec = worker.get("spec") or {}
    queues = spec.get("queues") or _QUEUES_DEFAULT
    if not isinstance(queues, list):
        return True
    if prev is None:
        return result.ok or autoscales_on_polls(worker)
    own_counts_changed = any(prev.queues.get(q) != result.queues.get(q) for q in queues)
    if not autoscales_on_polls(worker):
        # Its status shows its queues' numbers from a good poll and keeps them through failed ones.
        return result.ok and (not prev.ok or own_counts_changed)
    if prev.error != result.error or own_counts_changed:
        return True
    return any(prev.completed.get(q) != result.completed.get(q) for q in queues)


def _workers_of_hpa(hpa: JSON) -> Iterable[Request]:
    """The worker whose Deployment an HPA targets."""
    return owner_of_hpa(hpa, worker_builders.worker_of_deployment_name)


def _ranks_ready(pod: JSON) -> bool:
    """Whether the ReplicaSet controller would weigh this pod's deletion cost against the others': it
    first removes pods that are unscheduled, not Running or not Ready, whatever their cost."""
    status = pod.get("status") or {}
    if not (pod.get("spec") or {}).get("nodeName") or status.get("phase") != "Running":
        return False
    ready = get_condition(status.get("conditions"), "Ready")
    return ready is not None and ready.get("status") == "True"
