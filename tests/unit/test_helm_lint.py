"""`helm lint --strict` accepts the chart, with its defaults and with every optional piece switched on.

helm is the pinned build in the control-plane cache (`make controlplane`); under CI=true a missing one
fails the test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import missing_tool
from tests.harness import binaries

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ojs-operator"


def _helm() -> str:
    helm = binaries.bin_dir() / "helm"
    if not helm.exists():
        missing_tool(f"helm not built at {helm}: run `make controlplane`")
    return str(helm)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "metrics.serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kube-prometheus-stack",
            "grafanaDashboard.enabled=true",
            "podDisruptionBudget.enabled=true",
            "replicaCount=2",
        ],
        ["webhook.certificate.mode=cert-manager", "metrics.secure=false", "watchNamespaces={a,b}"],
        ["webhook.enabled=false", "networkPolicy.enabled=false", "podPatchPolicy.enabled=false"],
    ],
    ids=["defaults", "monitoring", "cert-manager-namespaced", "minimal"],
)
def test_helm_lint_strict(values: list[str]) -> None:
    args = [a for v in values for a in ("--set", v)]
    out = subprocess.run(
        [_helm(), "lint", "--strict", str(CHART), "--kube-version", "1.37.0", *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_helm_lint_strict_fails_on_a_broken_value() -> None:
    """--strict is no rubber stamp: a value of the wrong shape makes lint fail."""
    out = subprocess.run(
        [_helm(), "lint", "--strict", str(CHART), "--kube-version", "1.37.0",
         "--set", "prometheusRule.labels=oops", "--set", "prometheusRule.enabled=true"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0, out.stdout
