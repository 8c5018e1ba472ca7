"""``kubectl ojs`` against the real control plane and the real operator: ``status -A`` through kubectl's
own plugin discovery (text and JSON), ``explain-scaling`` from the status the operator wrote,
``pause``/``resume`` writing only the annotations, and a ``report`` with planted secrets that must not
leave in it.

With ``OJSCTRL_PLUGIN_CAPTURE=<file>`` the text of ``kubectl ojs status -A`` is also written there (the
capture in docs/kubectl-ojs.md comes from it).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import DEPLOYMENTS, PODS, SECRETS
from tests.e2e.helpers import (
    OperatorProcess,
    cluster_api_key,
    create,
    driver,
    foreign_deployment,
    has_event,
    namespace,
    ojs_cluster,
    ojs_worker,
    phase,
    sample,
    secret,
    start_ojsctrl,
    wait_until,
    wstatus,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.ojs import keyed_ojs_server
from tests.ojsserver.server import OJSTestServer

PAUSED = "ojs.openjobspec.dev/autoscaling-paused"
PAUSED_REPLICAS = "ojs.openjobspec.dev/paused-replicas"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ojs_server(crds: ControlPlane) -> Iterator[OJSTestServer]:
    server = keyed_ojs_server(driver(crds))
    server.set_queue("emails", available=40, active=3)
    server.set_queue("data-processing", available=7, active=1)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    op = start_ojsctrl(crds, ojs_server.base_url + "/{namespace}/{name}", name="ojsctrl-plugin")
    yield op
    op.stop()


@pytest.fixture(scope="module")
def samples(crds: ControlPlane, operator: OperatorProcess) -> str:
    """The README samples (a cluster with two workers, a minimal cluster) and a worker whose cluster is
    missing (a Warning event), Running in a namespace of their own."""
    client = driver(crds)
    ns = namespace(crds, "ojs-samples")
    for doc in [*sample("readme-multi-worker.yaml"), *sample("readme-minimal-cluster.yaml")]:
        create(client, doc, ns)
    client.create(
        OJSWORKERS,
        ojs_worker(ns, "orphan", {"clusterRef": "ojs-gone", "jobTypes": ["x"], "image": "example/w:1"}),
        ns,
    )
    for name in ("ojs-multi", "ojs-minimal"):
        wait_until(f"{name} Running", lambda n=name: phase(client, ns, n) == "Running", 120)
    for name in ("email-worker", "data-processor"):
        wait_until(f"{name} Running", lambda n=name: wstatus(client, ns, n).get("phase") == "Running", 120)
    # 40 waiting + 3 active at 5 jobs per worker: the autoscaler settles on 9.
    wait_until(
        "email-worker desires 9", lambda: wstatus(client, ns, "email-worker").get("desiredReplicas") == 9, 90
    )
    wait_until(
        "email-worker at 9 ready", lambda: wstatus(client, ns, "email-worker").get("readyReplicas") == 9, 90
    )
    wait_until(
        "ClusterNotFound",
        lambda: has_event(client, ns, "OJSWorker", "orphan", "ClusterNotFound", "Warning"),
        60,
    )
    return ns


def plugin(plane: ControlPlane, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``kubectl-ojs`` as installed by the wheel, with the plane's kubeconfig."""
    out = subprocess.run(
        [str(BIN / "kubectl-ojs"), *args, "--kubeconfig", str(plane.kubeconfig)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
    )
    if ok:
        assert out.returncode == 0, f"kubectl-ojs {' '.join(args)}: {out.stderr}"
    return out


def cluster_of(view: dict[str, Any], ns: str, name: str) -> dict[str, Any]:
    return next(c for c in view["clusters"] if c["namespace"] == ns and c["name"] == name)


def test_status_all_namespaces_through_kubectl(crds: ControlPlane, samples: str) -> None:
    ns = samples
    client = driver(crds)
    api_key = cluster_api_key(client, ns, "ojs-multi")
    # kubectl finds the plugin on PATH and hands it the rest; the kubeconfig comes from $KUBECONFIG.
    env = {**os.environ, "KUBECONFIG": str(crds.kubeconfig), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("NO_COLOR", None)
    run = subprocess.run(
        [str(crds.bin / "kubectl"), "ojs", "status", "-A"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    if os.environ.get("OJSCTRL_PLUGIN_CAPTURE"):
        Path(os.environ["OJSCTRL_PLUGIN_CAPTURE"]).write_text(f"$ kubectl ojs status -A\n{out}")
    assert "\033[" not in out, "no colour when stdout is not a terminal"
    assert out.startswith("Operator: "), "the operator comes first (here it runs outside the plane)"
    assert f"OJSCluster {ns}/ojs-multi: Running" in out
    assert f"OJSCluster {ns}/ojs-minimal: Running" in out
    assert "Secret ojs-multi-api-key, key api-key (generated by the operator; Secret present)" in out
    assert api_key not in out
    # The busiest queue of ojs-multi, then the workers with their autoscaler's reason.
    section = out.split(f"OJSCluster {ns}/ojs-multi:")[1].split("OJSCluster ")[0]
    queue_rows = [
        line.split() for line in section.splitlines() if line.strip().startswith(("emails", "data-proc"))
    ]
    assert queue_rows[:2] == [["emails", "40", "3"], ["data-processing", "7", "1"]]
    email_row = next(line.split() for line in section.splitlines() if line.strip().startswith("email-worker"))
    assert email_row[:5] == ["email-worker", "Running", "9/9", "9", "queueDepth"]
    processor_row = next(
        line.split() for line in section.splitlines() if line.strip().startswith("data-processor")
    )
    assert processor_row[:5] == ["data-processor", "Running", "3/3", "3", "manual"]
    assert "autoscaler: " in section
    assert f"{ns}/orphan -> OJSCluster ojs-gone" in out
    warnings = out.split("Recent Warning events:")[1]
    assert f"{ns}/OJSWorker/orphan" in warnings and "ClusterNotFound" in warnings

    # The same as JSON, -A after the command and the namespace flags anywhere.
    view = json.loads(plugin(crds, "status", "-A", "-o", "json").stdout)
    multi = cluster_of(view, ns, "ojs-multi")
    assert multi["phase"] == "Running"
    assert multi["backend"] == {"type": "redis", "source": "embedded"}
    assert multi["servers"] == {"replicas": 2, "ready": 2}
    assert multi["endpoint"] == f"http://ojs-multi-server.{ns}.svc.cluster.local:8080"
    assert multi["busiestQueues"][0] == {"name": "emails", "depth": 40, "active": 3}
    assert multi["auth"] == {
        "disabled": False,
        "secret": "ojs-multi-api-key",
        "key": "api-key",
        "generated": True,
        "secretExists": True,
    }
    assert multi["unhealthyConditions"] == []
    workers = {w["name"]: w for w in multi["workers"]}
    assert set(workers) == {"email-worker", "data-processor"}
    assert workers["email-worker"]["mode"] == "queueDepth"
    assert workers["email-worker"]["desiredReplicas"] == 9
    assert workers["email-worker"]["lastScaleTime"]
    assert workers["data-processor"]["mode"] == "manual"
    orphan = next(w for w in view["workersWithoutCluster"] if w["namespace"] == ns)
    assert orphan["name"] == "orphan"
    assert {c["reason"] for c in orphan["unhealthyConditions"]} >= {"ClusterNotFound"}
    assert any(
        e["reason"] == "ClusterNotFound" and e["object"] == "OJSWorker/orphan" for e in view["warningEvents"]
    )

    # One cluster by name, in its namespace; a missing one is an error naming it.
    one = yaml.safe_load(plugin(crds, "status", "ojs-minimal", "-n", ns, "-o", "yaml").stdout)
    assert [c["name"] for c in one["clusters"]] == ["ojs-minimal"] and one["clusters"][0]["workers"] == []
    missing = plugin(crds, "status", "nope", "-n", ns, ok=False)
    assert missing.returncode == 1 and 'OJSCluster "nope" not found' in missing.stderr


def test_explain_scaling(crds: ControlPlane, samples: str) -> None:
    ns = samples
    out = plugin(crds, "-n", ns, "explain-scaling", "email-worker").stdout
    assert "The queues emails hold 40 waiting + 3 active = 43 jobs." in out
    assert "ceil(43/5) = 9 pods, within 1..10: 9." in out
    assert "Decided: 9 replicas; the Deployment has 9, 9 ready." in out
    assert "Condition Autoscaling=True" in out
    view = json.loads(plugin(crds, "explain-scaling", "email-worker", "-n", ns, "-o", "json").stdout)
    assert (view["mode"], view["queueDepth"], view["activeJobs"], view["desiredReplicas"]) == (
        "queueDepth",
        40,
        3,
        9,
    )
    assert view["targetJobsPerWorker"] == 5
    # The operator explains its decision in status.autoscaling; queueDepth's inputs are the counts.
    assert view["autoscaling"]["metric"] == "queueDepth" and view["autoscaling"]["desiredReplicas"] == 9
    assert view["autoscaling"]["inputs"] == {"depth": 40, "active": 3}
    manual = plugin(crds, "explain-scaling", "data-processor", "-n", ns).stdout
    assert "Autoscaling is off: the workers run spec.replicas (3)" in manual


def test_pause_and_resume_write_only_the_annotations(crds: ControlPlane, samples: str) -> None:
    ns = samples
    client = driver(crds)
    before = client.get(OJSWORKERS, "email-worker", ns)
    started = dt.datetime.now(dt.UTC)
    out = json.loads(
        plugin(
            crds, "pause", "email-worker", "-n", ns, "--for", "30m", "--replicas", "2", "-o", "json"
        ).stdout
    )
    after = client.get(OJSWORKERS, "email-worker", ns)
    ann = after["metadata"].get("annotations") or {}
    until = dt.datetime.fromisoformat(ann[PAUSED].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=29) < until - started < dt.timedelta(minutes=31)
    assert ann[PAUSED_REPLICAS] == "2"
    assert out["annotations"] == {PAUSED: ann[PAUSED], PAUSED_REPLICAS: "2"}
    # Nothing else changed: same spec (generation), labels and other annotations.
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    others = {k: v for k, v in ann.items() if k not in (PAUSED, PAUSED_REPLICAS)}
    assert others == (before["metadata"].get("annotations") or {})
    status = json.loads(plugin(crds, "status", "ojs-multi", "-n", ns, "-o", "json").stdout)
    pause = next(w for w in cluster_of(status, ns, "ojs-multi")["workers"] if w["name"] == "email-worker")[
        "pause"
    ]
    assert pause == {"annotation": ann[PAUSED], "until": ann[PAUSED], "expired": False, "replicas": 2}

    # Indefinitely, without --replicas: the earlier paused-replicas goes.
    plugin(crds, "pause", "email-worker", "-n", ns)
    ann = client.get(OJSWORKERS, "email-worker", ns)["metadata"]["annotations"]
    assert ann[PAUSED] == "true" and PAUSED_REPLICAS not in ann
    assert (
        "Autoscaling is paused until resumed"
        in plugin(crds, "explain-scaling", "email-worker", "-n", ns).stdout
    )

    assert "pause annotations removed" in plugin(crds, "resume", "email-worker", "-n", ns).stdout
    ann = client.get(OJSWORKERS, "email-worker", ns)["metadata"].get("annotations") or {}
    assert PAUSED not in ann and PAUSED_REPLICAS not in ann

    bad = plugin(crds, "pause", "email-worker", "-n", ns, "--until", "tomorrow", ok=False)
    assert bad.returncode == 2 and "--until" in bad.stderr
    gone = plugin(crds, "pause", "nope", "-n", ns, ok=False)
    assert gone.returncode == 1 and 'OJSWorker "nope" not found' in gone.stderr


def test_report_leaks_no_planted_secret(crds: ControlPlane, samples: str, tmp_path: Path) -> None:
    client = driver(crds)
    ns = namespace(crds, "report")
    planted = {
        "secret data": "PlantedSecretData-" + secrets.token_hex(6),
        "env value": "PlantedEnvToken-" + secrets.token_hex(6),
        "url password": "PlantedUrlPw" + secrets.token_hex(6),
        "operator env": "PlantedOperatorEnv-" + secrets.token_hex(6),
    }
    # A backend URL in a Secret (its password planted), and a Secret with a plain planted value.
    client.create(
        SECRETS, secret(ns, "pg-url", {"url": f"postgres://ojs:{planted['url password']}@db:5432/ojs"}), ns
    )
    client.create(SECRETS, secret(ns, "app-secrets", {"signing": planted["secret data"]}), ns)
    client.create(
        OJSCLUSTERS,
        ojs_cluster(
            ns,
            "jobs",
            {
                "replicas": 1,
                "backend": {"type": "postgres", "urlSecretRef": {"name": "pg-url", "key": "url"}},
            },
        ),
        ns,
    )
    wait_until("jobs Running", lambda: phase(client, ns, "jobs") == "Running", 120)
    api_key = cluster_api_key(client, ns, "jobs")
    planted["api key"] = api_key
    # The API key pasted where it does not belong: only the known-values pass can catch it.
    client.patch(
        OJSCLUSTERS, "jobs", {"metadata": {"annotations": {"example.com/note": f"key is {api_key}"}}}, ns
    )
    # A worker applied client-side: its last-applied annotation copies every env value.
    worker = ojs_worker(
        ns,
        "billing",
        {
            "clusterRef": "jobs",
            "jobTypes": ["invoice"],
            "image": "example/billing:1",
            "env": [
                {"name": "PAYMENT_API_TOKEN", "value": planted["env value"]},
                {"name": "LEDGER_URL", "value": f"https://ledger:{planted['url password']}@ledger.example/x"},
                {"name": "SIGNING", "valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": "signing"}}},
            ],
        },
    )
    crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(worker))
    wait_until("billing Running", lambda: wstatus(client, ns, "billing").get("phase") == "Running", 120)
    # An operator Deployment the way the manifests label it (kwok runs its pod; it writes no logs).
    opns = namespace(crds, "opsys")
    op = foreign_deployment(
        opns,
        "ojs-operator-controller-manager",
        "ojs-operator",
        "ghcr.io/openjobspec/ojs-operator:v0.1.0",
        labels={"app.kubernetes.io/name": "ojs-operator", "app.kubernetes.io/version": "v0.1.0"},
    )
    op["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "ojs-operator"
    op["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "WEBHOOK_SECRET", "value": planted["operator env"]}
    ]
    client.create(DEPLOYMENTS, op, opns)
    wait_until(
        "the operator's pod",
        lambda: bool(client.list(PODS, opns, label_selector="app.kubernetes.io/name=ojs-operator")[0]),
        60,
    )

    path = tmp_path / "report.tar.gz"
    out = plugin(crds, "report", "-n", ns, "-o", str(path)).stdout
    assert f"wrote {path}" in out
    assert path.stat().st_mode & 0o077 == 0, "the report is readable by its owner only"
    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    blob = b"\n".join(files.values())
    for what, value in planted.items():
        for form in (value.encode(), base64.b64encode(value.encode())):
            assert form not in blob, f"the {what} leaked into the report"
    names = set(files)
    root = "ojs-report"
    for f in (
        "ojsclusters",
        "ojsworkers",
        "deployments",
        "services",
        "configmaps",
        "pods",
        "secrets",
        "events",
    ):
        assert f"{root}/namespaces/{ns}/{f}.yaml" in names, f
    assert f"{root}/operator/{opns}/deployments.yaml" in names
    assert b"ghcr.io/openjobspec/ojs-operator:v0.1.0" in files[f"{root}/operator/version.txt"]

    def items(name: str) -> list[dict[str, Any]]:
        return list(yaml.safe_load(files[f"{root}/namespaces/{ns}/{name}.yaml"])["items"])

    secret_docs = {s["metadata"]["name"]: s for s in items("secrets")}
    assert set(secret_docs) >= {"pg-url", "jobs-api-key", "app-secrets"}
    assert secret_docs["pg-url"]["data"] == {"url": "<redacted>"}
    assert secret_docs["jobs-api-key"]["data"] == {"api-key": "<redacted>"}
    w = next(o for o in items("ojsworkers") if o["metadata"]["name"] == "billing")
    env = {e["name"]: e for e in w["spec"]["env"]}
    assert env["PAYMENT_API_TOKEN"]["value"] == "<redacted>"
    assert env["LEDGER_URL"]["value"] == "https://ledger:<redacted>@ledger.example/x"
    assert env["SIGNING"]["valueFrom"]["secretKeyRef"] == {"name": "app-secrets", "key": "signing"}
    assert w["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == "<redacted>"
    c = next(o for o in items("ojsclusters") if o["metadata"]["name"] == "jobs")
    assert c["metadata"]["annotations"]["example.com/note"] == "key is <redacted>"
    assert c["status"]["phase"] == "Running"
    deps = {d["metadata"]["name"] for d in items("deployments")}
    assert {"jobs-server", "billing-worker"} <= deps
    pods = [p for p in items("pods") if p["metadata"]["name"].startswith("billing-worker-")]
    assert pods, "the worker's pods are in the report"
    pod_env = {e["name"]: e for e in pods[0]["spec"]["containers"][0]["env"]}
    assert pod_env["PAYMENT_API_TOKEN"]["value"] == "<redacted>"
    # What could not be read is said, not hidden: kwok pods serve no logs.
    assert b"logs of pod" in files[f"{root}/errors.txt"]

    # status shows the operator's Deployment too (image, version label).
    view = json.loads(plugin(crds, "status", "-A", "-o", "json").stdout)
    mine = [d for d in view["operator"]["deployments"] if d["namespace"] == opns]
    assert (
        mine
        and mine[0]["image"] == "ghcr.io/openjobspec/ojs-operator:v0.1.0"
        and mine[0]["version"] == "v0.1.0"
    )
