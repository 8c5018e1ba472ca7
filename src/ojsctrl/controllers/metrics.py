"""The operator's OJS metrics (next to the controller-runtime ones in the same registry).

Label values that come from outside are bounded (SPEC §9.13): queue names are chosen by whoever enqueues
jobs on a tenant's OJS server, so at most :data:`MAX_QUEUE_SERIES` queues per cluster become series, each
name at most :data:`MAX_LABEL_LENGTH` characters, and a queue that left the busiest set loses its series
on the next poll. Every series of a cluster or worker goes when the object is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import Counter, Gauge

from ojsctrl.runtime.metrics import REGISTRY

MAX_QUEUE_SERIES: Final = 20
MAX_LABEL_LENGTH: Final = 64

QUEUE_DEPTH = Gauge(
    "ojs_cluster_queue_depth",
    "Jobs waiting (available) per cluster and queue (the 20 busiest queues of each cluster).",
    ["namespace", "cluster", "queue"],
    registry=REGISTRY,
)
ACTIVE_JOBS = Gauge(
    "ojs_cluster_active_jobs",
    "Jobs being processed per cluster and queue (the 20 busiest queues of each cluster).",
    ["namespace", "cluster", "queue"],
    registry=REGISTRY,
)
WORKER_DESIRED = Gauge(
    "ojs_worker_desired_replicas",
    "Replicas the autoscaler wants for a worker.",
    ["namespace", "worker"],
    registry=REGISTRY,
)
SCALE_TOTAL = Counter(
    "ojs_autoscaler_scale_total",
    "Scaling decisions carried out, by object (kind OJSCluster or OJSWorker) and direction.",
    ["namespace", "kind", "name", "direction"],
    registry=REGISTRY,
)
STATS_ERRORS = Counter(
    "ojs_queue_stats_errors_total",
    "Failed polls of an OJS server's queue counts.",
    ["namespace", "cluster"],
    registry=REGISTRY,
)

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


def scaled(namespace: str, kind: str, name: str, direction: str) -> None:
    """Count one scaling decision carried out on an OJSCluster's servers or an OJSWorker's pods."""
    SCALE_TOTAL.labels(namespace, kind, name, direction).inc()


def forget_cluster(namespace: str, cluster: str) -> None:
    """Drop every series of a deleted OJSCluster so /metrics does not grow with churn."""
    QUEUE_SERIES.forget(namespace, cluster)
    with contextlib.suppress(KeyError):
        STATS_ERRORS.remove(namespace, cluster)
    _forget_scales(namespace, "OJSCluster", cluster)


def forget_worker(namespace: str, worker: str) -> None:
    """Drop every series of a deleted OJSWorker."""
    with contextlib.suppress(KeyError):
        WORKER_DESIRED.remove(namespace, worker)
    _forget_scales(namespace, "OJSWorker", worker)


def _forget_scales(namespace: str, kind: str, name: str) -> None:
    for direction in _DIRECTIONS:
        with contextlib.suppress(KeyError):
            SCALE_TOTAL.remove(namespace, kind, name, direction)
