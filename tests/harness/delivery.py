"""Delivery harness: the pinned tools (kubectl, helm), `make` targets against a plane, rendering the
kustomize base and the Helm chart, and the docs' tested shell blocks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.serviceaccount import NAMESPACE, exists

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "ojs-operator-controller-manager"
WEBHOOK_CONFIG = "ojs-operator-validating-webhook-configuration"
CRD_NAMES = ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev")
GROUP = "ojs.openjobspec.dev"
# Labels Helm adds that kustomize has no reason to.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
DOC_MARK = re.compile(r"<!--\s*tested:\s*(e2e|syntax|ci)\b[^>]*-->\s*\n```(?:sh|bash|shell)\n(.*?)```", re.S)


def tool(name: str) -> str:
    """A binary of the pinned toolset (kubectl, helm) built by hack/build-controlplane.sh."""
    return str(binaries.bin_dir() / name)


def isolated_env() -> dict[str, str]:
    """The environment without what would make a fresh virtualenv see this one's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(
    *argv: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 240,
    isolated: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository; fail the test with its output when it fails."""
    proc = subprocess.run(
        list(argv),
        cwd=ROOT,
        env={**(isolated_env() if isolated else os.environ), **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def make(plane: ControlPlane, *targets: str) -> str:
    """Run Makefile targets against the plane's kubeconfig (as a user's shell would)."""
    return run("make", "--no-print-directory", *targets, env={"KUBECONFIG": str(plane.kubeconfig)}).stdout


def helm(plane: ControlPlane, *args: str) -> str:
    return run(tool("helm"), "--kubeconfig", str(plane.kubeconfig), *args).stdout


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize_output() -> str:
    return run(tool("kubectl"), "kustomize", "deploy/default").stdout


def helm_template(*extra: str) -> str:
    return run(
        tool("helm"),
        "template",
        "ojs-operator",
        "deploy/helm/ojs-operator",
        "--namespace",
        NAMESPACE,
        "--include-crds",
        "--kube-version",
        binaries.versions()["KUBERNETES_VERSION"],
        *extra,
    ).stdout


def key(obj: dict[str, Any]) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


def normalise(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str | None, str], dict[str, Any]]:
    """Objects by identity, without the labels only Helm adds."""
    out = {}
    for obj in objs:
        labels = obj["metadata"].get("labels") or {}
        for label in HELM_ONLY_LABELS:
            labels.pop(label, None)
        out[key(obj)] = obj
    return out


def inert_webhooks(plane: ControlPlane) -> None:
    """Make the deployed ValidatingWebhookConfiguration select no namespace: kwok's pods do not run the
    manager, and the API server must not dial their (non-loopback) addresses."""
    if exists(plane, "validatingwebhookconfiguration", WEBHOOK_CONFIG):
        cfg = json.loads(
            plane.kubectl("get", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "-o", "json").stdout
        )
        patch = [
            {
                "op": "add",
                "path": f"/webhooks/{i}/namespaceSelector",
                "value": {"matchLabels": {"ojsctrl-e2e/never": "x"}},
            }
            for i in range(len(cfg["webhooks"]))
        ]
        plane.kubectl(
            "patch", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "--type=json", "-p", json.dumps(patch)
        )


def restricted_namespace(plane: ControlPlane, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    plane.create_namespace(name)
    plane.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        *(f"{k}={v}" for k, v in (labels or {}).items()),
    )
    return name


def install_crds(plane: ControlPlane) -> None:
    files = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
    args = ["apply", "--server-side", "--field-manager=ojsctrl-install", "--force-conflicts"]
    for f in files:
        args += ["-f", str(f)]
    plane.kubectl(*args)
    for f in files:
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(f))


def webhooks_supported() -> bool:
    """Does the operator's CLI have the webhook flags yet?"""
    out = subprocess.run(
        [sys.executable, "-m", "ojsctrl", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--enable-webhooks" in out.stdout


DOC_ORDER = (
    "README.md",
    "docs/install.md",
    "docs/troubleshooting.md",
    "docs/autoscaling.md",
    "docs/production-checklist.md",
)


def doc_blocks(path: Path) -> list[tuple[str, str]]:
    """(marker, script) for every fenced shell block preceded by a `<!-- tested: ... -->` comment."""
    return [(m.group(1), m.group(2)) for m in DOC_MARK.finditer(path.read_text())]
