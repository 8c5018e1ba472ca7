"""Operators run as processes against a plane: the real `ojsctrl` (or a test app), its logs, metrics and
probes, and what a test reads from them (unexpected failures, memory, CPU)."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.harness import ledger
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import wait_until
from tests.harness.serviceaccount import service_account_kubeconfig

# Errors a reconcile may legitimately end with (API answers, transport trouble): anything else is a bug.
EXPECTED_ERROR_TYPES = {
    "ApiError",
    "ConflictError",
    "AlreadyExistsError",
    "NotFoundError",
    "GoneError",
    "InvalidError",
    "ForbiddenError",
    "TransportError",
    "ReconcileError",
}


class OperatorProcess:
    """An operator (the real `ojsctrl` or a test app) run as a process against a plane."""

    def __init__(
        self,
        plane: ControlPlane,
        module: str,
        *args: str,
        name: str = "op",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.metrics_port, self.health_port = free_port(), free_port()
        self.log_path = plane.workdir / "logs" / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        argv = [
            sys.executable,
            "-m",
            module,
            "--kubeconfig",
            str(plane.kubeconfig),
            "--metrics-bind-address",
            f"127.0.0.1:{self.metrics_port}",
            "--health-probe-bind-address",
            f"127.0.0.1:{self.health_port}",
            *args,
        ]
        full_env = {**os.environ, **(env or {})}
        if os.environ.get("OJSCTRL_E2E_AS_SA") == "1" and module == "ojsctrl":
            # The whole suite as the deployed ServiceAccount: a missing permission fails a test.
            argv += ["--kubeconfig", str(service_account_kubeconfig(plane))]
            full_env.setdefault("OJSCTRL_LEADER_ELECTION_NAMESPACE", "ojs-system")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, stdin=subprocess.DEVNULL
        )

    def get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> str:
        return self.get(self.metrics_port, "/metrics")[1]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for fam in text_string_to_metric_families(self.metrics()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(s.value)
        return None

    def ready(self) -> bool:
        return self.get(self.health_port, "/readyz")[0] == 200

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def start_ojsctrl(plane: ControlPlane, ojs_url: str, *args: str, name: str) -> OperatorProcess:
    """The real `ojsctrl` (debug logs, OJS servers at the URL template ojs_url), once it is ready."""
    op = OperatorProcess(
        plane, "ojsctrl", "--ojs-url-template", ojs_url, "--log-level", "debug", *args, name=name
    )
    wait_until("operator ready", op.ready, 60)
    return op


def leader_election_args(
    lease: str,
    ns: str,
    *timing: str,
    watch: bool = True,
) -> tuple[str, ...]:
    """Flags of an operator electing a leader on Lease ``ns/lease`` (and watching ns only, unless not
    ``watch``), followed by ``timing`` (e.g. ``--lease-duration 8s``)."""
    args = ("--leader-elect", "--leader-election-id", lease, "--leader-election-namespace", ns)
    return (*args, *(("--watch-namespace", ns) if watch else ()), *timing)


def start_op(
    plane: ControlPlane,
    *args: str,
    name: str,
    namespaces: list[str],
    ojs_url: str | None = None,
    started: list[OperatorProcess] | None = None,
) -> OperatorProcess:
    """The real `ojsctrl`, watching only `namespaces`, with a user agent naming it."""
    argv = [
        "--ojs-url-template",
        ojs_url or f"http://127.0.0.1:{free_port()}",
        "--log-level",
        "debug",
        "--user-agent-suffix",
        name,
        *[a for ns in namespaces for a in ("--watch-namespace", ns)],
        *args,
    ]
    op = OperatorProcess(plane, "ojsctrl", *argv, name=name)
    op.user_agent_suffix = name  # type: ignore[attr-defined]
    ledger.register_operator(op)
    if started is not None:
        started.append(op)
    return op


def stop_op(op: OperatorProcess) -> None:
    """Stop, keeping the last /metrics next to the log for the secrets scan."""
    if op.proc.poll() is None:
        try:
            text = op.metrics()
        except Exception:
            text = getattr(op, "metrics_snapshot", "")
        op.log_path.with_suffix(".metrics").write_text(text)
    op.stop()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_records(op: OperatorProcess) -> list[dict[str, Any]]:
    out = []
    for line in op.logs().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def unexpected_failures(op: OperatorProcess) -> list[str]:
    """'reconcile failed' lines whose exception is not an API/transport error, and any traceback of a
    thread that died."""
    bad = []
    for r in log_records(op):
        if r.get("event") == "reconcile failed" and r.get("error_type") not in EXPECTED_ERROR_TYPES:
            bad.append(f"{r.get('key')}: {r.get('error_type')}: {str(r.get('error'))[:200]}")
    text = op.logs()
    if "Exception in thread" in text:
        bad.append("a thread died: " + text[text.index("Exception in thread") :][:400])
    return bad


def reconcile_failures(op: OperatorProcess) -> collections.Counter[str]:
    return collections.Counter(
        str(r.get("error_type")) for r in log_records(op) if r.get("event") == "reconcile failed"
    )


def metric(op: OperatorProcess, name: str, labels: dict[str, str] | None = None) -> float:
    try:
        return op.metric(name, labels) or 0.0
    except Exception:
        return 0.0


def metric_sum(op: OperatorProcess, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of every sample of `name` whose labels include `labels`."""
    return sum(metric_by_label(op, name, "", labels).values())


def metric_by_label(
    op: OperatorProcess, name: str, label: str, match: dict[str, str] | None = None
) -> dict[str, float]:
    """The samples of ``name`` whose labels include ``match``, summed by the value of ``label``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(op.metrics()):
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in (match or {}).items()):
                key = smp.labels.get(label, "")
                out[key] = out.get(key, 0.0) + smp.value
    return out


def histogram_buckets(
    op: OperatorProcess, name: str, labels: dict[str, str] | None = None
) -> list[tuple[float, float]]:
    """(le, cumulative count) of a histogram, summed over the series whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(op.metrics()):
        for smp in fam.samples:
            if smp.name == name + "_bucket" and all(
                smp.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                le = float(smp.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + smp.value
    return sorted(buckets.items())


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (linear inside the bucket holding the rank;
    the highest finite bound when the rank falls in +Inf); None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            inside = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / inside if inside else 0.0)
        prev_le, prev_count = le, count
    return prev_le


def identity_of(op: OperatorProcess) -> str:
    for r in log_records(op):
        if r.get("event") == "waiting for leadership":
            return str(r["identity"])
    return ""


@dataclass
class Shared:
    """One operator for the tests that need no special flags, watching their namespaces only."""

    op: OperatorProcess
    ns: dict[str, str] = field(default_factory=dict)
