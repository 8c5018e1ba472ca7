"""The kubectl way: `make install` / `make deploy` (server-side apply, after a `--dry-run=server` of the same
objects) and `make undeploy` / `make uninstall`; the manager's pod spec is admitted in a namespace
enforcing the `restricted` Pod Security Standard.

Conventions of the delivery tests: tests/e2e/delivery/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.harness.controlplane import ControlPlane
from tests.harness.delivery import (
    CRD_NAMES,
    DEPLOYMENT,
    WEBHOOK_CONFIG,
    docs,
    inert_webhooks,
    kustomize_output,
    make,
    restricted_namespace,
    run,
    tool,
)
from tests.harness.kube import ROOT, wait_until
from tests.harness.serviceaccount import NAMESPACE, SERVICE_ACCOUNT, exists

NUDGE = "ojs.openjobspec.dev/uninstall-requested"  # hack/uninstall-crds.sh's annotation


def test_make_install_deploy_undeploy_uninstall(dplane: ControlPlane) -> None:
    make(dplane, "install")
    for crd in CRD_NAMES:
        assert exists(dplane, "crd", crd)
    # Server-side dry run of everything first (the namespace must exist for namespaced objects).
    dplane.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "default" / "namespace.yaml"))
    rendered = kustomize_output()
    dry = run(
        tool("kubectl"),
        "--kubeconfig",
        str(dplane.kubeconfig),
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=ojsctrl-install",
        "--force-conflicts",
        "-f",
        "-",
        input=rendered,
    ).stdout
    assert dry.count("(server dry run)") == len(docs(rendered))
    assert not exists(dplane, "deployment", "-n", NAMESPACE, DEPLOYMENT)

    started = time.monotonic()
    make(dplane, "deploy")  # real apply, then `kubectl rollout status`
    inert_webhooks(dplane)
    print(f"make deploy rolled out in {time.monotonic() - started:.1f}s")
    # The namespace enforces `restricted`, so the manager pod being there means it was admitted.
    ns = json.loads(dplane.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = json.loads(
        dplane.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", "control-plane=controller-manager", "-o", "json"
        ).stdout
    )["items"]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"
    for what in (
        ("clusterrole", "ojs-operator-manager-role"),
        ("clusterrolebinding", "ojs-operator-manager-rolebinding"),
        ("serviceaccount", "-n", NAMESPACE, SERVICE_ACCOUNT),
        ("service", "-n", NAMESPACE, "ojs-operator-webhook-service"),
        ("validatingwebhookconfiguration", WEBHOOK_CONFIG),
    ):
        assert exists(dplane, *what), what

    make(dplane, "undeploy")
    assert not exists(dplane, "deployment", "-n", NAMESPACE, DEPLOYMENT)
    assert not exists(dplane, "validatingadmissionpolicy", "ojs-operator-pod-deletion-cost-only")
    assert not exists(dplane, "clusterrole", "ojs-operator-manager-role")
    assert not exists(dplane, "validatingwebhookconfiguration", WEBHOOK_CONFIG)
    for crd in CRD_NAMES:  # undeploy keeps users' resources
        assert exists(dplane, "crd", crd)
    make(dplane, "uninstall")
    wait_until("CRDs removed", lambda: not any(exists(dplane, "crd", c) for c in CRD_NAMES), 60)


def test_uninstall_waits_for_the_objects_and_nudges_a_terminating_crd(dplane: ControlPlane) -> None:
    """`make uninstall` (hack/uninstall-crds.sh) returns only once the CRDs are gone. A CRD still there
    after a wait gets an annotation, an update the API server's CRD finalizer does not ignore (the
    script's header says why that matters). The annotation is accepted on a terminating CRD and the
    removal then completes. Here an object's own finalizer holds the CRD, so the wait is certain."""
    make(dplane, "install")
    ns = "uninstall-hold"
    dplane.kubectl("create", "namespace", ns)
    cluster = {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSCluster",
        "metadata": {"name": "held", "namespace": ns, "finalizers": ["ojsctrl-e2e/hold"]},
        "spec": {"backend": {"type": "redis", "embedded": True}, "replicas": 1},
    }
    dplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(cluster))
    proc = subprocess.Popen(
        ["bash", "hack/uninstall-crds.sh", tool("kubectl"), "manifests/crds"],
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(dplane.kubeconfig), "UNINSTALL_NUDGE_AFTER": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def nudged() -> bool:
            crd = json.loads(dplane.kubectl("get", "crd", CRD_NAMES[0], "-o", "json").stdout)
            meta = crd["metadata"]
            return bool(meta.get("deletionTimestamp")) and NUDGE in meta.get("annotations", {})

        wait_until("the held CRD annotated while terminating", nudged, 60)
        assert proc.poll() is None, "uninstall returned while an OJSCluster was still held"
        dplane.kubectl(
            "patch", "ojscluster", "held", "-n", ns, "--type=json",
            "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]',
        )  # fmt: skip
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert f"{CRD_NAMES[0]} is still terminating" in out, out
    assert out.rstrip().endswith("uninstall: CRDs removed"), out
    assert not any(exists(dplane, "crd", c) for c in CRD_NAMES)


# ----------------------------------------------------------------------------------------- Pod Security
def test_manager_pod_is_admitted_under_restricted(dplane: ControlPlane) -> None:
    ns = restricted_namespace(dplane, "psa")
    dep = next(o for o in docs(kustomize_output()) if o["kind"] == "Deployment")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "manager", "namespace": ns, "labels": {"ojsctrl-e2e": "psa"}},
        "spec": {**dep["spec"]["template"]["spec"], "serviceAccountName": "default"},
    }
    created = dplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(pod), check=False)
    assert created.returncode == 0, created.stderr
    assert "violate" not in created.stderr  # no Pod Security warning either
    dep["metadata"]["namespace"] = ns
    dep["spec"]["template"]["spec"]["serviceAccountName"] = "default"
    dplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(dep))
    dplane.kubectl("rollout", "status", "-n", ns, f"deployment/{DEPLOYMENT}", "--timeout=120s", timeout=150)
    # Control: the namespace really enforces it.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    refused = dplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "restricted" in refused.stderr
    dplane.kubectl("delete", "namespace", ns, "--wait=false")
