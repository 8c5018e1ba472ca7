"""Connection to the API server the way kubectl plugins do it: ``--kubeconfig`` (else ``$KUBECONFIG``, else
``~/.kube/config``, else the in-cluster service account), ``--context``, and the namespace from ``-n`` or
the context."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ojsctrl.api.common import GROUP, VERSION
from ojsctrl.runtime.client import Client, ClientOptions, Resource

OJSCLUSTERS = Resource(GROUP, VERSION, "ojsclusters", "OJSCluster")
OJSWORKERS = Resource(GROUP, VERSION, "ojsworkers", "OJSWorker")
SERVICEMONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
VALIDATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)
USER_AGENT = "kubectl-ojs"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConfigError(Exception):
    """The kubeconfig cannot be used (missing file, unknown context)."""


@dataclass
class Connection:
    """A client, its REST configuration (for the few calls that are not JSON: pod logs) and the
    namespace a command uses when ``-n`` is not given."""

    client: Client
    configuration: Any
    namespace: str
    context: str | None


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Connection:
    """Load the configuration as kubectl would and return a connection.

    The namespace is ``namespace`` when given, else the one of the context in use, else ``default``
    (in a pod: the pod's own namespace)."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    cfg = k8s_client.Configuration()
    in_cluster = kubeconfig is None and not os.environ.get("KUBECONFIG") and _in_cluster()
    current: str | None = context
    default_ns = "default"
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            if IN_CLUSTER_NAMESPACE.exists():
                default_ns = IN_CLUSTER_NAMESPACE.read_text().strip() or default_ns
        else:
            # $KUBECONFIG is read now, not when the kubernetes package was imported (it may list several
            # files; the package merges them as kubectl does).
            kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = active
            if context is not None:
                chosen = next((c for c in contexts or [] if c.get("name") == context), None)
                if chosen is None:
                    names = ", ".join(sorted(str(c.get("name")) for c in contexts or [])) or "none"
                    raise ConfigError(f"--context: no context {context!r} in the kubeconfig (have: {names})")
            if chosen:
                current = str(chosen.get("name"))
                default_ns = str((chosen.get("context") or {}).get("namespace") or default_ns)
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg, persist_config=False
            )
    except ConfigException as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ConfigError(f"cannot load the kubeconfig ({where}): {e}") from e
    except OSError as e:
        raise ConfigError(f"cannot read the kubeconfig: {e}") from e
    client = Client(cfg, ClientOptions(qps=20.0, burst=40, user_agent=USER_AGENT, pool_size=8, max_retries=2))
    return Connection(client, cfg, namespace or default_ns, current)


def _in_cluster() -> bool:
    default = Path(os.path.expanduser("~/.kube/config"))
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not default.exists()


def pod_log(conn: Connection, namespace: str, pod: str, container: str, tail_lines: int) -> str:
    """The last ``tail_lines`` lines a container wrote, through the API server (``kubectl logs``)."""
    from kubernetes import client as k8s_client

    api = k8s_client.CoreV1Api(k8s_client.ApiClient(conn.configuration))
    resp = api.read_namespaced_pod_log(
        pod,
        namespace,
        container=container,
        tail_lines=tail_lines,
        _preload_content=False,
        _request_timeout=30,
    )
    data = bytes(getattr(resp, "data", b"") or b"")
    return data.decode("utf-8", errors="replace")
