"""The shipped alerts (hack/gen_alerts.py -> deploy/prometheus, the Helm chart): generated files up to date,
valid for promtool, covered firing and quiet by `promtool test rules`, each with its runbook, the Helm and
kustomize copies holding the same rules, and every metric they read defined by the operator's code.

promtool comes from Debian's `prometheus` package (`make deps`, hack/install-deps.sh); helm and kubectl
from the control-plane build. Under CI=true a missing tool fails the test (``missing_tool``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import missing_tool
from tests.harness import binaries

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
TESTS_DIR = PROM_DIR / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks"


def gen_alerts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hack_gen_alerts", ROOT / "hack" / "gen_alerts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


GEN = gen_alerts()
ALERTS = [a.name for a in GEN.alerts()]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_tool("promtool not installed: run `make deps` (Debian's prometheus package)")
    assert path is not None
    return path


def _rules_in(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    groups = doc["spec"]["groups"] if "spec" in doc else doc["groups"]
    return [r for g in groups for r in g["rules"]]


def test_generated_files_are_up_to_date() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen_alerts.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_the_expected_alerts_exist() -> None:
    """The brief's list: the operator itself, and workloads from the operator's own metrics."""
    assert set(ALERTS) == {
        "OJSOperatorDown",
        "OJSOperatorNoLeader",
        "OJSOperatorReconcileErrors",
        "OJSOperatorWorkqueueBacklog",
        "OJSOperatorReconcileStuck",
        "OJSOperatorWebhookCertificateExpiring",
        "OJSWorkerBacklogGrowingAtMaxReplicas",
        "OJSQueueStatsUnavailable",
        "OJSClusterDegraded",
        "OJSWorkerDrainStuck",
    }
    assert len(ALERTS) == len(set(ALERTS))


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    runbooks = {p.stem for p in RUNBOOKS.glob("*.md")}
    assert runbooks == set(ALERTS), (
        f"alerts without a runbook: {sorted(set(ALERTS) - runbooks)}; "
        f"runbooks without an alert: {sorted(runbooks - set(ALERTS))}"
    )
    for rule in _rules_in(GEN.RULES_FILE):
        name = rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"/docs/runbooks/{name}.md"), url
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), f"{name}.md: the title is the alert's name"
        for section in ("## What it means", "## How to confirm", "## What to do"):
            assert section in text, f"{name}.md lacks {section!r}"
        assert rule["labels"]["severity"] in text, f"{name}.md does not state the severity"


def test_runbook_links_resolve() -> None:
    for path in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
            if target.startswith("http"):
                continue
            assert (path.parent / target).resolve().exists(), f"{path.name}: broken link {target}"


def test_every_rule_reads_the_operators_job_and_has_annotations() -> None:
    for path in (GEN.RULES_FILE, GEN.PROMETHEUSRULE):
        rules = _rules_in(path)
        assert [r["alert"] for r in rules] == ALERTS
        for rule in rules:
            selectors = re.findall(r"\{([^{}]*)\}", rule["expr"])
            assert selectors, rule["alert"]
            for sel in selectors:
                assert f'job="{GEN.JOB}"' in sel, f"{rule['alert']}: a selector without the job: {sel}"
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys()


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(GEN.RULES_FILE)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    files = sorted(TESTS_DIR.glob("*.yaml"))
    assert files
    out = subprocess.run(
        [promtool(), "test", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        cwd=TESTS_DIR,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS_DIR.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../ojs-operator.rules.yaml"], path.name
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == set(ALERTS), f"no firing case: {sorted(set(ALERTS) - firing)}"
    assert quiet == set(ALERTS), f"no quiet case: {sorted(set(ALERTS) - quiet)}"


def test_promtool_tests_can_fail(tmp_path: Path) -> None:
    """The test file is no rubber stamp: with one alert's threshold moved, its cases fail."""
    rules = GEN.RULES_FILE.read_text().replace("> 0.1", "> 0.9")
    assert rules != GEN.RULES_FILE.read_text()
    (tmp_path / "ojs-operator.rules.yaml").write_text(rules)
    tests = tmp_path / "tests"
    tests.mkdir()
    for path in TESTS_DIR.glob("*.yaml"):
        (tests / path.name).write_text(path.read_text())
    out = subprocess.run(
        [promtool(), "test", "rules", *sorted(str(p) for p in tests.glob("*.yaml"))],
        capture_output=True,
        text=True,
        check=False,
        cwd=tests,
    )
    assert out.returncode != 0
    assert "OJSOperatorReconcileErrors fires" in out.stdout + out.stderr


def test_rules_read_only_metrics_the_operator_defines() -> None:
    """Every metric a rule names is registered in the operator's registry (or is Prometheus's `up`);
    tests/e2e/monitoring/test_alert_metrics.py proves the running operator exports them."""
    import ojsctrl.controllers.metrics
    import ojsctrl.runtime.client
    import ojsctrl.runtime.controller
    import ojsctrl.runtime.leaderelection
    import ojsctrl.runtime.webhook
    import ojsctrl.runtime.workqueue  # noqa: F401 - imported for their metric definitions

    sources = "\n".join(p.read_text() for p in (ROOT / "src" / "ojsctrl").rglob("*.py"))
    names = {n for a in GEN.alerts() for n in GEN.metric_names(a.expr)}
    assert "ojs_worker_max_replicas" in names and "up" in names
    for name in names - {"up"}:
        assert f'"{name}"' in sources, f"{name} is not defined in src/ojsctrl"


def _helm() -> str:
    helm = binaries.bin_dir() / "helm"
    if not helm.exists():
        missing_tool(f"helm not built at {helm}: run `make controlplane`")
    return str(helm)


def _helm_template(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_helm(), "template", "ojs-operator", str(ROOT / "deploy/helm/ojs-operator"), "-n", "ojs-system",
         "--kube-version", "1.37.0", *args],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_helm_renders_the_same_rules_as_kustomize() -> None:
    assert not [d for d in _helm_template() if d["kind"] == "PrometheusRule"], "opt-in: off by default"
    docs = _helm_template(
        "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=kps"
    )
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    kustomize = yaml.safe_load(GEN.PROMETHEUSRULE.read_text())
    assert rule["spec"] == kustomize["spec"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["name"] == kustomize["metadata"]["name"]
    assert rule["metadata"]["namespace"] == kustomize["metadata"]["namespace"]
    # Prometheus's own templates reach the PrometheusRule untouched.
    assert "{{ $labels.controller }}" in str(rule["spec"])


def test_helm_rules_follow_the_release_name() -> None:
    out = subprocess.run(
        [_helm(), "template", "billing", str(ROOT / "deploy/helm/ojs-operator"), "-n", "ops",
         "--kube-version", "1.37.0", "--set", "prometheusRule.enabled=true",
         "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    rule = yaml.safe_load(out.stdout)
    services = _helm_template_named("billing")
    assert "billing-ojs-operator-controller-manager-metrics-service" in services
    for r in rule["spec"]["groups"][0]["rules"]:
        assert 'job="billing-ojs-operator-controller-manager-metrics-service"' in r["expr"]


def _helm_template_named(release: str) -> set[str]:
    out = subprocess.run(
        [_helm(), "template", release, str(ROOT / "deploy/helm/ojs-operator"), "-n", "ops",
         "--kube-version", "1.37.0"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return {d["metadata"]["name"] for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Service"}


def test_kustomize_component_adds_the_rule(tmp_path: Path) -> None:
    kubectl = binaries.bin_dir() / "kubectl"
    if not kubectl.exists():
        missing_tool(f"kubectl not built at {kubectl}: run `make controlplane`")
    # An overlay as a user writes one; kustomize takes directories outside its root only by relative path.
    deploy = os.path.relpath(ROOT / "deploy", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources:\n- {deploy}/default\ncomponents:\n- {deploy}/prometheus\n"
    )
    out = subprocess.run(
        [str(kubectl), "kustomize", str(tmp_path)], capture_output=True, text=True, check=True, timeout=120
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule == yaml.safe_load(GEN.PROMETHEUSRULE.read_text())
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert GEN.JOB in services, "the rules' job is the metrics Service's name"


@pytest.mark.parametrize("alert", ALERTS)
def test_runbook_commands_name_real_plugin_commands(alert: str) -> None:
    """Runbooks send readers to `kubectl ojs` commands that exist (status, explain-scaling, pause, resume,
    report) and to nothing else."""
    text = (RUNBOOKS / f"{alert}.md").read_text()
    for cmd in re.findall(r"kubectl ojs ([a-z-]+)", text):
        assert cmd in {"status", "explain-scaling", "pause", "resume", "report"}, (
            f"{alert}: kubectl ojs {cmd}"
        )


def test_the_install_docs_alert_commands_run() -> None:
    """docs/install.md's Alerts block, run as written (helm and promtool from the pinned toolset)."""
    text = (ROOT / "docs" / "install.md").read_text()
    section = text[text.index("### Alerts") :]
    body = section[section.index("```sh\n") + 6 : section.index("\n```", section.index("```sh\n"))]
    env = {**os.environ, "PATH": f"{Path(_helm()).parent}:{Path(promtool()).parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kind: PrometheusRule" in out.stdout and "SUCCESS" in out.stdout


@pytest.mark.parametrize("alert", ALERTS)
def test_runbook_shell_blocks_are_marked_and_parse(alert: str) -> None:
    """The docs' rule (tests/unit/test_delivery_docs.py) for docs/runbooks too: every shell block says who
    runs it and is valid shell."""
    text = (RUNBOOKS / f"{alert}.md").read_text()
    blocks = list(re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M))
    assert blocks, f"{alert}.md shows no command"
    for m in blocks:
        before = text[: m.start()].rstrip("\n").splitlines()[-1]
        if m.group(1) == "sh":
            assert re.search(r"<!--\s*tested:\s*(e2e|syntax|ci)\b[^>]+-->", before), (
                f"{alert}.md: unmarked block"
            )
            out = subprocess.run(
                ["bash", "-n"], input=m.group(2), capture_output=True, text=True, check=False
            )
            assert out.returncode == 0, f"{alert}.md: {out.stderr}"
