"""What a user types: the real kubectl against the real control plane and the real operator.

Short names `ojs` and `ojsw` work for every verb, the category `openjobspec` lists both kinds, `kubectl scale
ojs` goes through the OJSCluster scale subresource (design.md §kubectl), a cross-namespace clusterRef is
refused by the API server itself (design.md §cluster-ref), and an object in Error still shows its
Deployment's pods in REPLICAS/READY.
The operator runs without its webhook here: every refusal below comes from the CRD (schema and CEL).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import DEPLOYMENTS, Client
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import (
    cond,
    driver,
    get,
    namespace,
    ojs_cluster,
    ojs_worker,
    phase,
    replicas,
    status_of,
    wait_until,
    wcond,
    wstatus,
)
from tests.harness.operator import OperatorProcess, start_ojsctrl
from tests.ojsserver.server import OJSTestServer

SHARED_NAMESPACE = "workers and clusters share a namespace"


@pytest.fixture(scope="module")
def ojs_server() -> Iterator[OJSTestServer]:
    server = OJSTestServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    op = start_ojsctrl(crds, ojs_server.base_url + "/{namespace}/{name}", name="ojsctrl-kubectl")
    yield op
    op.stop()


def kubectl(plane: ControlPlane, *args: str, ok: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = plane.kubectl(*args, check=False, **kw)
    if ok:
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out


def columns(table: str, name: str) -> dict[str, str]:
    """The row of object ``name`` in kubectl's table output, by column header. Headers may hold a space
    ("QUEUE DEPTH"); kubectl pads columns with at least three, so a column starts after two or more spaces,
    and a row is cut at the offsets where the header's columns start (an empty cell stays empty)."""
    header, *rows = [line for line in table.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    for row in rows:
        cells = [row[a:b].strip() for a, b in bounds]
        if cells[0] == name or cells[0].endswith(f"/{name}"):
            return dict(zip(names, cells, strict=True))
    raise AssertionError(f"{name} not in\n{table}")


def redis_cluster(client: Client, ns: str, name: str, **spec: Any) -> None:
    body = {"backend": {"type": "redis", "url": "redis://redis.example.invalid:6379"}, "replicas": 2, **spec}
    client.create(OJSCLUSTERS, ojs_cluster(ns, name, body), ns)


def worker(client: Client, ns: str, name: str, cluster: str, **spec: Any) -> None:
    body = {"clusterRef": cluster, "jobTypes": ["t.run"], "image": "example.invalid/w:1", **spec}
    client.create(OJSWORKERS, ojs_worker(ns, name, body), ns)


def running(client: Client, ns: str, cluster: str, workers: tuple[str, ...] = ()) -> None:
    wait_until(f"{cluster} Running", lambda: phase(client, ns, cluster) == "Running", 120)
    for w in workers:
        wait_until(f"{w} Running", lambda w=w: wstatus(client, ns, w).get("phase") == "Running", 120)


def test_short_names_and_the_category_work_for_every_verb(
    crds: ControlPlane, operator: OperatorProcess, tmp_path: Path
) -> None:
    client = driver(crds)
    ns = namespace(crds, "names")
    redis_cluster(client, ns, "jobs")
    worker(client, ns, "mailer", "jobs")
    running(client, ns, "jobs", ("mailer",))

    got = kubectl(crds, "get", "ojs", "jobs", "-n", ns).stdout
    row = columns(got, "jobs")
    assert (row["BACKEND"], row["REPLICAS"], row["READY"], row["PHASE"]) == ("redis", "2", "2", "Running")
    got = kubectl(crds, "get", "ojsw", "mailer", "-n", ns).stdout
    row = columns(got, "mailer")
    assert (row["CLUSTER"], row["REPLICAS"], row["READY"], row["PHASE"]) == ("jobs", "1", "1", "Running")

    # The category lists both kinds, across namespaces too.
    for scope in (["-n", ns], ["-A"]):
        listed = kubectl(crds, "get", "openjobspec", *scope, "-o", "name").stdout.split()
        assert "ojscluster.ojs.openjobspec.dev/jobs" in listed, listed
        assert "ojsworker.ojs.openjobspec.dev/mailer" in listed, listed
    both = kubectl(crds, "get", "openjobspec", "-A").stdout
    assert "ojscluster.ojs.openjobspec.dev/jobs" in both and "ojsworker.ojs.openjobspec.dev/mailer" in both
    # `make run` prints these to follow the objects: kubectl watches one kind at a time.
    for short, kind in (("ojs", "jobs"), ("ojsw", "mailer")):
        watch = subprocess.Popen(
            [str(crds.bin / "kubectl"), "--kubeconfig", str(crds.kubeconfig), "get", short, "-n", ns, "-w"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(3)
            assert watch.poll() is None, watch.communicate()
        finally:
            watch.terminate()
            watched, errors = watch.communicate(timeout=10)
        assert columns(watched, kind)["PHASE"] == "Running" and errors == ""

    described = kubectl(crds, "describe", "ojs", "jobs", "-n", ns).stdout
    assert "Kind:         OJSCluster" in described and "Name:         jobs" in described
    described = kubectl(crds, "describe", "ojsw", "mailer", "-n", ns).stdout
    assert "Kind:         OJSWorker" in described and "Name:         mailer" in described

    # kubectl edit with an editor that adds a label, as a user's editor would.
    editor = tmp_path / "editor.py"
    editor.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "p = sys.argv[1]\n"
        "s = open(p).read()\n"
        "s = s.replace('\\nmetadata:\\n', '\\nmetadata:\\n  labels:\\n    edited: \"yes\"\\n', 1)\n"
        "open(p, 'w').write(s)\n",
        encoding="utf-8",
    )
    editor.chmod(0o755)
    for short, res, name in (("ojs", OJSCLUSTERS, "jobs"), ("ojsw", OJSWORKERS, "mailer")):
        edited = subprocess.run(
            [str(crds.bin / "kubectl"), "--kubeconfig", str(crds.kubeconfig), "edit", short, name, "-n", ns],
            env={**os.environ, "KUBE_EDITOR": str(editor)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert edited.returncode == 0, edited.stderr
        assert client.get(res, name, ns)["metadata"]["labels"] == {"edited": "yes"}

    kubectl(crds, "delete", "ojsw", "mailer", "-n", ns, "--wait=true")
    kubectl(crds, "delete", "ojs", "jobs", "-n", ns, "--wait=true")
    assert get(client, OJSWORKERS, ns, "mailer") is None
    assert get(client, OJSCLUSTERS, ns, "jobs") is None


def test_kubectl_scale_ojs_scales_the_servers(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "scale")
    redis_cluster(client, ns, "jobs")
    running(client, ns, "jobs")
    assert status_of(get(client, OJSCLUSTERS, ns, "jobs"))["selector"] == (
        "app.kubernetes.io/component=server,app.kubernetes.io/instance=jobs,app.kubernetes.io/name=ojs-server"
    )
    assert cond(client, ns, "jobs", "Autoscaling")["reason"] == "Disabled"

    out = kubectl(crds, "scale", "ojs", "jobs", "--replicas=3", "-n", ns).stdout
    assert "scaled" in out
    wait_until("server Deployment at 3", lambda: replicas(client, ns, "jobs-server") == 3, 60)
    wait_until(
        "status at 3 ready",
        lambda: status_of(get(client, OJSCLUSTERS, ns, "jobs")).get("readyReplicas") == 3,
        90,
    )
    scale = json.loads(kubectl(crds, "get", "--raw", f"/apis/ojs.openjobspec.dev/v1alpha1/namespaces/{ns}"
                               "/ojsclusters/jobs/scale").stdout)  # fmt: skip
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "app.kubernetes.io/instance=jobs" in scale["status"]["selector"]
    row = columns(kubectl(crds, "get", "ojs", "jobs", "-n", ns).stdout, "jobs")
    assert (row["REPLICAS"], row["READY"]) == ("3", "3")


def test_kubectl_scale_of_an_autoscaled_cluster_only_changes_the_start(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "autoscaled")
    redis_cluster(client, ns, "jobs", autoScaling={"enabled": True, "minReplicas": 1, "maxReplicas": 4})

    def held() -> bool:
        dep = get(client, DEPLOYMENTS, ns, "jobs-server") or {}
        return (dep.get("metadata", {}).get("annotations") or {}).get(
            "ojs.openjobspec.dev/autoscaler"
        ) == "true"

    wait_until("the autoscaler holds the replicas", held, 60)
    before = replicas(client, ns, "jobs-server")
    kubectl(crds, "scale", "ojs", "jobs", "--replicas=4", "-n", ns)
    wait_until(
        "Autoscaling says spec.replicas is ignored",
        lambda: "spec.replicas 4 is ignored" in cond(client, ns, "jobs", "Autoscaling").get("message", ""),
        30,
    )
    assert cond(client, ns, "jobs", "Autoscaling")["status"] == "True"
    time.sleep(3)
    assert replicas(client, ns, "jobs-server") == before != 4


def test_a_lite_cluster_is_not_scaled_past_one(crds: ControlPlane) -> None:
    client = driver(crds)
    ns = namespace(crds, "lite")
    client.create(OJSCLUSTERS, ojs_cluster(ns, "tiny", {"backend": {"type": "lite"}}), ns)
    out = kubectl(crds, "scale", "ojs", "tiny", "--replicas=2", "-n", ns, ok=False)
    assert out.returncode != 0
    assert "a lite backend keeps its state in-process: replicas must be 1" in out.stderr, out.stderr
    assert "replicas" not in client.get(OJSCLUSTERS, "tiny", ns)["spec"]


def test_cross_namespace_cluster_ref_is_refused_by_the_api_server(crds: ControlPlane) -> None:
    ns = namespace(crds, "xref")
    doc = ojs_worker(
        ns,
        "stuck",
        {"clusterRef": "ojs-system/ojs-production", "jobTypes": ["a"], "image": "example.invalid/w:1"},
    )
    out = kubectl(crds, "apply", "-f", "-", input=json.dumps(doc), ok=False)
    assert out.returncode != 0
    assert "spec.clusterRef" in out.stderr and SHARED_NAMESPACE in out.stderr, out.stderr
    assert get(driver(crds), OJSWORKERS, ns, "stuck") is None


def test_objects_in_error_still_show_their_running_pods(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "error")
    redis_cluster(client, ns, "jobs")
    worker(client, ns, "busy", "jobs", replicas=2)
    running(client, ns, "jobs", ("busy",))

    # An invalid spec only Python sees (the webhook is off): Error, the Deployments keep running.
    bad_labels = {"spec": {"podLabels": {"not a label key": "x"}}}
    client.patch(OJSCLUSTERS, "jobs", bad_labels, ns)
    client.patch(OJSWORKERS, "busy", bad_labels, ns)
    wait_until("cluster Error", lambda: phase(client, ns, "jobs") == "Error", 30)
    wait_until("worker Error", lambda: wstatus(client, ns, "busy").get("phase") == "Error", 30)
    assert cond(client, ns, "jobs", "Ready")["reason"] == "InvalidSpec"
    assert wcond(client, ns, "busy", "Ready")["reason"] == "InvalidSpec"
    row = columns(kubectl(crds, "get", "ojs", "jobs", "-n", ns).stdout, "jobs")
    assert (row["REPLICAS"], row["READY"], row["PHASE"]) == ("2", "2", "Error")
    row = columns(kubectl(crds, "get", "ojsw", "busy", "-n", ns).stdout, "busy")
    assert (row["REPLICAS"], row["READY"], row["PHASE"]) == ("2", "2", "Error")

    # The cluster gone: the worker is in Error (ClusterNotFound) and its Deployment still runs.
    client.patch(OJSWORKERS, "busy", {"spec": {"podLabels": None}}, ns)
    wait_until("worker Running again", lambda: wstatus(client, ns, "busy").get("phase") == "Running", 60)
    client.delete(OJSCLUSTERS, "jobs", ns)
    wait_until(
        "ClusterNotFound", lambda: wcond(client, ns, "busy", "ClusterFound").get("status") == "False", 30
    )
    assert get(client, DEPLOYMENTS, ns, "busy-worker") is not None
    row = columns(kubectl(crds, "get", "ojsw", "busy", "-n", ns).stdout, "busy")
    assert (row["REPLICAS"], row["READY"], row["PHASE"]) == ("2", "2", "Error")
