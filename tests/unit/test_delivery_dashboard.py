"""The Grafana dashboards' PromQL is valid (promtool) and names only metrics that exist.

promtool comes from Debian's `prometheus` package (`bash hack/install-deps.sh`, `make deps`). Each
expression is wrapped as a recording rule and the file is checked with `promtool check rules`, which
parses every expression. Which metrics the running operator exports is checked end to end by
tests/e2e/delivery/test_wheel.py (it also has a real Prometheus scrape the operator and query a panel).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import yaml

from tests.harness.kube import missing_tool

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")


def gen_dashboards() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hack_gen_dashboards", ROOT / "hack" / "gen_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_promtool_accepts_every_dashboard_expression(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("promtool not installed: run `make deps` (Debian's prometheus package)")
    exprs = gen_dashboards().exprs()
    rules = [
        {"record": f"ojs:{board.replace('-', '_')}:panel_expr_{i}", "expr": expr}
        for board, items in exprs.items()
        for i, expr in enumerate(items)
    ]
    assert len(rules) >= 15
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "ojs-dashboards", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_dashboards_name_known_metrics() -> None:
    """Every metric a panel reads is registered by the operator's code, or comes from kube-state-metrics."""
    import ojsctrl.controllers.metrics
    import ojsctrl.runtime.client
    import ojsctrl.runtime.controller
    import ojsctrl.runtime.leaderelection
    import ojsctrl.runtime.workqueue  # noqa: F401 - imported for their metric definitions

    sources = "\n".join(
        (ROOT / "src" / "ojsctrl" / rel).read_text()
        for rel in (
            "controllers/metrics.py",
            "runtime/controller.py",
            "runtime/client.py",
            "runtime/leaderelection.py",
            "runtime/workqueue.py",
        )
    )
    module = gen_dashboards()
    for board, items in module.exprs().items():
        for expr in items:
            for name in METRIC.findall(expr):
                if name in module.KUBE_STATE_METRICS:
                    continue
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                assert f'"{base}"' in sources or f'"{name}"' in sources, f"{board}: {name} is not defined"


def test_chart_ships_the_operator_dashboard() -> None:
    board = json.loads(
        (ROOT / "deploy" / "helm" / "ojs-operator" / "dashboards" / "ojs-operator.json").read_text()
    )
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("reconcile", "error", "latency", "queue depth", "worker replicas", "leader"):
        assert topic in titles, topic
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "job", "namespace"}
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
