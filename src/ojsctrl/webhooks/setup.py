"""Wires the admission webhooks into a Manager: the HTTPS server and, in self-managed mode, the certificates.

Both run on every replica (not only the leader): the API server may call any of them through the Service.
Readiness (`/readyz`, check `webhook`) passes once the server answers TLS with a loaded certificate.
"""

from __future__ import annotations

import argparse
import os
import sys
import weakref

import structlog

from ojsctrl.runtime.certs import CertConfig, SelfManagedCertificates
from ojsctrl.runtime.manager import Manager, Runnable
from ojsctrl.runtime.webhook import WebhookServer
from ojsctrl.webhooks import CLUSTER_PATH, GROUP, WORKER_PATH
from ojsctrl.webhooks.handlers import OJSCLUSTERS, ClusterValidator, InformerClusterLookup, WorkerValidator

log = structlog.get_logger("ojsctrl.webhooks")

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
FALLBACK_NAMESPACE = "ojs-system"
LABELS = {
    "app.kubernetes.io/name": "ojs-operator",
    "app.kubernetes.io/component": "webhook",
    "app.kubernetes.io/managed-by": "ojsctrl",
}
_registered: weakref.WeakKeyDictionary[Manager, WebhookServer] = weakref.WeakKeyDictionary()


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def operator_namespace() -> str:
    """The pod's namespace in a cluster (service-account file or POD_NAMESPACE), else ojs-system."""
    try:
        with open(SA_NAMESPACE_FILE) as f:
            ns = f.read().strip()
            if ns:
                return ns
    except OSError:
        pass
    return os.environ.get("POD_NAMESPACE") or FALLBACK_NAMESPACE


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server may use for the webhook Service (it dials <service>.<namespace>.svc)."""
    return (
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
        "localhost",
    )


def setup_webhooks(manager: Manager, args: argparse.Namespace) -> WebhookServer | None:
    """Register the webhook server (and the self-managed certificates) when ``--enable-webhooks`` is set.

    Idempotent per manager: a second call returns the server registered by the first.
    """
    existing = _registered.get(manager)
    # getattr: safe to call from a setup whose parser lacks the webhook flags (then webhooks are off).
    if existing is not None or not getattr(args, "enable_webhooks", False):
        return existing
    host = args.webhook_host or ("0.0.0.0" if in_cluster() else "127.0.0.1")  # noqa: S104 - in-cluster default
    cert_dir = args.webhook_cert_dir
    clusters = manager.informers.informer(OJSCLUSTERS)
    lookup = InformerClusterLookup(manager.client, clusters, manager.options.namespaces)
    server = WebhookServer(
        host,
        args.webhook_port,
        cert_file=os.path.join(cert_dir, "tls.crt"),
        key_file=os.path.join(cert_dir, "tls.key"),
        handlers={CLUSTER_PATH: ClusterValidator(), WORKER_PATH: WorkerValidator(lookup)},
    )
    if args.webhook_cert_mode == "self-managed":
        namespace = args.webhook_service_namespace or operator_namespace()
        cfg = CertConfig(
            namespace=namespace,
            secret_name=args.webhook_cert_secret,
            dns_names=service_dns_names(args.webhook_service_name, namespace),
            ip_addresses=("127.0.0.1",),
            validity=args.webhook_cert_validity,
            webhook_configs=(args.webhook_config_name,) if args.webhook_config_name else (),
            ca_name="ojs-operator-webhook-ca",
            annotation_prefix=GROUP,
            labels=LABELS,
        )
        certs = SelfManagedCertificates(manager.client, cfg, cert_dir, on_change=server.reload)
        manager.add_runnable(Runnable("webhook-certificates", certs.start, certs.stop, needs_leader=False))
        log.info(
            "self-managed webhook certificates",
            secret=f"{namespace}/{cfg.secret_name}",
            webhook_configuration=args.webhook_config_name or None,
            validity_seconds=cfg.validity.total_seconds(),
        )

    def start() -> None:
        try:
            server.start()
        except OSError as e:
            log.error(
                "cannot serve the admission webhooks", address=f"{host}:{args.webhook_port}", error=str(e)
            )
            sys.exit(1)

    def stop() -> None:
        server.stop()
        lookup.close()

    manager.add_runnable(Runnable("webhook-server", start, stop, needs_leader=False))
    manager.add_readyz_check("webhook", server.ready)
    _registered[manager] = server
    return server
