"""`helm lint`, `helm template`, `helm install` (CRDs from the chart's crds/) and `helm uninstall` (the
CRDs stay).

Conventions of the delivery tests: tests/e2e/delivery/conftest.py.
"""

from __future__ import annotations

import json
import time

from tests.harness.controlplane import ControlPlane
from tests.harness.delivery import CRD_NAMES, DEPLOYMENT, WEBHOOK_CONFIG, helm, helm_template, inert_webhooks
from tests.harness.serviceaccount import NAMESPACE, exists


def test_helm_lint_template_install_uninstall(dplane: ControlPlane) -> None:
    for crd in CRD_NAMES:
        dplane.kubectl("delete", "crd", crd, "--ignore-not-found")
    helm(dplane, "lint", "deploy/helm/ojs-operator")
    assert "kind: Deployment" in helm_template()
    started = time.monotonic()
    helm(
        dplane,
        "install",
        "ojs-operator",
        "deploy/helm/ojs-operator",
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--set",
        "replicaCount=2",
        "--wait",
        "--timeout",
        "3m",
    )
    inert_webhooks(dplane)
    print(f"helm install ready in {time.monotonic() - started:.1f}s")
    for crd in CRD_NAMES:
        assert exists(dplane, "crd", crd), "helm install creates the CRDs from crds/"
    dep = json.loads(dplane.kubectl("get", "deployment", "-n", NAMESPACE, DEPLOYMENT, "-o", "json").stdout)
    assert dep["status"].get("availableReplicas") == 2
    assert "ojs-operator" in helm(dplane, "list", "--namespace", NAMESPACE)

    assert exists(dplane, "secret", "-n", NAMESPACE, "ojs-operator-webhook-server-cert")
    helm(dplane, "uninstall", "ojs-operator", "--namespace", NAMESPACE, "--wait")
    assert not exists(dplane, "deployment", "-n", NAMESPACE, DEPLOYMENT)
    # The webhook certificate Secret belongs to the release (issue 17): nothing of the chart stays.
    assert not exists(dplane, "secret", "-n", NAMESPACE, "ojs-operator-webhook-server-cert")
    assert not exists(dplane, "validatingwebhookconfiguration", WEBHOOK_CONFIG)
    for crd in CRD_NAMES:
        assert exists(dplane, "crd", crd), "helm uninstall must never delete the CRDs"
