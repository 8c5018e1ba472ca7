"""`helm lint`, `helm template`, `helm install` (CRDs from the chart's crds/) and `helm uninstall` (the
CRDs stay).

Delivery against a real control plane. Each module that needs a plane has its own (`dplane`, from
this folder's conftest), so it can install and remove CRDs and webhook configurations without disturbing
the rest of the suite.

No request may leave loopback: kwok's pods have addresses in 10.244.0.0/16 and Services in 10.96.0.0/16
that nothing serves, so no OJS object is created or updated while a ValidatingWebhookConfiguration that
points at a Service exists, and no command reads pod logs (which the API server fetches from the node).
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
