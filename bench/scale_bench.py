"""Scale benchmark (issue 8): N OJSClusters + N OJSWorkers against the write limit and a kopf peer.

For each N and each contender, a fresh local control plane (so neither order nor leftovers of another
contender count), the CRDs, one namespace, the contender started and ready, then the bench creates N
OJSClusters (redis with a plain URL, replicas 1) and N OJSWorkers (each on its own cluster, replicas 1)
as fast as it can (16 threads, no client rate limit) and watches them until converged:

    every OJSCluster and OJSWorker has status.observedGeneration == metadata.generation and
    status.phase == Running, and every child exists (Secret <c>-api-key, ConfigMap <c>-config,
    Deployment and Service <c>-server, Deployment <w>-worker).

The bench observes by watch (`Observer`: one list, then a watch per kind; the children are listed, names
only, once every primary is Running), so the observer costs the API server an event per status write,
whatever the contender. It used to list the 2N primaries every 2 s: at N=2000 such a list cost the API
server 0.58 s of CPU with ojsctrl's statuses (3.9 KB objects) against 0.21 s with the limit's (1.1 KB), a
cost of the observer that grew with the run's length and the size of the contender's statuses, on the
same two cores as the plane (bench/results/scale.md, session 17).

Contenders, all given the same client QPS/burst and the same per-kind concurrency:

- ojsctrl: `python -m ojsctrl` with its default `--sync-period` (10 h) while converging; after
  convergence the bench restarts it with a short sync period on the converged objects, counts what the
  restart cost (reconciles, requests; mutating: target zero) and then waits through two resync periods,
  counting reconciles per object per period (reconciles over resync wake-ups) and mutating requests.
- limit: `bench/limit.py`, the requests ojsctrl must make (same apply bodies from `ojsctrl.builders`,
  field manager ojsctrl, force) plus one status apply per object once its Deployment is available,
  nothing else: the lower bound for the convergence time on this machine.
- kopf: `bench/peers/kopf_peer.py` under `kopf run --standalone`, kopf's defaults.

Measured per contender: seconds from the first create to converged; API requests by the contender's
user agent from the audit log (total, mutating, per object, by verb and resource); peak RSS and CPU
seconds of its process (psutil, sampled every 0.2 s); reconcile latency p50/p99 (ojsctrl: the
controller_runtime_reconcile_time_seconds histogram per controller; kopf: its handlers' durations).

Environment: OJSCTRL_BENCH_SIZES (default 100,500,1000; 50 for a smoke run), OJSCTRL_BENCH_CONTENDERS
(ojsctrl,limit,kopf), OJSCTRL_BENCH_QPS / _BURST (200 / 400, as the plane's own controllers),
OJSCTRL_BENCH_CONCURRENCY (4, ojsctrl's default --max-concurrent-reconciles), OJSCTRL_BENCH_SYNC_PERIOD
(20 s, the idle measurement after the restart), OJSCTRL_BENCH_CONVERGE_SYNC_PERIOD (10h, while
converging), OJSCTRL_BENCH_TIMEOUT (convergence timeout, default 300 + 1.5 s per N), OJSCTRL_BENCH_PROFILE=1
(ojsctrl under pyinstrument on every thread, wall clock, see bench/profiled.py ->
bench/results/profile-N.txt; the slower profiled run's figures go to scale-profile.*) or
OJSCTRL_BENCH_PROFILE=cpu (ojsctrl under yappi on every thread, CPU seconds per function: `--clock cpu`
of bench/profiled.py -> bench/results/profile-cpu-N.txt; figures to scale-profile-cpu.*),
OJSCTRL_BENCH_ROUNDS (1; with k > 1 every size is measured k times, the contenders in reverse order
every other round (ojsctrl, limit, kopf, then kopf, limit, ojsctrl): a drift of the machine's speed over
the run then weighs on both sides of a ratio; rounds after the first are reported as "N#2", "N#3"),
OJSCTRL_BENCH_KEEP=1 (keep the planes' folders), OJSCTRL_BENCH_FRESH=1 (drop earlier sizes
from scale.json instead of merging), OJSCTRL_BENCH_OPERATOR_MODULE (run this module instead of ojsctrl,
e.g. a candidate build) with OJSCTRL_BENCH_RESULTS_NAME (write <name>.{json,md,png}
instead of scale.*) for before/after figures. Results: bench/results/scale.{json,md,png}.

The machine is shared: each run also records the CPU the plane used and the share of the machine other
processes took meanwhile (others_cpu_share); compare contenders whose runs saw similar background load.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

import ojsctrl
from ojsctrl import __version__
from ojsctrl.api.common import GROUP, VERSION
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    JSON,
    SECRETS,
    SERVICES,
    Client,
    ClientOptions,
    Resource,
)
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane, free_port

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
OJSCLUSTERS = Resource(GROUP, VERSION, "ojsclusters", "OJSCluster")
OJSWORKERS = Resource(GROUP, VERSION, "ojsworkers", "OJSWorker")
NAMESPACE = "bench"
MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
AGENTS = {
    "ojsctrl": ("ojsctrl/",),
    "limit": ("ojsctrl-limit/",),
    "kopf": ("kopf/", "kopf-peer/"),
}


def _env_list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


SIZES = [int(x) for x in _env_list("OJSCTRL_BENCH_SIZES", "100,500,1000")]
CONTENDERS = _env_list("OJSCTRL_BENCH_CONTENDERS", "ojsctrl,limit,kopf")
ROUNDS = max(1, int(os.environ.get("OJSCTRL_BENCH_ROUNDS", "1")))


def _size_key(key: str) -> tuple[int, int]:
    """Sort key of a results key: "1000" (first round) or "1000#2" (second round)."""
    n, _, r = key.partition("#")
    return int(n), int(r or 1)


QPS = float(os.environ.get("OJSCTRL_BENCH_QPS", "200"))
BURST = int(os.environ.get("OJSCTRL_BENCH_BURST", "400"))
CONCURRENCY = int(os.environ.get("OJSCTRL_BENCH_CONCURRENCY", "4"))
SYNC_PERIOD = float(os.environ.get("OJSCTRL_BENCH_SYNC_PERIOD", "20"))
# The sync period while converging: ojsctrl's default (10 h, as controller-runtime's), so the figures are
# those of a deployment as shipped. The short SYNC_PERIOD is for the idle measurement, after a restart.
CONVERGE_SYNC_PERIOD = os.environ.get("OJSCTRL_BENCH_CONVERGE_SYNC_PERIOD", "10h")
# ojsctrl under bench/profiled.py: "pyinstrument" on every thread (wall clock, idle split out), or
# "cpu": yappi on every thread (CPU time per function, GIL waits not counted as work).
# "mem": tracemalloc, reported at convergence (bench/profiled.py).
_PROFILE_MODES = {
    "": "",
    "0": "",
    "1": "pyinstrument",
    "pyinstrument": "pyinstrument",
    "cpu": "cpu",
    "mem": "mem",
}
if os.environ.get("OJSCTRL_BENCH_PROFILE", "") not in _PROFILE_MODES:
    raise SystemExit(
        f"OJSCTRL_BENCH_PROFILE={os.environ['OJSCTRL_BENCH_PROFILE']!r}: expected 1 or pyinstrument "
        "(wall clock), cpu (yappi, CPU clock), mem (tracemalloc), or empty/0 (no profiler)"
    )
PROFILE = _PROFILE_MODES[os.environ.get("OJSCTRL_BENCH_PROFILE", "")]
KEEP = os.environ.get("OJSCTRL_BENCH_KEEP") == "1"
FRESH = os.environ.get("OJSCTRL_BENCH_FRESH") == "1"
# A candidate build of the operator to measure instead of `ojsctrl` (a module run with -m, same flags),
# and where to write (scale.{json,md,png} by default): for before/after figures of a change.
OPERATOR_MODULE = os.environ.get("OJSCTRL_BENCH_OPERATOR_MODULE", "ojsctrl")
# A profiled run is slower: its figures go to scale-profile.* unless told otherwise, never into scale.*.
RESULTS_NAME = os.environ.get(
    "OJSCTRL_BENCH_RESULTS_NAME",
    {"": "scale", "pyinstrument": "scale-profile", "cpu": "scale-profile-cpu", "mem": "scale-profile-mem"}[
        PROFILE
    ],
)


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timeout_for(n: int) -> float:
    return float(os.environ.get("OJSCTRL_BENCH_TIMEOUT", str(300 + 1.5 * n)))


# --------------------------------------------------------------------------- the objects
def cluster_name(i: int) -> str:
    return f"c-{i:05d}"


def worker_name(i: int) -> str:
    return f"w-{i:05d}"


def cluster_obj(i: int) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OJSCluster",
        "metadata": {"name": cluster_name(i), "namespace": NAMESPACE},
        "spec": {"backend": {"type": "redis", "url": "redis://redis.bench.svc:6379/0"}, "replicas": 1},
    }


def worker_obj(i: int) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OJSWorker",
        "metadata": {"name": worker_name(i), "namespace": NAMESPACE},
        "spec": {
            "clusterRef": cluster_name(i),
            "jobTypes": ["email.send"],
            "queues": ["default"],
            "image": "example.com/bench/worker:1.0",
            "replicas": 1,
        },
    }


def create_all(client: Client, n: int) -> tuple[float, float]:
    """Create the N clusters, then the N workers; returns (wall time of the first create, seconds taken)."""
    objs = [(OJSCLUSTERS, cluster_obj(i)) for i in range(n)] + [(OJSWORKERS, worker_obj(i)) for i in range(n)]
    t0 = time.time()
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda ro: client.create(ro[0], ro[1], NAMESPACE), objs))
    return t0, time.monotonic() - start


def _running(obj: JSON) -> bool:
    st = obj.get("status") or {}
    return st.get("phase") == "Running" and st.get("observedGeneration") == obj["metadata"].get("generation")


def children_exist(client: Client, n: int) -> bool:
    """Whether every child of the N pairs exists (names only, one list per kind)."""

    def names(res: Resource) -> set[str]:
        items, _ = client.list(res, NAMESPACE, metadata_only=True)
        return {o["metadata"]["name"] for o in items}

    deps, svcs, cms, secrets = names(DEPLOYMENTS), names(SERVICES), names(CONFIGMAPS), names(SECRETS)
    for i in range(n):
        c, w = cluster_name(i), worker_name(i)
        if (
            f"{c}-api-key" not in secrets
            or f"{c}-config" not in cms
            or f"{c}-server" not in deps
            or f"{c}-server" not in svcs
            or f"{w}-worker" not in deps
        ):
            return False
    return True


class Observer:
    """Which primaries are Running with a current observedGeneration, kept by one list and a watch per
    kind (relisting when a watch ends or expires), and the wall time the count last changed."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._running: dict[tuple[str, str], bool] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self.changed_at = time.time()
        self.relists = 0
        self._threads = [
            threading.Thread(target=self._loop, args=(res,), name=f"observe-{res.plural}", daemon=True)
            for res in (OJSCLUSTERS, OJSWORKERS)
        ]
        self._ready = threading.Barrier(len(self._threads) + 1)

    def start(self) -> Observer:
        for t in self._threads:
            t.start()
        self._ready.wait(60)
        return self

    def stop(self) -> None:
        self._stop.set()

    def running(self) -> int:
        with self._lock:
            return sum(self._running.values())

    def wait(self, timeout: float) -> None:
        """Return after the next change of the count, or ``timeout`` seconds."""
        with self._lock:
            self._lock.wait(timeout)

    def _set(self, kind: str, name: str, value: bool) -> None:
        with self._lock:
            if self._running.get((kind, name)) != value:
                self._running[(kind, name)] = value
                self.changed_at = time.time()
                self._lock.notify_all()

    def _loop(self, res: Resource) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self.relists += 1
            try:
                items, rv = self.client.list(res, NAMESPACE)
                for o in items:
                    self._set(res.kind, o["metadata"]["name"], _running(o))
                if first:
                    first = False
                    self._ready.wait(60)
                for ev in self.client.watch(res, NAMESPACE, resource_version=rv, timeout_seconds=3600):
                    if self._stop.is_set():
                        return
                    if ev.type in ("ADDED", "MODIFIED"):
                        self._set(res.kind, ev.object["metadata"]["name"], _running(ev.object))
                    elif ev.type == "DELETED":
                        self._set(res.kind, ev.object["metadata"]["name"], False)
                    elif ev.type == "ERROR":
                        break  # expired: relist
            except Exception:  # the bench keeps observing: a failure relists
                time.sleep(0.5)


# --------------------------------------------------------------------------- process sampling
class Sampler:
    """Peak RSS and CPU seconds of a process and its children, sampled on a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.rss = 0
        self.cpu = 0.0
        self.marks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sampler")

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> None:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
            rss = cpu = 0.0
            for p in procs:
                with_info = p.as_dict(["memory_info", "cpu_times"])
                if with_info["memory_info"] is not None:
                    rss += with_info["memory_info"].rss
                if with_info["cpu_times"] is not None:
                    cpu += with_info["cpu_times"].user + with_info["cpu_times"].system
        except psutil.Error:
            return
        with self._lock:
            self.rss = int(rss)
            self.peak_rss = max(self.peak_rss, int(rss))
            self.cpu = max(self.cpu, cpu)

    def mark(self, name: str) -> None:
        self.sample()
        with self._lock:
            self.marks[name] = {
                "rss_mb": self.rss / 2**20,
                "peak_rss_mb": self.peak_rss / 2**20,
                "cpu_s": self.cpu,
            }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def plane_cpu(plane: ControlPlane) -> dict[str, float]:
    """CPU seconds used so far by each component of the plane."""
    out: dict[str, float] = {}
    for name, proc in plane.processes.items():
        try:
            t = psutil.Process(proc.pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            continue
    return out


def machine_busy() -> dict[str, float]:
    """CPU seconds the whole machine and this bench process have been busy."""
    t = psutil.cpu_times()
    me = psutil.Process().cpu_times()
    return {
        "all": sum(t) - t.idle - getattr(t, "iowait", 0.0),
        "bench": me.user + me.system,
    }


# --------------------------------------------------------------------------- contenders
class Contender:
    """One contender process (operator, limit script or kopf peer) against one plane."""

    def __init__(
        self,
        who: str,
        plane: ControlPlane,
        n: int,
        *,
        sync_period: str = CONVERGE_SYNC_PERIOD,
        tag: str = "",
        profiled: bool = True,
        ojs_port: int | None = None,
    ) -> None:
        self.who = who
        self.plane = plane
        self.n = n
        self.sync_period = sync_period
        self.profiled = profiled and bool(PROFILE)
        self.metrics_port = free_port()
        self.health_port = free_port()
        # A closed port: queue-stats polls fail at once and nothing leaves the machine. A restart keeps
        # it, so the failure message (which names the URL) stays the same.
        self.ojs_port = ojs_port or free_port()
        self.log_path = plane.workdir / "logs" / f"contender-{who}{tag}.log"
        self.kopf_stats = plane.workdir / "kopf-stats.json"
        self.profile_path = RESULTS / {"cpu": f"profile-cpu-{n}.txt", "mem": f"profile-mem-{n}.txt"}.get(
            PROFILE, f"profile-{n}.txt"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def argv(self) -> list[str]:
        py = sys.executable
        kube = str(self.plane.kubeconfig)
        if self.who == "ojsctrl":
            args = [
                "--kubeconfig",
                kube,
                "--metrics-bind-address",
                f"127.0.0.1:{self.metrics_port}",
                "--health-probe-bind-address",
                f"127.0.0.1:{self.health_port}",
                "--ojs-url-template",
                f"http://127.0.0.1:{self.ojs_port}",
                "--kube-api-qps",
                str(QPS),
                "--kube-api-burst",
                str(BURST),
                "--max-concurrent-reconciles",
                str(CONCURRENCY),
                "--sync-period",
                self.sync_period,
                "--log-level",
                "info",
            ]
            if self.profiled:
                out = str(self.profile_path)
                clock = ["--clock", PROFILE] if PROFILE in ("cpu", "mem") else []
                return [py, "-m", "bench.profiled", *clock, "--out", out, "-m", OPERATOR_MODULE, *args]
            return [py, "-m", OPERATOR_MODULE, *args]
        if self.who == "limit":
            return [
                py,
                "-m",
                "bench.limit",
                "--kubeconfig",
                kube,
                "--namespace",
                NAMESPACE,
                "--qps",
                str(QPS),
                "--burst",
                str(BURST),
                "--concurrency",
                str(CONCURRENCY),
            ]
        if self.who == "kopf":
            return [
                py,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--namespace",
                NAMESPACE,
                "--liveness",
                f"http://127.0.0.1:{self.health_port}/healthz",
                "-m",
                "bench.peers.kopf_peer",
            ]
        raise ValueError(self.who)

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.plane.kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            # kopf: one handler thread per reconcile worker ojsctrl gets (two controllers).
            "KOPF_PEER_WORKERS": str(2 * CONCURRENCY),
            "KOPF_PEER_STATS": str(self.kopf_stats),
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )

    def _http(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.who} exited with {self.proc.returncode}:\n{self.tail()}")
        if self.who == "ojsctrl":
            return self._http(self.health_port, "/readyz")[0] == 200
        if self.who == "kopf":
            return self._http(self.health_port, "/healthz")[0] == 200
        return b"READY" in self.log_path.read_bytes()

    def metrics(self) -> str:
        return self._http(self.metrics_port, "/metrics")[1] if self.who == "ojsctrl" else ""

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def memory_report(self, timeout: float = 300.0) -> None:
        """Ask the operator under `bench.profiled --clock mem` for its report and wait until it is written."""
        before = self.profile_path.stat().st_mtime if self.profile_path.exists() else 0.0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.profile_path.exists() and self.profile_path.stat().st_mtime > before:
                time.sleep(1.0)  # let the write finish
                log(f"memory report: {self.profile_path}")
                return
            time.sleep(1.0)
        log("memory report: none written")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120 if self.profiled else 40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()


# --------------------------------------------------------------------------- figures
def histogram(text: str, name: str) -> dict[str, dict[str, Any]]:
    """Per controller: cumulative buckets [(le, count)], count and sum of a Prometheus histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, Any]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for s in fam.samples:
            ctrl = s.labels.get("controller", "")
            h = out.setdefault(ctrl, {"buckets": [], "count": 0.0, "sum": 0.0})
            if s.name.endswith("_bucket"):
                h["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                h["count"] = s.value
            elif s.name.endswith("_sum"):
                h["sum"] = s.value
    for h in out.values():
        h["buckets"].sort()
    return out


def counter(text: str, name: str, label: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0.0) + s.value
    return out


def wakeups_per_object(text: str, n: int) -> dict[str, dict[str, float]]:
    """ojsctrl_reconcile_wakeups_total per controller and source, divided by the N objects of each kind."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "ojsctrl_reconcile_wakeups_total" and s.value:
                by_source = out.setdefault(s.labels.get("controller", ""), {})
                by_source[s.labels.get("source", "")] = round(s.value / n, 2)
    return out


def reconcile_results(text: str) -> dict[str, dict[str, int]]:
    """controller_runtime_reconcile_total per controller and result (success, error, requeue, ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, int]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "controller_runtime_reconcile_total" and s.value:
                by = out.setdefault(s.labels.get("controller", ""), {})
                by[s.labels.get("result", "")] = int(s.value)
    return out


def wakeups_by(text: str, source: str) -> dict[str, float]:
    """ojsctrl_reconcile_wakeups_total of one source, per controller."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "ojsctrl_reconcile_wakeups_total" and s.labels.get("source") == source:
                ctrl = s.labels.get("controller", "")
                out[ctrl] = out.get(ctrl, 0.0) + s.value
    return out


def settle(contender: Contender, quiet: float = 10.0, timeout: float = 180.0) -> float:
    """Seconds until the operator made no API request for ``quiet`` seconds with empty queues."""
    start = time.monotonic()
    last_total, last_change = -1.0, time.monotonic()
    while time.monotonic() - start < timeout:
        text = contender.metrics()
        total = sum(counter(text, "rest_client_requests_total", "code").values())
        depth = sum(counter(text, "workqueue_depth", "name").values())
        now = time.monotonic()
        if total != last_total or depth:
            last_total, last_change = total, now
        elif now - last_change >= quiet:
            return round(last_change - start, 1)
        time.sleep(1.0)
    return round(timeout, 1)


def settled_after_restart(contender: Contender, n: int) -> bool:
    """The restarted operator has reconciled every object once (the initial list), the first poll of every
    cluster has woken the cluster (a first result is always news; the bench's workers do not autoscale, so
    a failed poll does not wake them), and its queues are empty: what follows is the idle state, not the
    tail of the restart."""
    text = contender.metrics()
    if not text:
        return False
    done = sum(counter(text, "controller_runtime_reconcile_total", "controller").values())
    depth = sum(counter(text, "workqueue_depth", "name").values())
    polled = wakeups_by(text, "poller")
    first_polls = polled.get("ojscluster", 0) >= n
    return done >= 2 * n and depth == 0 and first_polls


def idle_after_restart(plane: ControlPlane, n: int, ojs_port: int) -> dict[str, Any]:
    """Restart ojsctrl with the short sync period on the converged objects, then measure (a) what the restart
    cost until its first pass was done and (b) two sync periods at idle. Reconciles per object per period =
    reconciles / resync wake-ups (each resync round wakes every primary object once), so the figure does not
    depend on how many rounds fell in the window."""
    restart = Contender(
        "ojsctrl", plane, n, sync_period=f"{SYNC_PERIOD}s", tag="-restart", profiled=False, ojs_port=ojs_port
    )
    time.sleep(1.0)
    t_r0 = time.time()
    restart.start()
    try:
        wait_until("ojsctrl ready after the restart", restart.ready, 300)
        stable = 0

        def settled() -> bool:
            nonlocal stable
            stable = stable + 1 if settled_after_restart(restart, n) else 0
            return stable >= 3

        wait_until("the restart's first pass", settled, 300 + n * 0.3, interval=1.0)
        t_r1 = time.time()
        metrics_r1 = restart.metrics()
        assert restart.proc is not None
        proc = psutil.Process(restart.proc.pid)
        cpu_r1 = sum(proc.cpu_times()[:2])
        wait = 2 * SYNC_PERIOD * 1.1 + 5  # the informers jitter the period by up to 10 %
        log(f"N={n} ojsctrl: restarted in {t_r1 - t_r0:.0f}s; waiting {wait:.0f}s through two resync periods")
        time.sleep(wait)
        t_end = time.time()
        metrics_end = restart.metrics()
        cpu_end = sum(proc.cpu_times()[:2])
    finally:
        restart.stop()
    time.sleep(1.0)
    reqs = audit_requests(plane, AGENTS["ojsctrl"])
    first = summarise(reqs, t_r0, t_r1)
    window = summarise(reqs, t_r1, t_end)
    rec_r1 = counter(metrics_r1, "controller_runtime_reconcile_total", "controller")
    rec_end = counter(metrics_end, "controller_runtime_reconcile_total", "controller")
    reconciles = {k: int(rec_end.get(k, 0) - rec_r1.get(k, 0)) for k in rec_end}
    before = wakeups_per_object(metrics_r1, n)
    by_source = {
        ctrl: {src: round(v - before.get(ctrl, {}).get(src, 0.0), 2) for src, v in by.items()}
        for ctrl, by in wakeups_per_object(metrics_end, n).items()
    }
    rs_r1 = wakeups_by(metrics_r1, "resync")
    rs_end = wakeups_by(metrics_end, "resync")
    resyncs = {k: int(rs_end.get(k, 0) - rs_r1.get(k, 0)) for k in rs_end}
    per_period = {k: _r(reconciles.get(k, 0) / v, 3) if v else None for k, v in resyncs.items()}
    total_resyncs = sum(resyncs.values())
    return {
        "restart": {
            "seconds_to_first_pass_done": round(t_r1 - t_r0, 1),
            "reconciles": {k: int(v) for k, v in rec_r1.items()},
            "requests": first["total"],
            "mutating": first["mutating"],
            "requests_by_kind": first["by_request"],
        },
        "resync": {
            "window_seconds": round(t_end - t_r1, 1),
            "sync_period_seconds": SYNC_PERIOD,
            "reconciles": reconciles,
            "resync_wakeups": resyncs,
            "reconciles_per_object_per_period": per_period,
            "reconciles_per_object_per_period_all": _r(sum(reconciles.values()) / total_resyncs, 3)
            if total_resyncs
            else None,
            "cpu_seconds": round(cpu_end - cpu_r1, 2),
            "wakeups_per_object_by_source": by_source,
            "requests": window["total"],
            "mutating": window["mutating"],
            "mutating_by_kind": {k: v for k, v in window["by_request"].items() if k.split()[0] in MUTATING},
        },
    }


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def exact_quantile(q: float, values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_requests(plane: ControlPlane, prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The contender's requests: one entry per audit ID (time received, verb, resource[/subresource])."""
    by_id: dict[str, dict[str, Any]] = {}
    for ev in plane.audit_events():
        agent = ev.get("userAgent") or ""
        if not agent.startswith(prefixes):
            continue
        ref = ev.get("objectRef") or {}
        res = ref.get("resource") or ev.get("requestURI", "?").split("?")[0]
        if ref.get("subresource"):
            res += "/" + ref["subresource"]
        verb = ev.get("verb", "?")
        by_id[ev["auditID"]] = {
            "t": _ts(ev["requestReceivedTimestamp"]),
            "verb": verb,
            "what": f"{verb} {res}",
            "code": (ev.get("responseStatus") or {}).get("code"),
        }
    return sorted(by_id.values(), key=lambda r: r["t"])


def summarise(reqs: list[dict[str, Any]], since: float, until: float) -> dict[str, Any]:
    window = [r for r in reqs if since <= r["t"] <= until]
    mutating = [r for r in window if r["verb"] in MUTATING]
    return {
        "total": len(window),
        "mutating": len(mutating),
        "by_request": dict(Counter(r["what"] for r in window).most_common()),
    }


# --------------------------------------------------------------------------- one run
def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_one(who: str, n: int) -> dict[str, Any]:
    log(f"N={n} {who}: starting a control plane")
    plane = ControlPlane(name=f"bench-scale-{who}-{n}")
    plane.start()
    contender: Contender | None = None
    sampler: Sampler | None = None
    try:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "crds"))
        plane.kubectl("wait", "--for", "condition=established", "--timeout=60s", "crd", "--all")
        plane.create_namespace(NAMESPACE)
        client = Client.from_kubeconfig(
            str(plane.kubeconfig),
            options=ClientOptions(qps=0, burst=1, user_agent="ojsctrl-bench", pool_size=32),
        )
        contender = Contender(who, plane, n)
        started = time.monotonic()
        contender.start()
        wait_until(f"{who} ready", contender.ready, 120)
        ready_s = time.monotonic() - started
        time.sleep(1.0)  # let the watches settle
        sampler = Sampler(contender.proc.pid).start()  # type: ignore[union-attr]
        sampler.mark("idle")
        plane_idle = plane_cpu(plane)
        machine_idle = machine_busy()
        observer = Observer(client).start()
        t0, create_s = create_all(client, n)
        log(f"N={n} {who}: created {2 * n} objects in {create_s:.1f}s")
        deadline = time.monotonic() + timeout_for(n)
        ok, running, last_report = False, 0, time.monotonic()
        t_conv = 0.0
        try:
            while time.monotonic() < deadline:
                running = observer.running()
                if running >= 2 * n:
                    # Converged at the event that made the last primary Running, once the children exist.
                    t_conv = observer.changed_at
                    ok = children_exist(client, n)
                    if ok:
                        break
                if time.monotonic() - last_report > 15:
                    log(f"N={n} {who}: {running}/{2 * n} Running after {time.time() - t0:.0f}s")
                    last_report = time.monotonic()
                if contender.proc is not None and contender.proc.poll() is not None:
                    raise RuntimeError(f"{who} exited:\n{contender.tail()}")
                observer.wait(2.0 if running >= 2 * n else 5.0)
        finally:
            observer.stop()
        if not ok:
            t_conv = time.time()
        seconds = t_conv - t0
        sampler.mark("converged")
        plane_conv = plane_cpu(plane)
        machine_conv = machine_busy()
        log(f"N={n} {who}: {'converged' if ok else 'NOT converged'} in {seconds:.1f}s")
        metrics_conv = contender.metrics()
        settle_s: float | None = None
        if who == "ojsctrl" and ok:
            # Converged is what the bench sees; the operator may still have writes due (a first poll's
            # finding, a deferred status write). Let them happen before the restart, or the restart
            # would be charged with them.
            settle_s = settle(contender)
            if contender.profiled and PROFILE == "mem":
                contender.memory_report()
        contender.stop()
        sampler.stop()
        idle: dict[str, Any] | None = None
        if who == "ojsctrl" and ok:
            idle = idle_after_restart(plane, n, contender.ojs_port)
        time.sleep(1.0)
        reqs = audit_requests(plane, AGENTS[who])
        conv = summarise(reqs, t0, t_conv)
        out: dict[str, Any] = {
            "converged": ok,
            "running_at_end": running,
            "seconds": round(seconds, 2),
            "observer_relists": observer.relists,
            "create_seconds": round(create_s, 2),
            "startup_seconds": round(ready_s, 2),
            "requests": conv["total"],
            "mutating": conv["mutating"],
            "requests_per_object": round(conv["total"] / (2 * n), 2),
            "mutating_per_object": round(conv["mutating"] / (2 * n), 2),
            "requests_by_kind": conv["by_request"],
            "requests_whole_life": len(reqs),
            "peak_rss_mb": round(sampler.marks["converged"]["peak_rss_mb"], 1),
            "peak_rss_mb_whole_run": round(sampler.peak_rss / 2**20, 1),
            "idle_rss_mb": round(sampler.marks["idle"]["rss_mb"], 1),
            "rss_growth_kb_per_object": round(
                (sampler.marks["converged"]["rss_mb"] - sampler.marks["idle"]["rss_mb"]) * 1024 / (2 * n), 1
            ),
            "cpu_seconds": round(sampler.marks["converged"]["cpu_s"], 2),
            "cpu_seconds_during_convergence": round(
                sampler.marks["converged"]["cpu_s"] - sampler.marks["idle"]["cpu_s"], 2
            ),
            "cpu_seconds_whole_run": round(sampler.cpu, 2),
            # What the contender cost the control plane (same machine, same 2 cores).
            "plane_cpu_seconds_during_convergence": {
                k: round(plane_conv.get(k, 0.0) - v, 2) for k, v in plane_idle.items()
            },
        }
        if who == "ojsctrl":
            latency: dict[str, Any] = {}
            for ctrl, h in histogram(metrics_conv, "controller_runtime_reconcile_time_seconds").items():
                latency[ctrl] = {
                    "count": int(h["count"]),
                    "p50": _r(bucket_quantile(0.5, h["buckets"])),
                    "p99": _r(bucket_quantile(0.99, h["buckets"])),
                    "mean": _r(h["sum"] / h["count"] if h["count"] else None),
                }
            out["reconcile_latency_s"] = latency
            out["wakeups_per_object_during_convergence"] = wakeups_per_object(metrics_conv, n)
            out["reconciles_per_object_during_convergence"] = {
                k: round(v / n, 2)
                for k, v in counter(metrics_conv, "controller_runtime_reconcile_total", "controller").items()
            }
            out["reconcile_results_during_convergence"] = reconcile_results(metrics_conv)
            out["settle_seconds_after_convergence"] = settle_s
            out["resync"] = idle["resync"] if idle else None
            out["restart"] = idle["restart"] if idle else None
        elif who == "kopf":
            try:
                durations = json.loads(contender.kopf_stats.read_text())
            except (OSError, ValueError):
                durations = {}
            out["reconcile_latency_s"] = {
                k: {"count": len(v), "p50": _r(exact_quantile(0.5, v)), "p99": _r(exact_quantile(0.99, v))}
                for k, v in durations.items()
            }
        # The machine is shared: CPU that neither this plane, the contender nor the bench used is other
        # sessions' load, which slows everyone down. Compare contenders only when it is similar.
        own = (
            sum(out["plane_cpu_seconds_during_convergence"].values())
            + out["cpu_seconds_during_convergence"]
            + machine_conv["bench"]
            - machine_idle["bench"]
        )
        out["others_cpu_seconds_during_convergence"] = round(
            machine_conv["all"] - machine_idle["all"] - own, 1
        )
        out["others_cpu_share"] = round(
            out["others_cpu_seconds_during_convergence"] / max(1e-9, seconds * (os.cpu_count() or 1)), 2
        )
        if not ok:
            out["log_tail"] = contender.tail(20)
        log(
            f"N={n} {who}: {out['seconds']}s, {out['requests']} requests ({out['mutating']} mutating), "
            f"peak RSS {out['peak_rss_mb']} MB, CPU {out['cpu_seconds_during_convergence']}s"
        )
        return out
    finally:
        if contender is not None:
            contender.stop()
        if sampler is not None:
            sampler.stop()
        plane.stop()
        if not KEEP:
            shutil.rmtree(plane.workdir, ignore_errors=True)


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


# --------------------------------------------------------------------------- reports
def ratios(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for n, by in runs.items():
        o, lim, k = by.get("ojsctrl"), by.get("limit"), by.get("kopf")

        def div(a: Any, b: Any, key: str) -> float | None:
            if not a or not b or not a.get("converged") or not b.get("converged") or not b.get(key):
                return None
            return round(a[key] / b[key], 2)

        out[n] = {
            "ojsctrl/limit time": div(o, lim, "seconds"),
            "ojsctrl/kopf time": div(o, k, "seconds"),
            "ojsctrl/kopf peak RSS": div(o, k, "peak_rss_mb"),
            "ojsctrl/limit requests": div(o, lim, "requests"),
            "ojsctrl/limit mutating": div(o, lim, "mutating"),
            "ojsctrl/limit CPU": div(o, lim, "cpu_seconds_during_convergence"),
            "ojsctrl/kopf requests": div(o, k, "requests"),
            "ojsctrl/kopf CPU": div(o, k, "cpu_seconds_during_convergence"),
        }
    return out


def markdown(data: dict[str, Any]) -> str:
    runs = data["runs"]
    cfg = data["config"]
    lines = [
        "# Scale benchmark: N OJSClusters + N OJSWorkers",
        "",
        f"Client QPS/burst {cfg['qps']}/{cfg['burst']}, {cfg['concurrency']} workers per kind, "
        f"sync period {cfg.get('converge_sync_period', str(cfg['sync_period_s']) + 's')} while converging "
        f"and {cfg['sync_period_s']} s at idle after a restart (ojsctrl), replicas 1, one fresh control "
        "plane per contender and N. Converged = every child exists and every OJSCluster/OJSWorker has "
        "phase Running with a current observedGeneration; time from the first create. Requests are "
        "counted in the audit log by user agent from the first create to convergence; per object = per "
        "OJSCluster or OJSWorker. RSS growth per object: RSS at convergence minus RSS before the first "
        "create, over 2N (it includes the cached children and pods). CPU: the contender's process; plane "
        "CPU: etcd, apiserver, controller manager, scheduler and kwok during convergence. The machine is "
        "shared (2 cores; others' CPU share = what other sessions took meanwhile): read the ratios.",
        "",
        "Contenders: ojsctrl (`python -m ojsctrl`, sync periods above; restart = restarted on the "
        "converged objects, until its first pass is done; idle = the next two sync periods, reconciles "
        "per object per period = reconciles over resync wake-ups); limit (`bench/limit.py`: the writes "
        "ojsctrl makes on creation, same server-side apply bodies from ojsctrl.builders, plus one status "
        "apply per object once its Deployment is Available; no reads, no events: the lower bound); kopf "
        "(`bench/peers/kopf_peer.py`, kopf's defaults, the official client, same children, status when "
        "the Deployment is available).",
        "",
        "## Ratios (the headline)",
        "",
        "| N | ojsctrl/limit time | ojsctrl/kopf time | ojsctrl/kopf peak RSS | ojsctrl/limit requests "
        "| ojsctrl/limit mutating | ojsctrl/limit CPU | ojsctrl/kopf CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, r in sorted(data["ratios"].items(), key=lambda kv: _size_key(kv[0])):
        lines.append(
            f"| {n} | {_f(r['ojsctrl/limit time'])} | {_f(r['ojsctrl/kopf time'])} | "
            f"{_f(r['ojsctrl/kopf peak RSS'])} | {_f(r['ojsctrl/limit requests'])} | "
            f"{_f(r['ojsctrl/limit mutating'])} | {_f(r.get('ojsctrl/limit CPU'))} | "
            f"{_f(r['ojsctrl/kopf CPU'])} |"
        )
    lines += [
        "",
        "## Figures",
        "",
        "| N | contender | converged s | requests | mutating | req/object | mutating/object | peak RSS MB "
        "| RSS growth KB/object | CPU s | plane CPU s (apiserver) | others' CPU share "
        "| reconcile p50 / p99 s | reconciles/object converging | idle: reconciles/object/period, mutating |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(runs, key=_size_key):
        for who in ("ojsctrl", "limit", "kopf"):
            r = runs[n].get(who)
            if r is None:
                continue
            lat = r.get("reconcile_latency_s") or {}
            lat_s = "; ".join(f"{k} {_f(v.get('p50'))} / {_f(v.get('p99'))}" for k, v in lat.items()) or "n/a"
            rs = r.get("resync")
            if rs and "reconciles_per_object_per_period_all" in rs:
                rs_s = f"{_f(rs['reconciles_per_object_per_period_all'])}, {rs['mutating']}"
            else:  # results of the earlier bench (a window right after convergence, no restart)
                rs_s = (
                    f"{sum(rs['reconciles'].values())} in {rs['window_seconds']} s, {rs['mutating']}"
                    if rs
                    else "n/a"
                )
            rc = r.get("reconciles_per_object_during_convergence") or {}
            rc_s = "; ".join(f"{k} {_f(v)}" for k, v in rc.items()) or "n/a"
            conv = f"{r['seconds']}" if r["converged"] else f"timeout {r['seconds']} ({r['running_at_end']})"
            pc = r.get("plane_cpu_seconds_during_convergence") or {}
            pc_s = f"{sum(pc.values()):.1f} ({pc.get('kube-apiserver', 0):.1f})" if pc else "n/a"
            lines.append(
                f"| {n} | {who} | {conv} | {r['requests']} | {r['mutating']} | {r['requests_per_object']} | "
                f"{r['mutating_per_object']} | {r['peak_rss_mb']} | {r['rss_growth_kb_per_object']} | "
                f"{r['cpu_seconds_during_convergence']} | {pc_s} | {_f(r.get('others_cpu_share'))} | "
                f"{lat_s} | {rc_s} | {rs_s} |"
            )
    lines += ["", "## Requests by verb and resource, first create to convergence", ""]
    for n in sorted(runs, key=_size_key):
        for who in ("ojsctrl", "limit", "kopf"):
            r = runs[n].get(who)
            if r is None:
                continue
            kinds = ", ".join(f"{k}: {v}" for k, v in list(r["requests_by_kind"].items())[:14])
            lines.append(f"- N={n} {who}: {kinds}")
            rst = r.get("restart")
            if rst:
                lines.append(
                    f"  - restart on the converged objects, {rst['seconds_to_first_pass_done']} s to the end "
                    f"of its first pass: {rst['requests']} requests, {rst['mutating']} mutating; reconciles "
                    f"{rst['reconciles']}; "
                    + ", ".join(f"{k}: {v}" for k, v in rst["requests_by_kind"].items())
                )
            rs = r.get("resync")
            if rs:
                extra = (
                    f"; resync wake-ups {rs['resync_wakeups']}; per object per period "
                    f"{rs['reconciles_per_object_per_period']}; CPU {rs['cpu_seconds']} s"
                    if "resync_wakeups" in rs
                    else ""
                )
                lines.append(
                    f"  - idle window {rs['window_seconds']} s: {rs['requests']} requests, "
                    f"{rs['mutating']} mutating {rs['mutating_by_kind'] or ''}; "
                    f"reconciles {rs['reconciles']}{extra}"
                )
            wk = r.get("wakeups_per_object_during_convergence")
            if wk:
                lines.append(f"  - wake-ups per object while converging: {wk}")
    lines += [
        "",
        f"Measured with ojsctrl {data['ojsctrl_version']} (module {cfg.get('operator_module', 'ojsctrl')}); "
        f"plot: {RESULTS_NAME}.png.",
        "",
    ]
    return "\n".join(lines)


def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    sizes = [k for k in sorted(runs, key=_size_key) if "#" not in k]  # the first round
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for who, style in (("ojsctrl", "o-"), ("limit", "s--"), ("kopf", "^-.")):
        xs = [int(n) for n in sizes if who in runs[n] and runs[n][who]["converged"]]
        if not xs:
            continue
        ax1.plot(xs, [runs[str(n)][who]["seconds"] for n in xs], style, label=who)
        ax2.plot(xs, [runs[str(n)][who]["peak_rss_mb"] for n in xs], style, label=who)
    ax1.set_title("time to converge")
    ax1.set_xlabel("N (OJSClusters = OJSWorkers)")
    ax1.set_ylabel("seconds")
    ax2.set_title("peak RSS of the process")
    ax2.set_xlabel("N (OJSClusters = OJSWorkers)")
    ax2.set_ylabel("MB")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_ylim(bottom=0)
    fig.suptitle(
        f"ojsctrl vs the write limit vs a kopf peer (qps {data['config']['qps']:g}, "
        f"{data['config']['concurrency']} workers/kind)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    binaries.ensure_built()
    path = RESULTS / f"{RESULTS_NAME}.json"
    data: dict[str, Any] = {"runs": {}}
    if path.exists() and not FRESH:
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {"runs": {}}
    data["config"] = {
        "qps": QPS,
        "burst": BURST,
        "concurrency": CONCURRENCY,
        "sync_period_s": SYNC_PERIOD,
        "converge_sync_period": CONVERGE_SYNC_PERIOD,
        "profile": PROFILE or None,
        "operator_module": OPERATOR_MODULE,
        "cpus": os.cpu_count(),
    }
    data["ojsctrl_version"] = __version__
    # Which copy of ojsctrl ran (src/ may change under a long run: point PYTHONPATH at a snapshot).
    data["config"]["ojsctrl_path"] = str(Path(ojsctrl.__file__).parent)
    for n, rnd in ((n, rnd) for n in SIZES for rnd in range(1, ROUNDS + 1)):
        runs = data["runs"].setdefault(str(n) if rnd == 1 else f"{n}#{rnd}", {})
        for who in CONTENDERS if rnd % 2 else CONTENDERS[::-1]:
            try:
                runs[who] = run_one(who, n)
            except Exception as e:
                log(f"N={n} {who}: failed: {type(e).__name__}: {e}")
                runs.pop(who, None)
            runs.get(who, {})["measured_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            data["ratios"] = ratios(data["runs"])
            path.write_text(json.dumps(data, indent=2) + "\n")
            (RESULTS / f"{RESULTS_NAME}.md").write_text(markdown(data))
            plot(data, RESULTS / f"{RESULTS_NAME}.png")
    print(markdown(data))
