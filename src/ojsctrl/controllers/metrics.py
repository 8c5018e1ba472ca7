"""The operator's OJS metrics (next to the controller-runtime ones in the same registry).

Label values that come from outside are bounded (design.md §bounded-labels): queue names are chosen by whoever
enqueues jobs on a tenant's OJS server, so at most :data:`MAX_QUEUE_SERIES` queues per cluster become series,
each name at most :data:`MAX_LABEL_LENGTH` characters, and a queue that left the busiest set loses its series
on the next poll. Every series of a cluster or worker goes when the object is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ojsctrl.runtime.metrics import REGISTRY

MAX_QUEUE_SERIES: Final = 20
MAX_LABEL_LENGTH: Final = 64

# Label sets shared by several series.
BY_QUEUE: Final = ("namespace", "cluster", "queue")
BY_CLUSTER: Final = ("namespace", "cluster")
BY_WORKER: Final = ("namespace", "worker")


def _gauge(name: str, documentation: str, labels: tuple[str, ...]) -> Gauge:
    """A gauge of the operator's registry."""
    return Gauge(name, documentation, labels, registry=REGISTRY)


def _counter(name: str, documentation: str, labels: tuple[str, ...]) -> Counter:
    """A counter of the operator's registry."""
    return Counter(name, documentation, labels, registry=REGISTRY)


STATUS_WRITES = _counter(
    "ojsctrl_status_writes_total",
    "Status writes by kind, once for each part of the status a write changed: a top-level field, or a "
    "condition as conditions.<type> (a write that changes several parts counts for each).",
    ("kind", "part"),
)


def status_written(kind: str, parts: Iterable[str]) -> None:
    """Count a status write by the parts it changed (:func:`changed_parts`). The parts come from the
    status the reconcilers build: its fields and condition types are a fixed set, so the label values
    are bounded."""
    for part in parts:
        STATUS_WRITES.labels(kind, part).inc()


def changed_parts(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """The parts of the status a write of ``desired`` over ``live`` changes: top-level fields, and each
    condition whose status, reason, message or observedGeneration differs (its transition time aside)."""
    parts: list[str] = []
    for key in sorted(desired):
        if desired[key] == live.get(key):
            continue
        if key != "conditions":
            parts.append(key)
            continue
        before = {c.get("type"): c for c in live.get("conditions") or () if isinstance(c, dict)}
        for cond in desired[key] or ():
            old = before.get(cond.get("type")) or {}
            if any(cond.get(f) != old.get(f) for f in ("status", "reason", "message", "observedGeneration")):
                parts.append(f"conditions.{cond.get('type')}")
    return parts


QUEUE_DEPTH = _gauge(
    "ojs_cluster_queue_depth",
    "Jobs waiting (available) per cluster and queue (the 20 busiest queues of each cluster).",
    BY_QUEUE,
)
ACTIVE_JOBS = _gauge(
    "ojs_cluster_active_jobs",
    "Jobs being processed per cluster and queue (the 20 busiest queues of each cluster).",
    BY_QUEUE,
)
WORKER_DESIRED = _gauge(
    "ojs_worker_desired_replicas", "Replicas the autoscaler wants for a worker.", BY_WORKER
)
SCALE_TOTAL = _counter(
    "ojs_autoscaler_scale_total",
    "Scaling decisions carried out, by object (kind OJSCluster or OJSWorker) and direction.",
    ("namespace", "kind", "name", "direction"),
)


class _FailedPolls:
    """``ojs_queue_stats_errors_total{namespace, cluster}``: the failed polls the stats poller counted for
    each cluster it polls, read from the poller at scrape time (a cluster's count, and its series, go
    when the poller drops the cluster: deleted, or its Service or key not its own). Clusters with no
    failed poll have no series."""

    name = "ojs_queue_stats_errors_total"  # exposed as the _total counter samples
    documentation = "Failed polls of an OJS server's queue counts."

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, int]]] | None = None
        REGISTRY.register(self)

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=BY_CLUSTER)]

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=BY_CLUSTER)
        source = self.source
        for key, failed in source() if source is not None else ():
            namespace, _, cluster = key.partition("/")
            if failed:
                family.add_metric((namespace, cluster), float(failed))
        return [family]


_FAILED_POLLS = _FailedPolls()


def count_failed_polls(source: Callable[[], Iterable[tuple[str, int]]]) -> None:
    """Publish the failed polls ``source`` returns as (``namespace/cluster``, count) pairs."""
    _FAILED_POLLS.source = source


_DIRECTIONS: Final = ("up", "down")


def queue_label(name: str) -> str:
    """A queue name as a label value: unchanged when short, else cut with a hash of the whole name so two
    long names that share a prefix stay two series."""
    if len(name) <= MAX_LABEL_LENGTH:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[: MAX_LABEL_LENGTH - 9]}~{digest}"


class _QueueSeries:
    """Which queue label values each cluster has published, so the ones that left can be removed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: dict[tuple[str, str], frozenset[str]] = {}

    def publish(self, namespace: str, cluster: str, queues: Iterable[Mapping[str, Any]]) -> None:
        """Set the gauges of at most :data:`MAX_QUEUE_SERIES` queues (``queues`` come busiest first, as
        ``top_queues`` orders them) and remove the series of every queue published before but not now."""
        values: dict[str, tuple[int, int]] = {}
        for q in queues:
            if len(values) >= MAX_QUEUE_SERIES:
                break
            values.setdefault(queue_label(str(q["name"])), (int(q["available"]), int(q["active"])))
        key = (namespace, cluster)
        with self._lock:
            for gone in self._published.get(key, frozenset()) - values.keys():
                _remove_queue(namespace, cluster, gone)
            for label, (available, active) in values.items():
                QUEUE_DEPTH.labels(namespace, cluster, label).set(available)
                ACTIVE_JOBS.labels(namespace, cluster, label).set(active)
            self._published[key] = frozenset(values)

    def forget(self, namespace: str, cluster: str) -> None:
        """Remove every queue series of a deleted cluster."""
        with self._lock:
            for label in self._published.pop((namespace, cluster), frozenset()):
                _remove_queue(namespace, cluster, label)

    def size(self) -> int:
        """Queue series published in all (for tests and debugging)."""
        with self._lock:
            return sum(len(v) for v in self._published.values())


def _remove_queue(namespace: str, cluster: str, label: str) -> None:
    for gauge in (QUEUE_DEPTH, ACTIVE_JOBS):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, cluster, label)


QUEUE_SERIES = _QueueSeries()


def publish_queues(namespace: str, cluster: str, queues: Iterable[Mapping[str, Any]]) -> None:
    """The queue gauges of one cluster after a successful poll (see :class:`_QueueSeries`)."""
    QUEUE_SERIES.publish(namespace, cluster, queues)
    _stats_read(namespace, cluster)


DECISION_LATENCY = Histogram(
    "ojs_autoscaler_decision_latency_seconds",
    "From the first poll that showed the counts calling for a new replica count (a scale-down: plus its "
    "scaleDownDelay) to that count written to the Deployment (the wait in the workqueue plus the "
    "reconcile), by kind.",
    ("kind",),
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)


def decision_written(kind: str, polled_at: float, now: float) -> None:
    """Observe the time from when a scaling decision was due (``polled_at``: the first poll showing the
    counts that call for it) to the write that carried it out."""
    DECISION_LATENCY.labels(kind).observe(max(0.0, now - polled_at))


def scaled(namespace: str, kind: str, name: str, direction: str) -> None:
    """Count one scaling decision carried out on an OJSCluster's servers or an OJSWorker's pods."""
    SCALE_TOTAL.labels(namespace, kind, name, direction).inc()


def forget_cluster(namespace: str, cluster: str) -> None:
    """Drop every series of a deleted OJSCluster so /metrics does not grow with churn."""
    QUEUE_SERIES.forget(namespace, cluster)
    _forget_scales(namespace, "OJSCluster", cluster)
    _forget_alert_series("OJSCluster", namespace, cluster)


def forget_worker(namespace: str, worker: str) -> None:
    """Drop every series of a deleted OJSWorker."""
    with contextlib.suppress(KeyError):
        WORKER_DESIRED.remove(namespace, worker)
    forget_worker_autoscaling_inputs(namespace, worker)
    _forget_scales(namespace, "OJSWorker", worker)
    _forget_alert_series("OJSWorker", namespace, worker)


def _forget_scales(namespace: str, kind: str, name: str) -> None:
    for direction in _DIRECTIONS:
        with contextlib.suppress(KeyError):
            SCALE_TOTAL.remove(namespace, kind, name, direction)


class _PhaseSeries:
    """The one phase series of each object (``name{namespace, <kind>, phase} 1``): setting a new phase
    replaces the old one, so a query on ``phase="Degraded"`` sees only objects in that phase now.

    A collector that renders the series from one dict at scrape time, not a gauge with a child per
    object: a gauge child (its value, its lock, its label tuple) costs several hundred bytes per object,
    and a phase is set on every status write."""

    def __init__(self, name: str, documentation: str, kind_label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = ("namespace", kind_label, "phase")
        self._lock = threading.Lock()
        self._phase: dict[tuple[str, str], str] = {}
        REGISTRY.register(self)

    def set(self, namespace: str, name: str, phase: str) -> None:
        with self._lock:
            self._phase[(namespace, name)] = phase

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phase.pop((namespace, name), None)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            held = list(self._phase.items())
        for (namespace, name), phase in held:
            family.add_metric((namespace, name, phase), 1.0)
        return [family]


# --- series the shipped alerts read (deploy/prometheus; docs/runbooks) -------------------------------------

_CLUSTER_PHASES = _PhaseSeries(
    "ojs_cluster_phase",
    "1 for the phase an OJSCluster's status shows now (one series per cluster).",
    "cluster",
)
_WORKER_PHASES = _PhaseSeries(
    "ojs_worker_phase",
    "1 for the phase an OJSWorker's status shows now (one series per worker).",
    "worker",
)
WORKER_MAX = _gauge("ojs_worker_max_replicas", "The autoscaler's maxReplicas for a worker.", BY_WORKER)
WORKER_BACKLOG = _gauge(
    "ojs_worker_queue_backlog",
    "Jobs waiting (available) on the queues a worker consumes, as its autoscaler last read them.",
    BY_WORKER,
)
STATS_LAST_SUCCESS = _gauge(
    "ojs_queue_stats_last_success_timestamp_seconds",
    "When (Unix time) the operator last read an OJS server's queue counts.",
    BY_CLUSTER,
)


def cluster_phase(namespace: str, cluster: str, phase: str) -> None:
    """Publish the phase an OJSCluster's status was just given."""
    _CLUSTER_PHASES.set(namespace, cluster, phase)


def worker_phase(namespace: str, worker: str, phase: str) -> None:
    """Publish the phase an OJSWorker's status was just given."""
    _WORKER_PHASES.set(namespace, worker, phase)


def worker_scaling(namespace: str, worker: str, backlog: int, max_replicas: int) -> None:
    """The autoscaler's view of a worker next to ``ojs_worker_desired_replicas``: its queues' backlog and
    its ceiling, so an alert can tell "at maxReplicas and still falling behind"."""
    WORKER_BACKLOG.labels(namespace, worker).set(backlog)
    WORKER_MAX.labels(namespace, worker).set(max_replicas)


def _stats_read(namespace: str, cluster: str) -> None:
    STATS_LAST_SUCCESS.labels(namespace, cluster).set_to_current_time()


def _forget_alert_series(kind: str, namespace: str, name: str) -> None:
    if kind == "OJSCluster":
        _CLUSTER_PHASES.forget(namespace, name)
        with contextlib.suppress(KeyError):
            STATS_LAST_SUCCESS.remove(namespace, name)
        return
    _WORKER_PHASES.forget(namespace, name)
    for gauge in (WORKER_MAX, WORKER_BACKLOG):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


# --- the autoscaler's inputs (status.autoscaling.inputs as series) ----------------------------------------

AUTOSCALING_INPUTS: Final = (
    "depth",
    "active",
    "arrival_rate",
    "throughput",
    "service_time",
    "estimated_wait",
    "startup_latency",
)
"""The ``input`` label's values: a fixed set, so each worker has at most this many series."""

WORKER_AUTOSCALING_INPUT = _gauge(
    "ojs_worker_autoscaling_input",
    "What the worker autoscaler's last decision was computed from: depth and active in jobs, arrival_rate "
    "and throughput in jobs per second, service_time, estimated_wait and startup_latency in seconds. An "
    "input the decision did not use or could not measure has no series.",
    (
        "namespace",
        "worker",
        "input",
    ),
)


# (namespace, worker) -> the input names that have a series: a worker with nothing published (autoscaling
# off, the common case) costs a dict lookup per reconcile, not a failed remove per input.
_published_inputs: dict[tuple[str, str], frozenset[str]] = {}
_published_lock = threading.Lock()


def worker_autoscaling_inputs(namespace: str, worker: str, inputs: Mapping[str, float | None]) -> None:
    """Publish the inputs of a worker's last autoscaling decision; an input that is None (or not named)
    loses its series, so a stale estimate never lingers next to a fresh one."""
    key = (namespace, worker)
    with _published_lock:
        before = _published_inputs.get(key, frozenset())
        values = {n: v for n in AUTOSCALING_INPUTS if (v := inputs.get(n)) is not None}
        now = frozenset(values)
        if now:
            _published_inputs[key] = now
        else:
            _published_inputs.pop(key, None)
        for name in before - now:
            with contextlib.suppress(KeyError):
                WORKER_AUTOSCALING_INPUT.remove(namespace, worker, name)
        for name, value in values.items():
            WORKER_AUTOSCALING_INPUT.labels(namespace, worker, name).set(value)


def forget_worker_autoscaling_inputs(namespace: str, worker: str) -> None:
    """Drop a worker's input series (deleted, or its autoscaling turned off)."""
    worker_autoscaling_inputs(namespace, worker, {})
