"""The OLM bundle (deploy/olm) against the OLM API: field names and required fields of
ClusterServiceVersion (operators.coreos.com/v1alpha1, operator-framework/api
pkg/operators/v1alpha1/clusterserviceversion_types.go), the bundle annotations, and consistency with the
CRDs, RBAC and Deployment it packages. Structural only: no OLM, no network."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "deploy" / "olm"
CSV_PATH = BUNDLE / "manifests" / "ojs-operator.clusterserviceversion.yaml"

# Each OLM type: its JSON field names, and the required ones (no `omitempty` in the Go struct tag).
# Kubernetes types embedded in the CSV (DeploymentSpec, PolicyRule, RuleWithOperations) are checked by the
# e2e suite, which applies the same Deployment and rules to a real API server.
Type = tuple[frozenset[str], frozenset[str]]


def _t(fields: str, required: str = "") -> Type:
    return frozenset(fields.split()), frozenset(required.split())


CSV_SPEC = _t(
    "install version maturity customresourcedefinitions apiservicedefinitions webhookdefinitions "
    "nativeAPIs minKubeVersion displayName description keywords maintainers provider links icon "
    "conversionwebhookdefinitions installModes replaces labels annotations selector cleanup skips "
    "relatedImages",
    "install displayName",
)
NAMED_INSTALL_STRATEGY = _t("strategy spec", "strategy")
STRATEGY_DETAILS_DEPLOYMENT = _t("deployments permissions clusterPermissions", "deployments")
STRATEGY_DEPLOYMENT_SPEC = _t("name spec label", "name spec")
STRATEGY_DEPLOYMENT_PERMISSIONS = _t("serviceAccountName rules", "serviceAccountName rules")
CUSTOM_RESOURCE_DEFINITIONS = _t("owned required")
CRD_DESCRIPTION = _t(
    "name version kind displayName description resources statusDescriptors specDescriptors actionDescriptors",
    "name version kind",
)
API_RESOURCE_REFERENCE = _t("name kind version", "name kind version")
DESCRIPTOR = _t("path displayName description x-descriptors value", "path")
WEBHOOK_DESCRIPTION = _t(
    "generateName type deploymentName containerPort targetPort rules failurePolicy matchPolicy "
    "objectSelector sideEffects timeoutSeconds admissionReviewVersions reinvocationPolicy webhookPath "
    "conversionCRDs",
    "generateName type sideEffects admissionReviewVersions",
)
INSTALL_MODE = _t("type supported", "type supported")
MAINTAINER = _t("name email")
APP_LINK = _t("name url")
ICON = _t("base64data mediatype", "base64data mediatype")
RELATED_IMAGE = _t("name image", "name image")
INSTALL_MODE_TYPES = {"OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"}
WEBHOOK_TYPES = {"ValidatingAdmissionWebhook", "MutatingAdmissionWebhook", "ConversionWebhook"}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def check(obj: Any, shape: Type, where: str) -> None:
    assert isinstance(obj, dict), f"{where}: not an object"
    fields, required = shape
    unknown = set(obj) - fields
    assert not unknown, f"{where}: fields unknown to the OLM API: {sorted(unknown)}"
    missing = required - set(obj)
    assert not missing, f"{where}: required fields missing: {sorted(missing)}"


def check_list(items: Any, shape: Type, where: str) -> None:
    assert isinstance(items, list), f"{where}: not a list"
    for i, item in enumerate(items):
        check(item, shape, f"{where}[{i}]")


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    docs = load(CSV_PATH)
    assert len(docs) == 1
    return docs[0]


def test_csv_matches_the_olm_api(csv: dict[str, Any]) -> None:
    assert csv["apiVersion"] == "operators.coreos.com/v1alpha1"
    assert csv["kind"] == "ClusterServiceVersion"
    assert set(csv) == {"apiVersion", "kind", "metadata", "spec"}
    spec = csv["spec"]
    check(spec, CSV_SPEC, "spec")
    check(spec["install"], NAMED_INSTALL_STRATEGY, "spec.install")
    assert spec["install"]["strategy"] == "deployment"
    details = spec["install"]["spec"]
    check(details, STRATEGY_DETAILS_DEPLOYMENT, "spec.install.spec")
    check_list(details["deployments"], STRATEGY_DEPLOYMENT_SPEC, "spec.install.spec.deployments")
    check_list(details["permissions"], STRATEGY_DEPLOYMENT_PERMISSIONS, "spec.install.spec.permissions")
    check_list(
        details["clusterPermissions"], STRATEGY_DEPLOYMENT_PERMISSIONS, "spec.install.spec.clusterPermissions"
    )
    check(spec["customresourcedefinitions"], CUSTOM_RESOURCE_DEFINITIONS, "spec.customresourcedefinitions")
    owned = spec["customresourcedefinitions"]["owned"]
    check_list(owned, CRD_DESCRIPTION, "spec.customresourcedefinitions.owned")
    for i, desc in enumerate(owned):
        check_list(desc.get("resources", []), API_RESOURCE_REFERENCE, f"owned[{i}].resources")
        check_list(desc.get("specDescriptors", []), DESCRIPTOR, f"owned[{i}].specDescriptors")
        check_list(desc.get("statusDescriptors", []), DESCRIPTOR, f"owned[{i}].statusDescriptors")
    check_list(spec["webhookdefinitions"], WEBHOOK_DESCRIPTION, "spec.webhookdefinitions")
    check_list(spec["installModes"], INSTALL_MODE, "spec.installModes")
    check_list(spec["maintainers"], MAINTAINER, "spec.maintainers")
    check_list(spec["links"], APP_LINK, "spec.links")
    check(spec["provider"], APP_LINK, "spec.provider")
    check_list(spec["icon"], ICON, "spec.icon")
    check_list(spec["relatedImages"], RELATED_IMAGE, "spec.relatedImages")


def test_csv_values(csv: dict[str, Any]) -> None:
    spec = csv["spec"]
    assert SEMVER.match(spec["version"])
    assert csv["metadata"]["name"] == f"ojs-operator.v{spec['version']}"
    assert SEMVER.match(spec["minKubeVersion"]) and spec["minKubeVersion"] == "1.30.0"
    modes = {m["type"]: m["supported"] for m in spec["installModes"]}
    assert set(modes) == INSTALL_MODE_TYPES
    # Every mode: the manager watches what olm.targetNamespaces names (empty: all namespaces).
    assert modes == dict.fromkeys(INSTALL_MODE_TYPES, True)
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    assert {e["kind"] for e in examples} == {"OJSCluster", "OJSWorker"}
    image = csv["metadata"]["annotations"]["containerImage"]
    container = spec["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image
    assert any(r["image"] == image for r in spec["relatedImages"])


def test_owned_apis_are_the_two_crds(csv: dict[str, Any]) -> None:
    crds = {
        c["metadata"]["name"]: c
        for c in (load(p)[0] for p in sorted((ROOT / "manifests" / "crds").glob("*.yaml")))
    }
    owned = csv["spec"]["customresourcedefinitions"]["owned"]
    assert {o["name"] for o in owned} == set(crds)
    for o in owned:
        crd = crds[o["name"]]
        assert o["kind"] == crd["spec"]["names"]["kind"]
        assert o["version"] in {v["name"] for v in crd["spec"]["versions"] if v["served"]}
    # The bundle ships the CRDs themselves next to the CSV.
    for name in crds:
        assert any(load(p)[0]["metadata"]["name"] == name for p in (BUNDLE / "manifests").glob("ojs.*.yaml"))


def test_install_strategy_matches_the_deploy_manifests(csv: dict[str, Any]) -> None:
    details = csv["spec"]["install"]["spec"]
    manager = load(ROOT / "deploy" / "manager" / "manager.yaml")[0]
    deployment = details["deployments"][0]
    assert deployment["name"] == manager["metadata"]["name"]
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    account = pod["spec"]["serviceAccountName"]
    assert {p["serviceAccountName"] for p in details["permissions"] + details["clusterPermissions"]} == {
        account
    }
    args = pod["spec"]["containers"][0]["args"]
    # OLM provides and rotates the webhook certificate, and owns the webhook configuration.
    assert "--webhook-cert-mode=external" in args
    assert not any(a.startswith("--webhook-config-name") for a in args)
    assert "--metrics-secure" in args
    # The OperatorGroup's target namespaces, through the downward API, are the watched namespaces.
    env = pod["spec"]["containers"][0]["env"]
    watch = next(e for e in env if e["name"] == "OJSCTRL_WATCH_NAMESPACE")
    assert watch["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['olm.targetNamespaces']"
    # Cluster-wide: only the cluster-scoped reads (OLM owns the webhook configuration).
    cluster_rules = details["clusterPermissions"][0]["rules"]
    cluster_role = load(ROOT / "manifests" / "rbac" / "cluster_role.yaml")[0]["rules"]
    assert cluster_rules == [
        r for r in cluster_role if "validatingwebhookconfigurations" not in r["resources"]
    ]
    namespaced = {"deployments", "secrets", "pods", "services", "configmaps", "ojsclusters", "leases"}
    assert not any(namespaced & set(r["resources"]) for r in cluster_rules)
    # Namespaced kinds: `permissions`, which OLM grants per target namespace (a ClusterRole only for
    # AllNamespaces). The Lease by name; no certificate Secret rule (OLM mounts its own certificate).
    rules = details["permissions"][0]["rules"]
    role = load(ROOT / "manifests" / "rbac" / "role.yaml")[0]["rules"]
    assert rules[: len(role)] == role
    assert rules[len(role) :] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ojs-k8s-operator.openjobspec.dev"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]


def test_webhook_definitions_match_the_webhook_configuration(csv: dict[str, Any]) -> None:
    config = load(ROOT / "manifests" / "webhook" / "validating-webhook-configuration.yaml")[0]
    defs = {d["generateName"]: d for d in csv["spec"]["webhookdefinitions"]}
    assert set(defs) == {w["name"] for w in config["webhooks"]}
    deployment = csv["spec"]["install"]["spec"]["deployments"][0]
    ports = {
        p["name"]: p["containerPort"]
        for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    for hook in config["webhooks"]:
        d = defs[hook["name"]]
        assert d["type"] in WEBHOOK_TYPES and d["type"] == "ValidatingAdmissionWebhook"
        assert d["deploymentName"] == deployment["name"]
        assert d["targetPort"] == ports["webhook-server"]
        assert d["webhookPath"] == hook["clientConfig"]["service"]["path"]
        for k in (
            "rules",
            "sideEffects",
            "failurePolicy",
            "admissionReviewVersions",
            "timeoutSeconds",
            "matchPolicy",
        ):
            assert d[k] == hook[k], k
        assert d["sideEffects"] in ("None", "NoneOnDryRun")


def test_bundle_metadata() -> None:
    annotations = load(BUNDLE / "metadata" / "annotations.yaml")[0]
    assert set(annotations) == {"annotations"}
    a = annotations["annotations"]
    assert a["operators.operatorframework.io.bundle.mediatype.v1"] == "registry+v1"
    assert a["operators.operatorframework.io.bundle.manifests.v1"] == "manifests/"
    assert a["operators.operatorframework.io.bundle.metadata.v1"] == "metadata/"
    assert a["operators.operatorframework.io.bundle.package.v1"] == "ojs-operator"
    channels = a["operators.operatorframework.io.bundle.channels.v1"].split(",")
    assert a["operators.operatorframework.io.bundle.channel.default.v1"] in channels
    # registry+v1: manifests/ holds only the CSV and the objects it may carry (CRDs here), flat.
    kinds = sorted(load(p)[0]["kind"] for p in (BUNDLE / "manifests").iterdir())
    assert kinds == ["ClusterServiceVersion", "CustomResourceDefinition", "CustomResourceDefinition"]


def test_catalog_and_subscription_examples() -> None:
    catalog = load(BUNDLE / "catalogsource.yaml")[0]
    assert catalog["kind"] == "CatalogSource" and catalog["spec"]["sourceType"] == "grpc"
    docs = {d["kind"]: d for d in load(BUNDLE / "subscription.yaml")}
    sub = docs["Subscription"]["spec"]
    annotations = load(BUNDLE / "metadata" / "annotations.yaml")[0]["annotations"]
    assert sub["name"] == annotations["operators.operatorframework.io.bundle.package.v1"]
    assert sub["channel"] in annotations["operators.operatorframework.io.bundle.channels.v1"].split(",")
    assert sub["source"] == catalog["metadata"]["name"]
    assert sub["sourceNamespace"] == catalog["metadata"]["namespace"]
    # AllNamespaces: an OperatorGroup without targetNamespaces.
    assert "targetNamespaces" not in docs["OperatorGroup"]["spec"]
