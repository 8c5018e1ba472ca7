"""Every metric the shipped alerts (hack/gen_alerts.py) and dashboards (hack/gen_dashboards.py) read is
exported by a running operator, and the series the alerts added carry the values the rules assume.

The operator runs with leader election, one OJSCluster is healthy and has an autoscaling OJSWorker
pushed to its maxReplicas by the OJS double's queue, and a second cluster's server answers 500, so the
workload series (queue depth, scaling, stats errors) exist before /metrics is read.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from tests.e2e.helpers import (
    ClusterKeys,
    OperatorProcess,
    driver,
    namespace,
    ojs_cluster,
    ojs_worker,
    replicas,
    start_ojsctrl,
    wait_until,
)
from tests.harness.controlplane import ControlPlane
from tests.ojsserver.server import OJSTestServer

ROOT = Path(__file__).resolve().parents[2]
OJS_URL = "/{namespace}/{name}"
# Metrics a rule reads that the Prometheus server makes, not the operator.
FROM_PROMETHEUS = frozenset({"up"})


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
    server = OJSTestServer(api_key=secrets.token_urlsafe(24))
    server.key_resolver = ClusterKeys(driver(crds))
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
