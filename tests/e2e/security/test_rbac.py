"""Least privilege against a real API server (issue 18 item 8, docs/security.md).

- The ValidatingAdmissionPolicy shipped with the operator (deploy/manager/pod_patch_policy.yaml): as the
  operator's ServiceAccount, a patch of a pod's controller.kubernetes.io/pod-deletion-cost annotation is
  allowed; a patch of its image, labels or another annotation is denied with the policy's message; the
  same patch by anyone else is not judged by it.
- The namespaced install (deploy/namespaced): the operator, as a ServiceAccount holding only the overlay's
  Roles in its own and the watched namespace plus the small cluster-scoped ClusterRole, reconciles an
  OJSCluster in the watched namespace with no denial, and the audit log shows it never touched another
  namespace nor listed a namespaced kind cluster-wide.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.harness import binaries
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import wait_until
from tests.harness.operator import OperatorProcess
from tests.harness.serviceaccount import service_account_token, token_kubeconfig

ROOT = Path(__file__).resolve().parents[3]
SA_NAME = "ojs-operator-controller-manager"
CLUSTER_SCOPED = (
    "customresourcedefinitions",
    "tokenreviews",
    "subjectaccessreviews",
    "validatingwebhookconfigurations",
)
POLICY_MESSAGE = "the OJS operator may change only the controller.kubernetes.io/pod-deletion-cost annotation"


def _request(
    plane: ControlPlane, token: str | None, method: str, path: str, body: Any = None
) -> tuple[int, str]:
    """One API request with a bearer token (None: the plane's admin client)."""
    if token is None:
        assert plane.client is not None
        status, answer = plane.client.request(
            method, path, body, content_type="application/strategic-merge-patch+json"
        )
        return status, json.dumps(answer)
    ctx = ssl.create_default_context(cadata=plane.ca.pair.cert_pem.decode())
    req = urllib.request.Request(
        plane.server + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/strategic-merge-patch+json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _apply(plane: ControlPlane, objs: list[dict[str, Any]]) -> None:
    plane.kubectl(
        "apply", "--server-side", "--field-manager=ojsctrl-e2e", "--force-conflicts", "-f", "-",
        input="\n---\n".join(json.dumps(o) for o in objs),
    )  # fmt: skip


def test_pod_patch_policy_allows_only_the_deletion_cost(plane: ControlPlane) -> None:
    from tests.harness.serviceaccount import service_account_kubeconfig

    kubeconfig = service_account_kubeconfig(plane)  # ojs-system and manifests/rbac (pods patch granted)
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    plane.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "manager" / "pod_patch_policy.yaml"))
    ns = f"vap-{uuid.uuid4().hex[:6]}"
    plane.create_namespace(ns)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "w",
            "namespace": ns,
            "labels": {"app": "w", "probe": "0"},
            "annotations": {"keep": "1"},
        },
        "spec": {"containers": [{"name": "c", "image": "example.org/worker:v1"}]},
    }
    _apply(plane, [pod])
    path = f"/api/v1/namespaces/{ns}/pods/w"

    def patch(body: dict[str, Any], who: str | None = token) -> tuple[int, str]:
        return _request(plane, who, "PATCH", path, body)

    # The policy is loaded by the API server's informer a moment after it is created.
    last: list[tuple[int, str]] = []

    def denied() -> bool:
        # A new value each time: a patch that changes nothing is allowed, policy or not.
        last[:] = [patch({"metadata": {"labels": {"probe": uuid.uuid4().hex[:8]}}})]
        return last[0][0] == 403 and POLICY_MESSAGE in last[0][1]

    try:
        wait_until("the policy denies a label change", denied, 60, 0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: last answer {last}") from None
    status, body = patch({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}}})
    assert status == 200, body
    status, body = patch({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": None}}})
    assert status == 200, body
    for change in (
        {"spec": {"containers": [{"name": "c", "image": "evil.example/miner:1"}]}},
        {"metadata": {"labels": {"app": "hijacked"}}},
        {"metadata": {"labels": {"extra": "1"}}},
        {"metadata": {"annotations": {"keep": "2"}}},
        {"metadata": {"annotations": {"keep": None}}},
        {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "1", "new": "x"}}},
    ):
        status, body = patch(change)
        assert status == 403, (change, status, body)
        assert POLICY_MESSAGE in body, body
    live = json.loads(plane.kubectl("get", "pod", "-n", ns, "w", "-o", "json").stdout)
    assert live["spec"]["containers"][0]["image"] == "example.org/worker:v1"
    assert live["metadata"]["labels"]["app"] == "w"
    assert not any(k in live["metadata"]["labels"] for k in ("extra",))
    # Control: another user's identical change is not judged by the policy.
    status, body = patch({"metadata": {"labels": {"app": "admin"}}}, None)
    assert status == 200, body
    plane.kubectl("delete", "namespace", ns, "--wait=false")


def _namespaced_install(
    plane: ControlPlane, op_ns: str, watched: str, suffix: str
) -> tuple[list[dict[str, Any]], str]:
    """deploy/namespaced's RBAC moved to op_ns/watched (cluster-scoped names made unique), and the watch
    namespace the overlay gives the manager."""
    rendered = subprocess.run(
        [str(binaries.bin_dir() / "kubectl"), "kustomize", str(ROOT / "deploy" / "namespaced")],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    objs = _docs(rendered)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("ClusterRole", "ojs-operator-manager-role") not in kinds, (
        "the overlay keeps the cluster-wide role"
    )
    assert ("ClusterRoleBinding", "ojs-operator-manager-rolebinding") not in kinds
    dep = next(o for o in objs if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    overlay_watch = env["OJSCTRL_WATCH_NAMESPACE"]
    picked = []
    for o in objs:
        if o["kind"] not in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
            continue
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] != "ojs-operator-manager-cluster-role":
            continue  # the user-facing aggregated and metrics-reader roles
        meta = o["metadata"]
        if meta.get("namespace") == "ojs-system":
            meta["namespace"] = op_ns
        elif meta.get("namespace") == overlay_watch:
            meta["namespace"] = watched
        if o["kind"].startswith("Cluster"):
            meta["name"] += f"-{suffix}"
        if o["kind"] == "ClusterRoleBinding":
            o["roleRef"]["name"] += f"-{suffix}"
        for s in o.get("subjects", []):
            s["namespace"] = op_ns
        picked.append(o)
    return picked, overlay_watch


def test_namespaced_install_reconciles_with_roles_only(plane: ControlPlane, crds: ControlPlane) -> None:
    suffix = uuid.uuid4().hex[:6]
    op_ns, watched = f"nsop-{suffix}", f"nsw-{suffix}"
    plane.create_namespace(op_ns)
    plane.create_namespace(watched)
    objs, overlay_watch = _namespaced_install(plane, op_ns, watched, suffix)
    assert overlay_watch == "ojs-workloads"
    _apply(plane, objs)
    user = f"system:serviceaccount:{op_ns}:{SA_NAME}"
    # Nothing cluster-wide on namespaced kinds.
    for verb, what in (("list", "secrets"), ("patch", "pods"), ("create", "deployments.apps")):
        cani = plane.kubectl("auth", "can-i", verb, what, "--all-namespaces", f"--as={user}", check=False)
        assert cani.stdout.strip() == "no", (verb, what, cani.stdout)
        cani = plane.kubectl("auth", "can-i", verb, what, "-n", watched, f"--as={user}", check=False)
        assert cani.stdout.strip() == "yes", (verb, what, cani.stdout)
    kubeconfig = token_kubeconfig(plane, service_account_token(plane, op_ns, SA_NAME), f"nsop-{suffix}")
    op = OperatorProcess(
        plane,
        "ojsctrl",
        "--kubeconfig", str(kubeconfig),
        "--leader-elect", "--leader-election-namespace", op_ns,
        "--ojs-url-template", f"http://127.0.0.1:{free_port()}",
        name="ojsctrl-namespaced",
        env={"OJSCTRL_WATCH_NAMESPACE": watched, "OJSCTRL_E2E_AS_SA": "0"},
    )  # fmt: skip
    try:
        try:
            wait_until("namespaced operator ready", op.ready, 60)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{op.logs()[-3000:]}") from None
        cluster = {
            "apiVersion": "ojs.openjobspec.dev/v1alpha1",
            "kind": "OJSCluster",
            "metadata": {"name": "tenant", "namespace": watched},
            "spec": {
                "backend": {"type": "redis", "embedded": True},
                "replicas": 1,
                "image": "ghcr.io/openjobspec/ojs-server:v0.5.0",
            },
        }
        _apply(plane, [cluster])

        def phase() -> str | None:
            out = plane.kubectl("get", "ojscluster", "-n", watched, "tenant", "-o", "json", check=False)
            return (json.loads(out.stdout).get("status") or {}).get("phase") if out.returncode == 0 else None

        try:
            wait_until("cluster Running under Roles only", lambda: phase() == "Running", 120, 0.5)
        except AssertionError as e:
            raise AssertionError(f"{e} (phase {phase()})\n{op.logs()[-4000:]}") from None
        for what in ("deployment/tenant-server", "service/tenant-server", "secret/tenant-api-key"):
            assert plane.kubectl("get", "-n", watched, what, check=False).returncode == 0, what
    finally:
        op.stop()
    denial = re.compile(r"\b403\b(?!\w)(?=[ ,}:\"])|forbidden", re.I)
    forbidden = [line for line in op.logs().splitlines() if denial.search(line)]
    assert not forbidden, "denied under the namespaced Roles:\n" + "\n".join(forbidden[:20])
    outside = []
    seen: set[tuple[str, str, str | None]] = set()
    for event in plane.audit_events():
        if (event.get("user") or {}).get("username") != user:
            continue
        ref0 = event.get("objectRef") or {}
        seen.add((ref0.get("resource", ""), event["verb"], ref0.get("namespace")))
        ref = event.get("objectRef") or {}
        code = (event.get("responseStatus") or {}).get("code")
        assert code != 403, f"{event.get('verb')} {event.get('requestURI')} was forbidden"
        if not ref:
            continue
        ns = ref.get("namespace")
        cluster_scoped = ref.get("resource") in CLUSTER_SCOPED
        if (ns and ns not in (op_ns, watched)) or (not ns and not cluster_scoped):
            outside.append(f"{event['verb']} {event.get('requestURI')}")
    # The run is in the audit log: the watched namespace's Secrets listed there (not cluster-wide), its
    # Deployments applied.
    for expected in (("secrets", "list", watched), ("deployments", "patch", watched)):
        assert expected in seen, f"{expected} not in the audit log of {user}: {sorted(seen, key=str)[:20]}"
    assert not outside, f"requests outside the watched and own namespace: {outside[:10]}"


SECRET_POLICY_MESSAGE = "the OJS operator may change only the owner references"


def test_secret_patch_policy_allows_only_release_and_adoption(plane: ControlPlane) -> None:
    from tests.harness.serviceaccount import service_account_kubeconfig

    kubeconfig = service_account_kubeconfig(plane)  # ojs-system and manifests/rbac (secrets patch granted)
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    plane.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "deploy" / "manager" / "secret_patch_policy.yaml")
    )
    ns = f"vap-s-{uuid.uuid4().hex[:6]}"
    plane.create_namespace(ns)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "tenant",
            "namespace": ns,
            "labels": {"probe": "0"},
            "annotations": {"keep": "1"},
        },
        "stringData": {"password": "tenant-secret"},
    }
    _apply(plane, [secret])
    path = f"/api/v1/namespaces/{ns}/secrets/tenant"

    def patch(body: dict[str, Any], who: str | None = token) -> tuple[int, str]:
        return _request(plane, who, "PATCH", path, body)

    last: list[tuple[int, str]] = []

    def denied() -> bool:
        last[:] = [patch({"metadata": {"labels": {"probe": uuid.uuid4().hex[:8]}}})]
        return last[0][0] == 403 and SECRET_POLICY_MESSAGE in last[0][1]

    try:
        wait_until("the policy denies a label change on a Secret", denied, 60, 0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: last answer {last}") from None
    released = {"metadata": {"annotations": {"ojs.openjobspec.dev/released": "2026-12-05T10:00:00Z test"}}}
    status, body = patch(released)
    assert status == 200, body
    status, body = patch({"metadata": {"annotations": {"ojs.openjobspec.dev/released": None}}})
    assert status == 200, body
    for change in (
        {"data": {"password": "cmV3cml0dGVu"}},
        {"stringData": {"password": "rewritten"}},
        {"data": {"extra": "eA=="}},
        {"metadata": {"annotations": {"keep": "2"}}},
        {"metadata": {"annotations": {"new": "x"}}},
    ):
        status, body = patch(change)
        assert status == 403, (change, status, body)
        assert SECRET_POLICY_MESSAGE in body, body
    live = json.loads(plane.kubectl("get", "secret", "-n", ns, "tenant", "-o", "json").stdout)
    assert live["data"] == {"password": "dGVuYW50LXNlY3JldA=="}
    # Control: another user's identical change is not judged by the policy.
    status, body = patch({"metadata": {"annotations": {"keep": "admin"}}}, None)
    assert status == 200, body
