"""The manager: one process that owns the shared informers, the controllers, leader election and the
HTTP endpoints, and shuts all of them down in order.

Start-up: endpoints -> informers (every replica keeps a warm cache) -> wait for sync -> leader
election -> controllers and leader-only runnables.

Shutdown on SIGTERM/SIGINT: every controller stops handing out work at once (a backlog is left
behind), running reconciles get one shared deadline to finish, leader-only runnables stop, and the
lease is released only if no reconcile is still alive; otherwise it is left to expire, so a standby
cannot start while this process may still write. Then the informers and the endpoints stop.

Leadership: the elector has its own client (short timeouts, no retries), and workers take an item
only while `LeaderElector.is_leader` holds, which ends exactly at the renew deadline. Losing the
lease ends the process at once with exit code 1: threads cannot be cancelled, and a process that
keeps reconciling after another replica took over would fight it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from ojsctrl.runtime.client import Client, ClientOptions
from ojsctrl.runtime.controller import Controller
from ojsctrl.runtime.httpserver import (
    Check,
    Checks,
    EndpointServer,
    MetricsAuthorizer,
    parse_bind_address,
)
from ojsctrl.runtime.informer import InformerFactory
from ojsctrl.runtime.leaderelection import LeaderElector
from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.tls import ServingCertificate

log = structlog.get_logger("ojsctrl.manager")


@dataclass
class ManagerOptions:
    """How the manager runs; the CLI maps flags onto these."""

    metrics_bind_address: str = ":8080"
    health_probe_bind_address: str = ":8081"
    leader_elect: bool = False
    leader_election_id: str = "ojs-k8s-operator.openjobspec.dev"
    leader_election_namespace: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    namespaces: list[str] = field(default_factory=list)
    sync_period: float = 10 * 3600.0
    cache_sync_timeout: float = 120.0
    graceful_shutdown_timeout: float = 30.0
    watch_inactivity_timeout: float = 70.0
    informer_stall_timeout: float = 300.0
    # The least time between two status writes of one object that change only polled numbers (queue
    # counts); a change of phase, conditions or replicas is written at once. 0 writes every change.
    status_min_interval: float = 30.0
    identity: str = ""
    # HTTPS + TokenReview/SubjectAccessReview on /metrics; certificate from metrics_cert_dir or self-signed.
    metrics_secure: bool = False
    metrics_cert_dir: str = ""


@dataclass
class Runnable:
    """Something the manager starts and stops besides controllers (pollers, cert rotation...)."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], None]
    needs_leader: bool = True


def _default_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


class Manager:
    """Owns everything that runs in the operator process."""

    def __init__(
        self,
        client: Client,
        options: ManagerOptions | None = None,
        exit_on_lost_lease: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.options = options or ManagerOptions()
        self.informers = InformerFactory(
            client,
            namespaces=self.options.namespaces,
            resync_period=self.options.sync_period,
            inactivity_timeout=self.options.watch_inactivity_timeout,
        )
        self.controllers: list[Controller] = []
        self.runnables: list[Runnable] = []
        self.healthz = Checks()
        self.readyz = Checks()
        self.stop_event = threading.Event()
        self._leader_stop = threading.Event()
        self._leading_started = threading.Event()
        self._servers: list[EndpointServer] = []
        self._elector: LeaderElector | None = None
        self._elector_thread: threading.Thread | None = None
        self._synced = False
        self._exit: Callable[[int], None] = exit_on_lost_lease or os._exit
        self.identity = self.options.identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self.healthz.add("ping", lambda: None)
        self.healthz.add("informers", self._informers_healthy)
        self.readyz.add("ping", lambda: None)
        self.readyz.add("informers-synced", lambda: None if self._synced else "caches not synced yet")

    # ------------------------------------------------------------------ registration
    def add_controller(self, controller: Controller) -> None:
        """Run ``controller`` while this replica leads."""
        self.controllers.append(controller)

    def add_runnable(self, runnable: Runnable) -> None:
        """Run ``runnable`` with the manager (while leading, if it needs the lease)."""
        self.runnables.append(runnable)

    def add_healthz_check(self, name: str, check: Check) -> None:
        """Add a liveness check to /healthz."""
        self.healthz.add(name, check)

    def add_readyz_check(self, name: str, check: Check) -> None:
        """Add a readiness check to /readyz."""
        self.readyz.add(name, check)

    @property
    def is_leader(self) -> bool:
        """True while this replica may act as the leader (always once started without election)."""
        return self._leading_started.is_set() and self._leader_valid()

    def _leader_valid(self) -> bool:
        return self._elector is None or self._elector.is_leader

    def leader_election_client(self) -> Client:
        """The elector's own client: same server and credentials, its own connections and rate
        limiter, no retries, and timeouts well inside the renew deadline (as controller-runtime gives
        leader election a separate client), so a renewal never queues behind reconcile traffic."""
        o = self.options
        return self.client.derive(
            ClientOptions(
                qps=5.0,
                burst=10,
                user_agent=f"{self.client.options.user_agent}/leader-election",
                timeout=max(0.5, o.renew_deadline / 2),
                connect_timeout=max(0.5, min(5.0, o.renew_deadline / 2)),
                max_retries=0,
                pool_size=2,
                extra_headers=dict(self.client.options.extra_headers),
            )
        )

    # ------------------------------------------------------------------ checks
    def _informers_healthy(self) -> str | None:
        now = time.monotonic()
        problems = []
        for inf in self.informers.all():
            if not inf.alive():
                problems.append(f"{inf.name}: loop died")
            elif now - inf.last_progress() > self.options.informer_stall_timeout:
                problems.append(f"{inf.name}: no progress for {now - inf.last_progress():.0f}s")
        return "; ".join(problems) or None

    # ------------------------------------------------------------------ running
    def _start_servers(self) -> None:
        health = parse_bind_address(self.options.health_probe_bind_address)
        metrics = parse_bind_address(self.options.metrics_bind_address)
        if health is not None:
            srv = EndpointServer(health, healthz=self.healthz, readyz=self.readyz, name="health")
            srv.start()
            self._servers.append(srv)
            log.info("serving health probes", address=f"{srv.address[0]!s}:{srv.port}")
        if metrics is not None:
            if self.options.metrics_secure:
                cert = ServingCertificate(self.options.metrics_cert_dir)
                srv = EndpointServer(
                    metrics,
                    registry=REGISTRY,
                    name="metrics",
                    tls=cert.context,
                    authorizer=MetricsAuthorizer(self.client),
                )
            else:
                srv = EndpointServer(metrics, registry=REGISTRY, name="metrics")
            srv.start()
            self._servers.append(srv)
            log.info(
                "serving metrics",
                address=f"{srv.address[0]!s}:{srv.port}",
                secure=self.options.metrics_secure,
            )

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start a graceful shutdown; a second signal exits at once."""

        def handler(signum: int, _frame: object) -> None:
            if self.stop_event.is_set():
                log.warning("second signal; exiting now", signal=signum)
                self._exit(1)
            log.info("shutdown requested", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _start_leading(self) -> None:
        if self.stop_event.is_set():
            return
        for c in self.controllers:
            if self._elector is not None:
                c.leader_gate = self._leader_valid
            c.start()
        for r in self.runnables:
            if r.needs_leader:
                r.start()
        self._leading_started.set()

    def _lost_lease(self) -> None:
        if self.stop_event.is_set():
            return
        log.error("leader election lost; exiting so that no stale leader keeps writing")
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stderr.flush()
        self._exit(1)

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        try:
            self._start_servers()
        except OSError as e:
            log.error("cannot serve the manager's endpoints", error=str(e))
            return 1
        for r in self.runnables:
            if not r.needs_leader:
                r.start()
        self.informers.start()
        not_synced = self.informers.wait_for_sync(self.options.cache_sync_timeout)
        if self.stop_event.is_set():
            return self._shutdown()
        if not_synced:
            log.error(
                "timed out waiting for caches to sync",
                informers=not_synced,
                timeout=self.options.cache_sync_timeout,
            )
            self._shutdown()
            return 1
        self._synced = True
        log.info("caches synced", informers=len(self.informers.all()))

        if self.options.leader_elect:
            ns = self.options.leader_election_namespace or _default_namespace()
            self._elector = LeaderElector(
                self.leader_election_client(),
                namespace=ns,
                name=self.options.leader_election_id,
                identity=self.identity,
                lease_duration=self.options.lease_duration,
                renew_deadline=self.options.renew_deadline,
                retry_period=self.options.retry_period,
                on_started_leading=self._start_leading,
                on_stopped_leading=self._lost_lease,
            )
            log.info(
                "waiting for leadership",
                lease=f"{ns}/{self.options.leader_election_id}",
                identity=self.identity,
            )
            self._elector_thread = threading.Thread(
                target=self._elector.run, args=(self._leader_stop,), name="leader-election", daemon=True
            )
            self._elector_thread.start()
        else:
            self._start_leading()

        self.stop_event.wait()
        return self._shutdown()

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.options.graceful_shutdown_timeout
        log.info("shutting down: draining controllers")
        # Intake stops everywhere first, so every controller drains against the same deadline.
        for c in self.controllers:
            c.begin_stop()
        drained = True
        for c in self.controllers:
            drained = c.wait_stopped(deadline) and drained
        for r in self.runnables:
            try:
                r.stop()
            except Exception as e:
                log.warning("runnable failed to stop", runnable=r.name, error=str(e))
        if self._elector_thread is not None and self._elector is not None:
            self._leader_stop.set()
            self._elector_thread.join(max(1.0, deadline - time.monotonic()))
            if drained:
                self._elector.release(min(self.options.renew_deadline, max(1.0, deadline - time.monotonic())))
            else:
                log.warning(
                    "reconciles still running at shutdown; not releasing the lease (it expires)",
                    running={c.name: c.active() for c in self.controllers if c.active()},
                )
        self.informers.stop()
        for srv in self._servers:
            srv.stop()
        log.info("shutdown complete")
        return 0
