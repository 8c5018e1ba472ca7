"""Write the operator's Grafana dashboard shipped in the Helm chart (deploy/helm/ojs-operator/dashboards/).

The per-cluster dashboard an OJSCluster gets with ``monitoring.grafanaDashboard`` comes from
``ojsctrl.builders.cluster.dashboard_json``; this one watches the operator itself and every cluster at
once: reconcile rate, errors and latency per controller, work queues, leader status, queue depth per
cluster and queue, and worker replicas (desired by the autoscaler vs. running, from kube-state-metrics).

    python hack/gen_dashboards.py           # write the chart's dashboard
    python hack/gen_dashboards.py --check   # exit 1 when it is stale (a unit test runs it)

``exprs()`` lists every PromQL expression of both dashboards; tests check them with promtool and check
that the metrics they name are exported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
if str(REPO / "hack") not in sys.path:  # a test loads this file by path; as a script, hack/ is on it
    sys.path.append(str(REPO / "hack"))

from _genfile import write_or_check  # noqa: E402

OUT = REPO / "deploy" / "helm" / "ojs-operator" / "dashboards" / "ojs-operator.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'
NS = 'namespace=~"$namespace"'

# (title, unit, [(expr, legend)])
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Reconciles per second",
        "ops",
        [
            (
                f"sum by (controller, result) (rate(controller_runtime_reconcile_total{{{JOB}}}[5m]))",
                "{{controller}} {{result}}",
            )
        ],
    ),
    (
        "Reconcile errors per second",
        "ops",
        [
            (
                f"sum by (controller) (rate(controller_runtime_reconcile_errors_total{{{JOB}}}[5m]))",
                "{{controller}}",
            )
        ],
    ),
    (
        "Reconcile latency (p50, p99)",
        "s",
        [
            (
                "histogram_quantile(0.5, sum by (controller, le) "
                f"(rate(controller_runtime_reconcile_time_seconds_bucket{{{JOB}}}[5m])))",
                "p50 {{controller}}",
            ),
            (
                "histogram_quantile(0.99, sum by (controller, le) "
                f"(rate(controller_runtime_reconcile_time_seconds_bucket{{{JOB}}}[5m])))",
                "p99 {{controller}}",
            ),
        ],
    ),
    (
        "Work queue depth and retries",
        "short",
        [
            (f"sum by (name) (workqueue_depth{{{JOB}}})", "depth {{name}}"),
            (f"sum by (name) (rate(workqueue_retries_total{{{JOB}}}[5m]))", "retries/s {{name}}"),
        ],
    ),
    (
        "Leader",
        "short",
        [(f"max by (instance, name) (leader_election_master_status{{{JOB}}})", "{{instance}} {{name}}")],
    ),
    (
        "API requests per second by code",
        "ops",
        [(f"sum by (code, method) (rate(rest_client_requests_total{{{JOB}}}[5m]))", "{{method}} {{code}}")],
    ),
    (
        "Queue depth per cluster and queue",
        "short",
        [
            (
                f"sum by (namespace, cluster, queue) (ojs_cluster_queue_depth{{{NS}}})",
                "{{namespace}}/{{cluster}} {{queue}}",
            )
        ],
    ),
    (
        "Active jobs per cluster",
        "short",
        [(f"sum by (namespace, cluster) (ojs_cluster_active_jobs{{{NS}}})", "{{namespace}}/{{cluster}}")],
    ),
    (
        "Worker replicas: desired vs available",
        "short",
        [
            (
                f"sum by (namespace, worker) (ojs_worker_desired_replicas{{{NS}}})",
                "desired {{namespace}}/{{worker}}",
            ),
            (
                "sum by (namespace, deployment) (kube_deployment_status_replicas_available"
                f'{{{NS},deployment=~".+-worker"}})',
                "available {{namespace}}/{{deployment}}",
            ),
        ],
    ),
    (
        "Autoscaler decisions and queue-stats errors",
        "ops",
        [
            (f"sum by (direction) (rate(ojs_autoscaler_scale_total{{{JOB}}}[5m]))", "scale {{direction}}"),
            (
                f"sum by (namespace, cluster) (rate(ojs_queue_stats_errors_total{{{NS}}}[5m]))",
                "stats errors {{namespace}}/{{cluster}}",
            ),
        ],
    ),
]


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "refresh": 2,
        "current": {"text": "All", "value": "$__all"},
    }


def dashboard() -> dict[str, Any]:
    """The operator dashboard as a dict (deterministic)."""
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS, start=1):
        panels.append(
            {
                "id": i,
                "type": "timeseries",
                "title": title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * ((i - 1) % 2), "y": 8 * ((i - 1) // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": e, "legendFormat": legend}
                    for j, (e, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "title": "OJS operator",
        "uid": "ojs-operator",
        "tags": ["ojs", "operator"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
                _variable("job", "Operator job", "label_values(controller_runtime_reconcile_total, job)"),
                _variable("namespace", "Namespace", "label_values(ojs_cluster_queue_depth, namespace)"),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def _targets(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board.get("panels", []) for t in p.get("targets", [])]


def exprs() -> dict[str, list[str]]:
    """Every PromQL expression: the chart's dashboard, and the per-cluster one for a sample cluster."""
    from ojsctrl.api import OJSCluster
    from ojsctrl.builders.cluster import dashboard_json

    sample = OJSCluster.from_dict(
        {
            "apiVersion": "ojs.openjobspec.dev/v1alpha1",
            "kind": "OJSCluster",
            "metadata": {"name": "ojs-production", "namespace": "ojs-system", "uid": "0"},
            "spec": {
                "backend": {"type": "redis", "embedded": True},
                "monitoring": {"enabled": True, "grafanaDashboard": True},
            },
        }
    )
    return {"ojs-operator": _targets(dashboard()), "ojs-cluster": _targets(dashboard_json(sample))}


# Metrics the dashboards read that kube-state-metrics exports, not the operator.
KUBE_STATE_METRICS = frozenset({"kube_deployment_status_replicas_available"})


def main(argv: list[str] | None = None) -> int:
    return write_or_check(argv, __doc__, OUT, render, check_help="fail when the committed dashboard is stale")


if __name__ == "__main__":
    sys.exit(main())
