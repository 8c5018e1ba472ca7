"""Wires the operator's reconcilers, the queue-stats poller and the event recorder into a Manager."""

from __future__ import annotations

import argparse
import dataclasses
import socket

from ojsctrl import __version__
from ojsctrl.controllers import cluster, metrics, worker
from ojsctrl.controllers.stats import StatsPoller
from ojsctrl.ojs.client import OJSClient, validate_url_template
from ojsctrl.runtime.events import EventRecorder
from ojsctrl.runtime.manager import Manager, Runnable


def setup_controllers(manager: Manager, args: argparse.Namespace) -> None:
    """Register the reconcilers, the queue-stats poller, the OJS client and the event recorder (the
    webhooks are wired next to them by ``ojsctrl.app``). Raises ValueError on a bad flag value."""
    validate_url_template(args.ojs_url_template)
    ojs = OJSClient(user_agent=f"ojsctrl/{__version__}")

    def fetch(url: str, api_key: str | None) -> dict[str, tuple[int, int, int]]:
        stats = ojs.queue_stats(url, api_key)
        return {q.name: (q.available, q.active, q.completed) for q in stats.queues}

    # Events have a rate limiter of their own (same qps and burst), as controller-runtime's recorder has
    # its own clientset: an event never takes a token a reconcile's write waits for.
    events_client = manager.client.derive(dataclasses.replace(manager.client.options, pool_size=4))
    recorder = EventRecorder(events_client, "ojsctrl", host=socket.gethostname())
    # One poll per cluster and interval, shared by the cluster reconciler and all of its workers.
    poller = StatsPoller(fetch)
    clusters = cluster.ClusterReconciler(
        manager,
        cluster.ClusterOptions(
            server_image=args.server_image,
            url_template=args.ojs_url_template,
            max_concurrent_reconciles=args.max_concurrent_reconciles,
            cluster_domain=args.cluster_domain,
        ),
        poller,
        recorder,
    )
    clusters.setup()
    worker.WorkerReconciler(
        manager,
        worker.WorkerOptions(
            url_template=args.ojs_url_template,
            max_concurrent_reconciles=args.max_concurrent_reconciles,
            cluster_domain=args.cluster_domain,
        ),
        poller,
        recorder,
        ojs,
        clusters,
    ).setup()
    metrics.count_failed_polls(poller.failure_counts)
    manager.add_runnable(Runnable("ojs-stats-poller", poller.start, poller.stop, needs_leader=True))
    manager.add_runnable(Runnable("ojs-client", lambda: None, ojs.close, needs_leader=False))
    manager.add_runnable(Runnable("event-sender", recorder.start, recorder.stop, needs_leader=True))
