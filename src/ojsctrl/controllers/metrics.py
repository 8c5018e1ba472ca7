"""The operator's OJS metrics (next to the controller-runtime ones in the same registry)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

from ojsctrl.runtime.metrics import REGISTRY

QUEUE_DEPTH = Gauge(
    "ojs_cluster_queue_depth",
    "Jobs waiting (available) per cluster and queue.",
    ["namespace", "cluster", "queue"],
    registry=REGISTRY,
)
ACTIVE_JOBS = Gauge(
    "ojs_cluster_active_jobs",
    "Jobs being processed per cluster and queue.",
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
    "Scaling decisions carried out, by direction.",
    ["direction"],
    registry=REGISTRY,
)
STATS_ERRORS = Counter(
    "ojs_queue_stats_errors_total",
    "Failed polls of an OJS server's queue counts.",
    ["namespace", "cluster"],
    registry=REGISTRY,
)


def forget_cluster(namespace: str, cluster: str, queues: list[str]) -> None:
    """Drop a deleted cluster's series so /metrics does not grow without bound."""
    for q in queues:
        for g in (QUEUE_DEPTH, ACTIVE_JOBS):
            with contextlib.suppress(KeyError):
                g.remove(namespace, cluster, q)
