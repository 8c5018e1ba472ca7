"""Delivery artifacts stay in step with their sources (design.md §delivery): generated copies, versions,
RBAC, the Dockerfile and the Makefile. No cluster needed (tests/e2e/delivery/ applies them)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def hack(name: str) -> ModuleType:
    """Import a script from hack/ by path (hack/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"hack_{name}", ROOT / "hack" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


@pytest.mark.parametrize("script", ["sync_manifests", "gen_olm", "gen_dashboards", "gen_crd_docs"])
def test_generated_files_are_current(script: str) -> None:
    assert hack(script).main(["--check"]) == 0, f"stale output of hack/{script}.py: run `make manifests`"


def test_crd_copies_are_identical_to_the_generated_crds() -> None:
    sources = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
    assert len(sources) == 2
    for target in ("deploy/crds", "deploy/helm/ojs-operator/crds", "deploy/olm/manifests"):
        for src in sources:
            want = src.read_bytes()
            if target == "deploy/olm/manifests":  # one object per bundle file: no `---` separator
                want = want.replace(b"\n---\n", b"\n", 1)
            assert (ROOT / target / src.name).read_bytes() == want, f"{target}/{src.name}"
    listed = load("deploy/crds/kustomization.yaml")[0]["resources"]
    assert sorted(listed) == [p.name for p in sources]


def test_versions_agree() -> None:
    chart = load("deploy/helm/ojs-operator/Chart.yaml")[0]
    assert chart["version"] == VERSION and chart["appVersion"] == VERSION
    kustomization = load("deploy/default/kustomization.yaml")[0]
    assert kustomization["images"] == [{"name": "ghcr.io/openjobspec/ojs-operator", "newTag": f"v{VERSION}"}]
    manager = load("deploy/manager/manager.yaml")[0]
    assert manager["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":v{VERSION}")
    from ojsctrl import __version__

    assert __version__ == VERSION


def test_names_the_troubleshooting_guide_relies_on() -> None:
    objs = {
        (o["kind"], o["metadata"]["name"]): o
        for p in (ROOT / "manifests" / "rbac").glob("*.yaml")
        if p.name != "kustomization.yaml"
        for o in load(str(p.relative_to(ROOT)))
    }
    objs |= {(o["kind"], o["metadata"]["name"]): o for o in load("deploy/manager/manager.yaml")}
    assert ("ClusterRole", "ojs-operator-manager-role") in objs
    binding = objs[("ClusterRoleBinding", "ojs-operator-manager-rolebinding")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ojs-operator-controller-manager", "namespace": "ojs-system"}
    ]
    dep = objs[("Deployment", "ojs-operator-controller-manager")]
    assert dep["metadata"]["namespace"] == "ojs-system"
    assert dep["spec"]["selector"]["matchLabels"]["control-plane"] == "controller-manager"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ojs-operator-controller-manager"
    # deploy/default has no namespace transformer (it would put one on the cluster-scoped admission
    # policy): every namespaced object names ojs-system itself.
    for folder in ("deploy/manager", "deploy/webhook", "manifests/rbac"):
        for path in (ROOT / folder).glob("*.yaml"):
            for obj in load(str(path.relative_to(ROOT))):
                if obj["kind"] == "Kustomization":
                    continue
                if obj["kind"] in NAMESPACED_KINDS:
                    assert obj["metadata"].get("namespace") == "ojs-system", f"{path.name}: {obj['kind']}"
                else:
                    assert "namespace" not in obj["metadata"], f"{path.name}: {obj['kind']}"


NAMESPACED_KINDS = {
    "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "Secret", "NetworkPolicy",
}  # fmt: skip
MANAGER_ROLES = ("role.yaml", "cluster_role.yaml", "leader_election_role.yaml")


def test_every_rbac_rule_says_why() -> None:
    """Each rule of the manager's roles is preceded by a comment (its justification)."""
    for name in MANAGER_ROLES:
        lines = (ROOT / "manifests" / "rbac" / name).read_text().splitlines()
        rules = [i for i, line in enumerate(lines) if line.startswith("- apiGroups:")]
        assert rules
        for i in rules:
            assert lines[i - 1].startswith("#"), f"{name}:{i + 1}: rule without a comment"


def test_namespaced_and_cluster_scoped_rules_are_apart() -> None:
    """role.yaml (bound cluster-wide, or as a Role per watched namespace) holds only namespaced kinds;
    cluster_role.yaml (always cluster-wide) only cluster-scoped ones."""
    cluster_scoped = {"customresourcedefinitions", "tokenreviews", "subjectaccessreviews"}
    cluster_scoped.add("validatingwebhookconfigurations")
    role = load("manifests/rbac/role.yaml")[0]
    cluster_role = load("manifests/rbac/cluster_role.yaml")[0]
    assert role["kind"] == cluster_role["kind"] == "ClusterRole"
    assert not any(set(r["resources"]) & cluster_scoped for r in role["rules"])
    assert all(set(r["resources"]) <= cluster_scoped for r in cluster_role["rules"])
    bindings = {
        o["roleRef"]["name"]: o
        for name in ("role_binding.yaml", "cluster_role_binding.yaml")
        for o in load(f"manifests/rbac/{name}")
    }
    assert set(bindings) == {role["metadata"]["name"], cluster_role["metadata"]["name"]}
    # The namespaced overlay's Role is generated from role.yaml: same rules.
    generated = load("deploy/namespaced/manager_role.yaml")[0]
    assert generated["kind"] == "Role" and generated["rules"] == role["rules"]
    binding = load("deploy/namespaced/manager_role_binding.yaml")[0]
    assert binding["metadata"]["namespace"] == generated["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "ojs-operator-manager-role",
    }


def load_text(rel: str) -> str:
    return (ROOT / rel).read_text()


def test_manager_rbac_is_least_privilege_shaped() -> None:
    from ojsctrl.cli import build_parser

    role = load("manifests/rbac/role.yaml")[0]
    cluster_role = load("manifests/rbac/cluster_role.yaml")[0]
    namespaced = load("manifests/rbac/leader_election_role.yaml")[0]
    for rule in role["rules"] + cluster_role["rules"] + namespaced["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert (
            "escalate" not in rule["verbs"]
            and "bind" not in rule["verbs"]
            and "impersonate" not in rule["verbs"]
        )
    for rule in role["rules"]:
        if rule["resources"] == ["secrets"]:
            # Tenants' Secrets are never rewritten: no update, and the patch (release/adopt of the Redis
            # password Secret) is limited to ownership metadata by deploy/manager/secret_patch_policy.yaml.
            assert "update" not in rule["verbs"] and "delete" not in rule["verbs"]
            if "patch" in rule["verbs"]:
                assert "secret_patch_policy.yaml" in load_text("deploy/manager/kustomization.yaml")
    # --metrics-secure reviews each scrape's token: create on the two review kinds, nothing else of theirs.
    reviews = {
        (g, r): rule["verbs"]
        for rule in cluster_role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        if g in ("authentication.k8s.io", "authorization.k8s.io")
    }
    assert reviews == {
        ("authentication.k8s.io", "tokenreviews"): ["create"],
        ("authorization.k8s.io", "subjectaccessreviews"): ["create"],
    }
    assert namespaced["metadata"]["namespace"] == "ojs-system"
    # In its own namespace, everything but create is limited by name (create cannot be).
    for rule in namespaced["rules"]:
        assert rule.get("resourceNames") or rule["verbs"] == ["create"], rule
    by = {(r["resources"][0], tuple(r["verbs"])): r.get("resourceNames") for r in namespaced["rules"]}
    election_id = build_parser().parse_args([]).leader_election_id
    assert by == {
        ("leases", ("get", "update")): [election_id],
        ("leases", ("create",)): None,
        ("secrets", ("get", "update")): ["ojs-operator-webhook-server-cert"],
        ("secrets", ("create",)): None,
    }
    # The names the operator's webhook flags default to.
    from ojsctrl.webhooks.flags import DEFAULT_CERT_SECRET, DEFAULT_CONFIG_NAME, DEFAULT_SERVICE_NAME

    assert by[("secrets", ("get", "update"))] == [DEFAULT_CERT_SECRET]
    webhook_rule = next(
        r for r in cluster_role["rules"] if "validatingwebhookconfigurations" in r["resources"]
    )
    assert webhook_rule["resourceNames"] == [DEFAULT_CONFIG_NAME]
    assert sorted(webhook_rule["verbs"]) == ["get", "update"]
    assert load("deploy/webhook/service.yaml")[0]["metadata"]["name"] == DEFAULT_SERVICE_NAME
    secret = load("deploy/webhook/certificate_secret.yaml")[0]
    assert secret["metadata"]["name"] == DEFAULT_CERT_SECRET and "data" not in secret


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("deploy/manager/pod_patch_policy.yaml", "pods"),
        ("deploy/manager/secret_patch_policy.yaml", "secrets"),
    ],
)
def test_patch_policies_match_the_service_account(path: str, resource: str) -> None:
    policy, binding = load(path)
    account = load("manifests/rbac/service_account.yaml")[0]["metadata"]
    user = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    first = policy["spec"]["matchConditions"][0]["expression"]
    assert first == f"request.userInfo.username == '{user}'"
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [resource]
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_network_policy_and_secure_metrics() -> None:
    manager = load("deploy/manager/manager.yaml")[0]
    container = manager["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-secure" in container["args"]
    ports = {p["name"] for p in container["ports"]}
    netpol = load("deploy/manager/network_policy.yaml")[0]
    assert (
        netpol["spec"]["podSelector"]["matchLabels"].items()
        <= manager["spec"]["template"]["metadata"]["labels"].items()
    )
    assert netpol["spec"]["policyTypes"] == ["Ingress"]  # egress open: API server and OJS servers
    rules = {r["ports"][0]["port"]: r.get("from") for r in netpol["spec"]["ingress"]}
    assert set(rules) == ports == {"metrics", "health", "webhook-server"}
    assert rules["webhook-server"] is None  # the API server's addresses vary by distribution
    assert rules["metrics"] == [{"namespaceSelector": {"matchLabels": {"metrics": "enabled"}}}]
    service = load("deploy/manager/metrics_service.yaml")[0]
    assert service["spec"]["ports"][0]["name"] == "https-metrics"


def test_aggregated_user_roles() -> None:
    viewer = load("manifests/rbac/ojs_viewer_role.yaml")[0]
    editor = load("manifests/rbac/ojs_editor_role.yaml")[0]
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in editor["metadata"]["labels"]
    assert {v for r in viewer["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
    status_rules = [r for r in editor["rules"] if any(x.endswith("/status") for x in r["resources"])]
    assert all(r["verbs"] == ["get"] for r in status_rules)


def test_manager_args_are_flags_the_cli_knows() -> None:
    from ojsctrl.cli import build_parser
    from ojsctrl.webhooks.flags import add_webhook_flags

    parser = build_parser()
    known = {a for action in parser._actions for a in action.option_strings}
    if "--enable-webhooks" not in known:
        add_webhook_flags(parser)
        known = {a for action in parser._actions for a in action.option_strings}
    container = load("deploy/manager/manager.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    for arg in container["args"]:
        assert arg.split("=", 1)[0] in known, arg
    parser.parse_args(container["args"])


# ----------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_small_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    assert " AS build" in froms[0]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert "distroless" in args["RUNTIME_IMAGE"] and args["RUNTIME_IMAGE"].endswith(":nonroot")
    assert args["BUILD_IMAGE"].startswith("python:3.11")  # the runtime's Python: cp311 wheels
    for image in args.values():
        assert not image.endswith(":latest") and ":" in image
    user = [line for line in instructions if line.startswith("USER ")][-1]
    uid, _, gid = user.split()[1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    manager = load("deploy/manager/manager.yaml")[0]["spec"]["template"]["spec"]["securityContext"]
    assert manager["runAsUser"] == int(uid) and manager["runAsGroup"] == int(gid)
    assert instructions[-1] == 'ENTRYPOINT ["/usr/bin/python3", "-m", "ojsctrl"]'
    assert "COPY --from=build" in text
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which does not exist"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[0 if ignore[0] == "*" else 1] == "*" and "!src/" in ignore


def test_bundle_dockerfile_labels_match_annotations() -> None:
    annotations = load("deploy/olm/metadata/annotations.yaml")[0]["annotations"]
    text = (ROOT / "deploy" / "olm" / "bundle.Dockerfile").read_text()
    labels = dict(re.findall(r"(operators\.operatorframework\.io\.[\w.]+)=(\S+)", text))
    assert labels == annotations


# ----------------------------------------------------------------------------------------- Makefile
SPEC_TARGETS = [
    "build",
    "test",
    "lint",
    "run",
    "install",
    "uninstall",
    "deploy",
    "undeploy",
    "docker-build",
    "docker-push",
    "helm-package",
    "helm-install",
    "helm-uninstall",
    "generate",
    "manifests",
    "bench",
]


@pytest.mark.parametrize("target", SPEC_TARGETS)
def test_makefile_has_the_spec_targets(target: str) -> None:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert "No rule to make target" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr


def test_docker_build_explains_a_missing_engine() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "docker-build", "CONTAINER_TOOL=ojsctrl-no-such-engine"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "ojsctrl-no-such-engine is not installed" in out.stderr
