"""The operator's ServiceAccount in a plane: its RBAC from manifests/rbac and a kubeconfig holding a
token of it.

Running the whole e2e suite as the ServiceAccount (``OJSCTRL_E2E_AS_SA=1``): OperatorProcess passes
``--kubeconfig <admin>`` first and appends ``--kubeconfig <service_account_kubeconfig(plane)>``; the last
``--kubeconfig`` wins (plus the leader-election namespace ojs-system, where the Lease Role is).
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from tests.harness.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "ojs-system"
SERVICE_ACCOUNT = "ojs-operator-controller-manager"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def exists(plane: ControlPlane, *what: str) -> bool:
    """`kubectl get <what>` finds it."""
    return plane.kubectl("get", *what, check=False).returncode == 0


def service_account_token(plane: ControlPlane, namespace: str, name: str, *, seconds: int = 3600) -> str:
    """A token of that ServiceAccount from the TokenRequest API."""
    assert plane.client is not None
    answer = plane.client.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        },
    )
    return str(answer["status"]["token"])


def token_kubeconfig(
    plane: ControlPlane, token: str, name: str, *, namespace: str | None = None, file: str | None = None
) -> Path:
    """A kubeconfig (mode 0600, in the plane's folder) that authenticates to the plane with a bearer token."""
    context: dict[str, str] = {"cluster": name, "user": name}
    if namespace is not None:
        context["namespace"] = namespace
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": plane.server,
                    "certificate-authority-data": base64.b64encode(plane.ca.pair.cert_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    path = plane.workdir / f"{file or name}.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


_sa_kubeconfigs: dict[Path, Path] = {}


def service_account_kubeconfig(plane: ControlPlane, *, hours: int = 4) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (its RBAC from manifests/rbac).

    Creates the ojs-system namespace and applies manifests/rbac (server-side, idempotent), then asks the
    TokenRequest API for a token of ojs-operator-controller-manager and writes a kubeconfig with that
    bearer token and the plane's CA. Cached per plane.
    """
    cached = _sa_kubeconfigs.get(plane.workdir)
    if cached is not None:
        return cached
    if not exists(plane, "namespace", NAMESPACE):
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "default" / "namespace.yaml"))
    plane.kubectl(
        "apply", "--server-side", "--field-manager=ojsctrl-install", "-k", str(ROOT / "manifests" / "rbac")
    )
    token = service_account_token(plane, NAMESPACE, SERVICE_ACCOUNT, seconds=hours * 3600)
    path = token_kubeconfig(
        plane, token, f"{plane.name}-{SERVICE_ACCOUNT}", namespace=NAMESPACE, file=SERVICE_ACCOUNT
    )
    _sa_kubeconfigs[plane.workdir] = path
    return path
