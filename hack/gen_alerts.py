"""Write the operator's Prometheus alerts: a rule file, a PrometheusRule for kustomize and the Helm template.

The rules are defined once, below, and rendered three ways:

    deploy/prometheus/ojs-operator.rules.yaml    a plain Prometheus rule file (rule_files:, promtool)
    deploy/prometheus/prometheusrule.yaml        the PrometheusRule of the kustomize component
    deploy/helm/ojs-operator/templates/prometheusrule.yaml    the chart's (prometheusRule.enabled)

Every rule reads only the series the operator scrapes under its own job: the Service the ServiceMonitor
selects, ``ojs-operator-controller-manager-metrics-service`` (the Helm template puts the release's name in).
Every alert links ``docs/runbooks/<alert>.md``; tests check the runbooks, run ``promtool test rules`` on
deploy/prometheus/tests/, and an e2e test scrapes a running operator for every metric named here.

    python hack/gen_alerts.py           # write the three files
    python hack/gen_alerts.py --check   # exit 1 when one is stale (a unit test runs it)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

RULES_FILE = REPO / "deploy" / "prometheus" / "ojs-operator.rules.yaml"
PROMETHEUSRULE = REPO / "deploy" / "prometheus" / "prometheusrule.yaml"
HELM_TEMPLATE = REPO / "deploy" / "helm" / "ojs-operator" / "templates" / "prometheusrule.yaml"
RUNBOOKS = REPO / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/openjobspec/ojs-k8s-operator/blob/main/docs/runbooks/"

# The Prometheus job of the operator's /metrics: the metrics Service's name, which a ServiceMonitor makes
# the job label. Rendered as-is for kustomize; the Helm template names the release's Service instead.
JOB = "ojs-operator-controller-manager-metrics-service"
_JOB_MARK = "__OJS_OPERATOR_JOB__"
_HELM_JOB = '{{ include "ojs-operator.fullname" . }}-controller-manager-metrics-service'
J = f'job="{_JOB_MARK}"'


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``summary`` and ``description`` may use Prometheus's ``$labels``/``$value``."""

    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str


GROUPS: list[tuple[str, list[Alert]]] = [
    (
        "ojs-operator",
        [
            Alert(
                "OJSOperatorDown",
                f"absent(up{{{J}}} == 1)",
                "5m",
                "critical",
                "The OJS operator is down or not scraped.",
                "No OJS operator target has been up for 5 minutes: OJSClusters and OJSWorkers are not "
                "reconciled or autoscaled, and with the webhook's failurePolicy Fail they cannot be changed.",
            ),
            Alert(
                "OJSOperatorNoLeader",
                f"max by (name) (leader_election_master_status{{{J}}}) < 1",
                "5m",
                "critical",
                "No OJS operator replica holds the leader lease {{ $labels.name }}.",
                "The operator runs but none of its replicas has led for 5 minutes, so nothing is reconciled.",
            ),
            Alert(
                "OJSOperatorReconcileErrors",
                f"sum by (controller) (rate(controller_runtime_reconcile_errors_total{{{J}}}[5m]))"
                f" / sum by (controller) (rate(controller_runtime_reconcile_total{{{J}}}[5m])) > 0.1",
                "15m",
                "warning",
                "The {{ $labels.controller }} controller fails {{ $value | humanizePercentage }} of its "
                "reconciles.",
                "More than 10% of the {{ $labels.controller }} controller's reconciles have ended in an "
                "error for 15 minutes.",
            ),
            Alert(
                "OJSOperatorWorkqueueBacklog",
                f"sum by (name) (workqueue_depth{{{J}}}) > 100",
                "15m",
                "warning",
                "The {{ $labels.name }} work queue holds {{ $value }} items.",
                "More than 100 objects have been waiting in the {{ $labels.name }} work queue for 15 "
                "minutes: the operator falls behind, changes take long to apply.",
            ),
            Alert(
                "OJSOperatorReconcileStuck",
                f"max by (name) (workqueue_longest_running_processor_seconds{{{J}}}) > 600",
                "5m",
                "warning",
                "A {{ $labels.name }} reconcile has been running for {{ $value | humanizeDuration }}.",
                "One reconcile of the {{ $labels.name }} controller has run for more than 10 minutes; it "
                "holds a worker and its object gets no other update.",
            ),
            Alert(
                "OJSOperatorWebhookCertificateExpiring",
                f"(ojsctrl_webhook_serving_certificate_not_after_seconds{{{J}}} > 0) - time() < 14 * 86400",
                "1h",
                "warning",
                "The webhook serving certificate of {{ $labels.instance }} expires in "
                "{{ $value | humanizeDuration }}.",
                "The certificate the operator's admission webhook serves expires within 14 days and has not "
                "been renewed (the operator rotates at a third of its life left, cert-manager 30 days before "
                "by default). When it expires the API server refuses every change to OJS objects.",
            ),
        ],
    ),
    (
        "ojs-workloads",
        [
            Alert(
                "OJSWorkerBacklogGrowingAtMaxReplicas",
                f"(ojs_worker_desired_replicas{{{J}}} >= on (namespace, worker) "
                f"ojs_worker_max_replicas{{{J}}})"
                f" and on (namespace, worker) (delta(ojs_worker_queue_backlog{{{J}}}[15m]) > 0)",
                "15m",
                "warning",
                "OJSWorker {{ $labels.namespace }}/{{ $labels.worker }} is at maxReplicas and its backlog "
                "still grows.",
                "The autoscaler wants maxReplicas for {{ $labels.namespace }}/{{ $labels.worker }} and the "
                "jobs waiting on its queues have kept growing for 15 minutes: the workers cannot keep up.",
            ),
            Alert(
                "OJSQueueStatsUnavailable",
                f"(sum by (namespace, cluster) (increase(ojs_queue_stats_errors_total{{{J}}}[10m])) > 0)"
                " unless on (namespace, cluster)"
                f" (time() - ojs_queue_stats_last_success_timestamp_seconds{{{J}}} < 600)",
                "10m",
                "warning",
                "The operator cannot read queue counts of OJSCluster {{ $labels.namespace }}/"
                "{{ $labels.cluster }}.",
                "Every poll of {{ $labels.namespace }}/{{ $labels.cluster }}'s queue counts has failed for "
                "at least 10 minutes: its workers' autoscalers hold their replicas and the queue metrics "
                "are old.",
            ),
            Alert(
                "OJSClusterDegraded",
                "max by (namespace, cluster, phase) "
                f'(ojs_cluster_phase{{{J}, phase=~"Degraded|Error"}}) == 1',
                "10m",
                "warning",
                "OJSCluster {{ $labels.namespace }}/{{ $labels.cluster }} is {{ $labels.phase }}.",
                "OJSCluster {{ $labels.namespace }}/{{ $labels.cluster }} has been in phase "
                "{{ $labels.phase }} for 10 minutes; its conditions say why.",
            ),
            Alert(
                "OJSWorkerDrainStuck",
                f'max by (namespace, worker) (ojs_worker_phase{{{J}, phase="Draining"}}) == 1',
                "30m",
                "warning",
                "OJSWorker {{ $labels.namespace }}/{{ $labels.worker }} has been draining for 30 minutes.",
                "A scale-down of {{ $labels.namespace }}/{{ $labels.worker }} waits for quieted workers to "
                "finish their active jobs and has not finished in 30 minutes.",
            ),
        ],
    ),
]


def alerts() -> list[Alert]:
    """Every alert, in file order."""
    return [a for _, group in GROUPS for a in group]


def _rule(a: Alert) -> dict[str, Any]:
    return {
        "alert": a.name,
        "expr": a.expr,
        "for": a.duration,
        "labels": {"severity": a.severity},
        "annotations": {
            "summary": a.summary,
            "description": a.description,
            "runbook_url": f"{RUNBOOK_BASE}{a.name}.md",
        },
    }


def groups(job: str = JOB) -> list[dict[str, Any]]:
    """The rule groups, their expressions reading ``job``."""
    out = [{"name": name, "rules": [_rule(a) for a in group]} for name, group in GROUPS]
    text = yaml.safe_dump(out, sort_keys=False)
    loaded: list[dict[str, Any]] = yaml.safe_load(text.replace(_JOB_MARK, job))
    return loaded


def _dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=120, default_flow_style=False)


HEADER = "# Generated by `python hack/gen_alerts.py` (`make manifests`); do not edit.\n"


def rules_file() -> str:
    return (
        HEADER
        + "# The operator's alerts as a Prometheus rule file (rule_files:), as in prometheusrule.yaml.\n"
        + _dump({"groups": groups()})
    )


def _prometheusrule_body(groups_: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"groups": groups_}}


def prometheusrule() -> str:
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "ojs-operator-alerts",
            "namespace": "ojs-system",
            "labels": {
                "app.kubernetes.io/name": "ojs-operator",
                "app.kubernetes.io/instance": "ojs-operator",
                "app.kubernetes.io/component": "metrics",
                "app.kubernetes.io/part-of": "ojs",
            },
        },
        **_prometheusrule_body(groups()),
    }
    return (
        HEADER
        + "# Alerts on the operator and its workloads (docs/runbooks/); needs the prometheus-operator CRDs.\n"
        + _dump(obj)
    )


def _helm_escape(text: str) -> str:
    # Prometheus's own {{ $labels.x }} templates must reach the PrometheusRule untouched: Helm prints them
    # from string literals.
    return re.sub(r"\{\{|\}\}", lambda m: '{{ "{{" }}' if m.group() == "{{" else '{{ "}}" }}', text)


def helm_template() -> str:
    body = _helm_escape(_dump(_prometheusrule_body(groups(_JOB_MARK)))).replace(_JOB_MARK, _HELM_JOB)
    return (
        "{{- if .Values.prometheusRule.enabled }}\n"
        "# Generated by `python hack/gen_alerts.py` (`make manifests`); do not edit. The same rules as\n"
        "# deploy/prometheus/prometheusrule.yaml, on this release's metrics Service. Needs the\n"
        "# prometheus-operator CRDs, and metrics.serviceMonitor (or another scrape of that Service's job).\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        '  name: {{ include "ojs-operator.fullname" . }}-alerts\n'
        "  namespace: {{ .Release.Namespace }}\n"
        "  labels:\n"
        '    {{- include "ojs-operator.labels" . | nindent 4 }}\n'
        "    app.kubernetes.io/component: metrics\n"
        "    {{- with .Values.prometheusRule.labels }}\n"
        "    {{- toYaml . | nindent 4 }}\n"
        "    {{- end }}\n" + body + "{{- end }}\n"
    )


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    return {RULES_FILE: rules_file(), PROMETHEUSRULE: prometheusrule(), HELM_TEMPLATE: helm_template()}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (identifiers followed by a selector or range, not
    functions, keywords or label names)."""
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr))
    return names - {"by", "on", "without", "ignoring", "group_left", "group_right"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in stale:
        print(f"{name} is stale: run `make manifests`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
