"""Every metric the shipped alerts (hack/gen_alerts.py) and dashboards (hack/gen_dashboards.py) read is
exported by a running operator, and the series the alerts added carry the values the rules assume.

The operator runs with leader election, one OJSCluster is healthy and has an autoscaling OJSWorker
pushed to its maxReplicas by the OJS double's queue, and a second cluster's server answers 500, so the
workload series (queue depth, scaling, stats errors) exist before /metrics is read.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from tests.e2e.helpers import (
    OperatorProcess,
    driver,
    missing_tool,
    namespace,
    ojs_cluster,
    ojs_worker,
    replicas,
    start_ojsctrl,
    wait_until,
)
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.ojs import keyed_ojs_server
from tests.ojsserver.server import OJSTestServer

ROOT = Path(__file__).resolve().parents[3]
OJS_URL = "/{namespace}/{name}"
# Metrics a rule reads that the Prometheus server makes, not the operator.
FROM_PROMETHEUS = frozenset({"up"})
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
CHART = ROOT / "deploy" / "helm" / "ojs-operator"


def _hack(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hack_{name}", ROOT / "hack" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def metrics_read_by_rules() -> set[str]:
    gen = _hack("gen_alerts")
    return {n for a in gen.alerts() for n in gen.metric_names(a.expr)} - FROM_PROMETHEUS


def metrics_read_by_dashboards() -> set[str]:
    gen = _hack("gen_dashboards")
    names = {n for exprs in gen.exprs().values() for e in exprs for n in _hack("gen_alerts").metric_names(e)}
    return names - gen.KUBE_STATE_METRICS


@pytest.fixture(scope="module")
def ojs_server(crds: ControlPlane) -> Iterator[OJSTestServer]:
    server = keyed_ojs_server(driver(crds))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    lease_ns = namespace(crds, "alert-lease")
    op = start_ojsctrl(
        crds,
        ojs_server.base_url + OJS_URL,
        "--leader-elect",
        "--leader-election-namespace",
        lease_ns,
        name="ojsctrl-alert-metrics",
    )
    yield op
    op.stop()


def _samples(op: OperatorProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(op.metrics()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _value(op: OperatorProcess, name: str, **labels: str) -> float | None:
    for got, value in _samples(op).get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def test_the_rules_and_dashboards_name_metrics(crds: ControlPlane) -> None:
    """The lists below are not empty by accident (a broken name extraction would pass the next test)."""
    rules = metrics_read_by_rules()
    assert {"ojs_worker_max_replicas", "leader_election_master_status", "workqueue_depth"} <= rules
    assert len(rules) == 13
    assert {"controller_runtime_reconcile_time_seconds_bucket", "ojs_cluster_queue_depth"} <= (
        metrics_read_by_dashboards()
    )


def test_every_metric_a_rule_or_dashboard_reads_is_exported(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "alertm")
    broken_ns = namespace(crds, "alertm-500")
    queue = f"q-{ns}"
    ojs_server.fail.paths = (f"/{broken_ns}/",)
    ojs_server.fail.status_500 = True
    try:
        client.create(OJSCLUSTERS, ojs_cluster(ns, "jobs", {"backend": {"type": "lite"}}), ns)
        client.create(OJSCLUSTERS, ojs_cluster(broken_ns, "jobs", {"backend": {"type": "lite"}}), broken_ns)
        worker = {
            "clusterRef": "jobs",
            "jobTypes": ["t.run"],
            "queues": [queue],
            "image": "example.invalid/w:1",
            "replicas": 1,
            "autoScaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetJobsPerWorker": 10,
                "pollingInterval": "1s",
            },
        }
        client.create(OJSWORKERS, ojs_worker(ns, "scaler", worker), ns)
        ojs_server.set_queue(queue, available=95, active=0)

        wait_until("the worker at maxReplicas", lambda: replicas(client, ns, "scaler-worker") == 3, 60)
        # The alert on a worker at its ceiling reads these three; their values are what the rule assumes.
        wait_until(
            "the worker's scaling series",
            lambda: (
                _value(operator, "ojs_worker_desired_replicas", namespace=ns, worker="scaler") == 3
                and _value(operator, "ojs_worker_max_replicas", namespace=ns, worker="scaler") == 3
                and _value(operator, "ojs_worker_queue_backlog", namespace=ns, worker="scaler") == 95
            ),
            30,
        )
        wait_until(
            "a failed poll of the broken cluster",
            lambda: (
                (_value(operator, "ojs_queue_stats_errors_total", namespace=broken_ns, cluster="jobs") or 0)
                >= 1
            ),
            60,
        )
        wait_until(
            "a successful poll of the healthy one",
            lambda: (
                _value(
                    operator, "ojs_queue_stats_last_success_timestamp_seconds", namespace=ns, cluster="jobs"
                )
                is not None
            ),
            30,
        )
        wait_until(
            "the phases of both kinds",
            lambda: (
                _value(operator, "ojs_cluster_phase", namespace=ns, cluster="jobs") is not None
                and _value(operator, "ojs_worker_phase", namespace=ns, worker="scaler") is not None
            ),
            30,
        )
        wait_until("the leader", lambda: _value(operator, "leader_election_master_status") == 1, 30)

        samples = _samples(operator)
        exported = set(samples)
        missing_for_rules = metrics_read_by_rules() - exported
        missing_for_dashboards = metrics_read_by_dashboards() - exported
        assert not missing_for_rules, f"rules read metrics the operator does not export: {missing_for_rules}"
        assert not missing_for_dashboards, f"dashboards read unexported metrics: {missing_for_dashboards}"

        # The last successful read is a Unix time (the rule subtracts it from time()).
        ((_, stamp),) = [
            (labels, v)
            for labels, v in samples["ojs_queue_stats_last_success_timestamp_seconds"]
            if labels == {"namespace": ns, "cluster": "jobs"}
        ]
        assert abs(time.time() - stamp) < 60
        # One phase series per object, so `phase="Degraded" == 1` means "Degraded now".
        for name, key in (("ojs_cluster_phase", "cluster"), ("ojs_worker_phase", "worker")):
            own = [labels for labels, _ in samples[name] if labels["namespace"] == ns]
            assert len(own) == 1, own
            assert own[0][key] in ("jobs", "scaler")
    finally:
        ojs_server.fail.status_500 = False
        ojs_server.fail.paths = ()
        ojs_server.remove_queue(queue)

    # Deleting the objects removes their series (bounded /metrics under churn).
    client.delete(OJSWORKERS, "scaler", ns)
    client.delete(OJSCLUSTERS, "jobs", ns)
    wait_until(
        "the deleted objects' alert series gone",
        lambda: (
            not any(
                labels.get("namespace") == ns
                for name in (
                    "ojs_worker_phase",
                    "ojs_worker_max_replicas",
                    "ojs_worker_queue_backlog",
                    "ojs_cluster_phase",
                    "ojs_queue_stats_last_success_timestamp_seconds",
                )
                for labels, _ in _samples(operator).get(name, [])
            )
        ),
        60,
    )


def _prometheusrule_crd() -> Path:
    """The PrometheusRule CRD of the pinned prometheus-operator release (its module is in the Go module
    cache: the control-plane build fetched it for the ServiceMonitor CRD)."""

    go = shutil.which("go")
    if go is None:
        missing_tool("go is not installed (the control-plane build brings it)")
    version = binaries.versions()["PROMETHEUS_OPERATOR_VERSION"]
    out = subprocess.run(
        [str(go), "mod", "download", "-json", f"{PROMETHEUS_OPERATOR_MODULE}@{version}"],
        capture_output=True, text=True, check=False, timeout=600, cwd=tempfile.gettempdir(),
        env={**os.environ, "GOFLAGS": ""},
    )  # fmt: skip
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        missing_tool(f"prometheus-operator {version} not in the Go module cache: {out.stderr[:300]}")
    return (
        Path(info["Dir"])
        / "example"
        / "prometheus-operator-crd"
        / "monitoring.coreos.com_prometheusrules.yaml"
    )


def test_the_api_server_accepts_the_prometheusrules(crds: ControlPlane, tmp_path: Path) -> None:
    """The kustomize and Helm PrometheusRules pass the real CRD's schema (server-side dry run), which
    refuses a malformed one."""

    crd = _prometheusrule_crd()
    crds.kubectl("apply", "--server-side", "-f", str(crd))
    try:
        crds.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))
        crds.kubectl("create", "namespace", "ojs-system", check=False)
        kustomize = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
        crds.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(kustomize))

        ns = namespace(crds, "alert-helm")
        rendered = subprocess.run(
            [str(binaries.bin_dir() / "helm"), "template", "ojs-operator", str(CHART),
             "-n", ns, "--kube-version", "1.37.0", "--set", "prometheusRule.enabled=true",
             "--show-only", "templates/prometheusrule.yaml"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
        helm_file = tmp_path / "helm-rule.yaml"
        helm_file.write_text(rendered)
        crds.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(helm_file))

        broken = yaml.safe_load(kustomize.read_text())
        broken["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
        broken_file = tmp_path / "broken.yaml"
        broken_file.write_text(yaml.safe_dump(broken))
        refused = crds.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", str(broken_file), check=False
        )
        assert refused.returncode != 0, "a rule with `for: five minutes` was accepted"
        assert "spec.groups[0].rules[0].for" in refused.stderr, refused.stderr
    finally:
        crds.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(crd), check=False)
