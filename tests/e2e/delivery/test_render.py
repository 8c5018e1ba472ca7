"""kustomize (deploy/default) and Helm (deploy/helm/ojs-operator, default values) render the same objects;
the manager Deployment is as the design says; Helm values switch what they say.

Conventions of the delivery tests: tests/e2e/delivery/conftest.py.
"""

from __future__ import annotations

import json
import subprocess

from tests.harness.delivery import docs, helm_template, kustomize_output, normalise, tool
from tests.harness.kube import ROOT
from tests.harness.serviceaccount import NAMESPACE


def test_kustomize_and_helm_render_the_same_objects() -> None:
    kust = normalise(docs(kustomize_output()))
    chart = normalise(docs(helm_template()))
    # `helm install --create-namespace` makes the namespace; kustomize ships it with its Pod Security labels.
    namespace_key = ("v1", "Namespace", None, NAMESPACE)
    assert namespace_key in kust
    del kust[namespace_key]
    assert sorted(kust, key=str) == sorted(chart, key=str)
    for k, obj in kust.items():
        assert obj == chart[k], f"{k} differs between kustomize and Helm"
    kinds = {k[1] for k in kust}
    assert {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
    } <= kinds


def test_manager_deployment_follows_the_spec() -> None:
    objs = docs(kustomize_output())
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["metadata"]["namespace"] == NAMESPACE
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["control-plane"] == "controller-manager"
    container = pod["spec"]["containers"][0]
    assert "--leader-elect" in container["args"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        port = container[probe]["httpGet"]["port"]
        assert next(p["containerPort"] for p in container["ports"] if p["name"] == port) == 8081
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    assert services["ojs-operator-webhook-service"]["spec"]["ports"][0]["targetPort"] == "webhook-server"
    assert (
        services["ojs-operator-controller-manager-metrics-service"]["spec"]["ports"][0]["targetPort"]
        == "metrics"
    )


def test_helm_values_switch_what_they_say() -> None:
    objs = docs(
        helm_template(
            "--set",
            "image.tag=v0.2.0",
            "--set",
            "replicaCount=2",
            "--set",
            "webhook.certificate.mode=cert-manager",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "nodeSelector.disktype=ssd",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        )
    )
    kinds = {o["kind"] for o in objs}
    assert {"Certificate", "Issuer", "ServiceMonitor"} <= kinds
    assert "Role" not in kinds  # no lease, no certificate Secret to rewrite: nothing namespaced to grant
    dep = next(o for o in objs if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert dep["spec"]["replicas"] == 2
    assert container["image"] == "ghcr.io/openjobspec/ojs-operator:v0.2.0"
    assert "--leader-elect" not in container["args"]
    assert "--webhook-cert-mode=external" in container["args"]
    assert pod["nodeSelector"] == {"disktype": "ssd"}
    role = next(
        o for o in objs if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("manager-role")
    )
    assert all("validatingwebhookconfigurations" not in r["resources"] for r in role["rules"])
    vwc = next(o for o in objs if o["kind"] == "ValidatingWebhookConfiguration")
    assert (
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        == f"{NAMESPACE}/ojs-operator-serving-cert"
    )
    dashboard = next(o for o in objs if o["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["ojs-operator.json"])["uid"] == "ojs-operator"
    off = docs(helm_template("--set", "webhook.enabled=false"))
    assert "ValidatingWebhookConfiguration" not in {o["kind"] for o in off}
    assert "Secret" not in {o["kind"] for o in off}
    # The certificate Secret is the release's (so `helm uninstall` removes it) only when self-managed.
    assert "Secret" not in kinds
    secret = next(o for o in docs(helm_template()) if o["kind"] == "Secret")
    assert secret["metadata"]["name"] == "ojs-operator-webhook-server-cert" and "data" not in secret
    # watchNamespaces: Roles in each watched namespace, no cluster-wide rule on a namespaced kind.
    scoped = docs(helm_template("--set", "watchNamespaces={team-a,team-b}"))
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in scoped}
    for ns in ("team-a", "team-b"):
        assert ("Role", ns, "ojs-operator-manager-role") in roles
        assert ("RoleBinding", ns, "ojs-operator-manager-rolebinding") in roles
    assert ("ClusterRole", None, "ojs-operator-manager-role") not in roles
    assert ("ClusterRoleBinding", None, "ojs-operator-manager-rolebinding") not in roles
    namespaced_kinds = {"deployments", "secrets", "pods", "services", "configmaps", "ojsclusters", "events"}
    for o in scoped:
        if o["kind"] == "ClusterRole" and not o["metadata"]["name"].endswith(("viewer-role", "editor-role")):
            assert not any(namespaced_kinds & set(r.get("resources", [])) for r in o["rules"]), o
    container = next(o for o in scoped if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"--watch-namespace=team-a", "--watch-namespace=team-b"} <= set(container[0]["args"])
    vwc = next(o for o in scoped if o["kind"] == "ValidatingWebhookConfiguration")
    for hook in vwc["webhooks"]:
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    # Secure metrics by default; the ServiceMonitor scrapes https with its bearer token.
    monitor = docs(helm_template("--set", "metrics.serviceMonitor.enabled=true"))
    endpoint = next(o for o in monitor if o["kind"] == "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["port"] == "https-metrics"
    assert endpoint["bearerTokenFile"].endswith("/serviceaccount/token")
    plain = docs(helm_template("--set", "metrics.secure=false", "--set", "networkPolicy.enabled=false"))
    container = next(o for o in plain if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-secure" not in container[0]["args"]
    assert not {"NetworkPolicy", "ClusterRole/ojs-operator-metrics-reader"} & {
        o["kind"] if o["kind"] != "ClusterRole" else f"ClusterRole/{o['metadata']['name']}" for o in plain
    }
    restricted = docs(helm_template("--set", "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24"))
    netpol = next(o for o in restricted if o["kind"] == "NetworkPolicy")["spec"]["ingress"]
    webhook_rule = next(r for r in netpol if r["ports"][0]["port"] == "webhook-server")
    assert webhook_rule["from"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    vap = docs(helm_template("--namespace", "other", "--set", "podPatchPolicy.enabled=true"))
    policy = next(o for o in vap if o["kind"] == "ValidatingAdmissionPolicy")
    assert "system:serviceaccount:other:ojs-operator-controller-manager" in json.dumps(policy)
    bad = subprocess.run(
        [tool("helm"), "template", "x", "deploy/helm/ojs-operator", "--kube-version", "1.37.0",
         "--set", "webhook.certificate.mode=bogus"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "self-managed or cert-manager" in bad.stderr
