"""Autoscaling benchmark (issue #13): policies side by side on the same traffic, through a real control plane.

For each trace, one local control plane (kwok pods, real scheduler and Deployment controller). Every policy
gets its own namespace, its own worker Deployment of kwok pods (Ready after ``OJSCTRL_BENCH_STARTUP``
seconds, a grace period of ``OJSCTRL_BENCH_GRACE`` seconds) and its own simulated world
(:mod:`tests.ojsserver.world`) on the same trace and seed; the worlds share one OJS double, each on its own
queue. Policies:

- ``keda-<target>``: the KEDA baseline (:mod:`bench.keda_baseline`): a ScaledObject's formula with the
  HPA's default behaviour, acting on the Deployment's replicas through the API server.
- ``queueDepth-<target>``, ``waitTime-<duration>``: an OJSWorker with that autoscaling spec, scaled by the
  operator (``python -m ojsctrl`` pointed at the double).

Sweeping the depth target of ``keda`` and ``queueDepth`` traces their cost/wait frontier.

Figures per trace and policy: p50/p95/p99 wait, replica-seconds (pods that exist, starting and terminating
included), scale events (changes of the Deployment's replicas), interrupted jobs, first-job-to-first-Ready
time from zero. Results: ``bench/results/autoscale.{json,md,png}``.

Environment: ``OJSCTRL_BENCH_TRACES`` (default all four: step-burst, diurnal, spike-then-idle, long-jobs),
``OJSCTRL_BENCH_POLICIES`` (default ``keda-{5,10,20}``, ``queueDepth-{5,10,20}`` and ``waitTime-30s``),
``OJSCTRL_BENCH_JOBS_PER_POD`` (4), ``OJSCTRL_BENCH_STARTUP`` (10 s), ``OJSCTRL_BENCH_GRACE`` (30 s),
``OJSCTRL_BENCH_SMOKE=1`` (one two-minute step-burst: checks the machinery, not a result).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.keda_baseline import BaselineLoop, KedaHpa
from tests.e2e.helpers import OperatorProcess, install_crds, start_ojsctrl
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.ojsserver.kubeworld import (
    PodWatcher,
    WorldDriver,
    api_client,
    kwok_annotations,
    selector_of,
    worker_deployment,
)
from tests.ojsserver.server import OJSTestServer
from tests.ojsserver.world import TRACES, Trace, World, step_burst

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SMOKE = os.environ.get("OJSCTRL_BENCH_SMOKE") == "1"
TRACE_NAMES = [t for t in os.environ.get("OJSCTRL_BENCH_TRACES", ",".join(TRACES)).split(",") if t]
DEFAULT_POLICIES = "keda-5,keda-10,keda-20,queueDepth-5,queueDepth-10,queueDepth-20,waitTime-30s,waitTime-60s"
POLICIES = [p for p in os.environ.get("OJSCTRL_BENCH_POLICIES", DEFAULT_POLICIES).split(",") if p]
# The long-jobs trace also runs the operator's policies with drain off (what drain saves) and a depth target
# of 2 (jobs of minutes: the depth policies need a low target to come near a 30 s wait).
EXTRA_POLICIES = {"long-jobs": ["keda-2", "queueDepth-2", "queueDepth-5+nodrain", "waitTime-30s+nodrain"]}
PARALLEL = max(1, int(os.environ.get("OJSCTRL_BENCH_PARALLEL", "2")))
JOBS_PER_POD = int(os.environ.get("OJSCTRL_BENCH_JOBS_PER_POD", "4"))
STARTUP = float(os.environ.get("OJSCTRL_BENCH_STARTUP", "10"))
GRACE = int(os.environ.get("OJSCTRL_BENCH_GRACE", "30"))
MAX_REPLICAS = 50
SMOKE_NOTE = " (smoke run: a check of the machinery, not a result)"
TAIL = 120.0  # seconds after the trace ends, for the backlog to drain and scale-down to show


def log(msg: str) -> None:
    print(f"[autoscale-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def trace_by_name(name: str) -> Trace:
    """The named trace (a short step burst in smoke mode)."""
    if SMOKE:
        return step_burst(base=0.5, factor=10, duration=120, at=30, length=30, job=2.0)
    if name == "diurnal":
        # Two 10-minute days rather than two 20-minute ones: the same shape in half the wall time.
        return TRACES[name](period=600.0, duration=1200.0)
    if name == "long-jobs":
        return TRACES[name](duration=1200.0)
    return TRACES[name]()


@dataclass
class Policy:
    """One policy: its kind (keda, queueDepth, waitTime), parameter (a depth target or a duration) and,
    for the operator's policies, whether drain before shutdown is on (a ``+nodrain`` suffix turns it off)."""

    kind: str
    param: str
    drain: bool = True

    @classmethod
    def parse(cls, text: str) -> Policy:
        body, plus, modifier = text.partition("+")
        kind, _, param = body.partition("-")
        if kind not in ("keda", "queueDepth", "waitTime") or not param:
            raise ValueError(
                f"policy {text!r}: expected keda-<target>, queueDepth-<target> or waitTime-<dur>"
            )
        if plus and (modifier != "nodrain" or kind == "keda"):
            raise ValueError(f"policy {text!r}: the only modifier is +nodrain, for queueDepth and waitTime")
        return cls(kind, param, drain=not plus)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.param}" + ("" if self.drain else "+nodrain")

    @property
    def slug(self) -> str:
        return self.name.lower().replace(".", "-").replace("+", "-")


class ReplicaRecorder:
    """Samples the Deployment's spec and ready replicas every second (scale events = spec changes)."""

    def __init__(self, apps: Any, namespace: str, name: str) -> None:
        self.apps, self.namespace, self.name = apps, namespace, name
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReplicaRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self._stop.wait(1.0):
            try:
                dep = self.apps.read_namespaced_deployment(self.name, self.namespace)
            except ApiException:
                continue
            self.samples.append(
                (time.time(), int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0))
            )

    def scale_events(self) -> int:
        values = [s[1] for s in self.samples]
        return sum(1 for a, b in itertools.pairwise(values) if a != b)


@dataclass
class Lane:
    """One policy's namespace, world and machinery during a run."""

    policy: Policy
    namespace: str
    deployment: str
    world: World
    watcher: PodWatcher
    driver: WorldDriver
    recorder: ReplicaRecorder
    baseline: BaselineLoop | None = None
    pending: str | None = None


def start_lane(
    plane: ControlPlane, api: Any, server: OJSTestServer, trace: Trace, policy: Policy, start: float
) -> Lane:
    from kubernetes import client as k8s

    ns = f"as-{policy.slug}"
    plane.create_namespace(ns)
    apps = k8s.AppsV1Api(api)
    queue = f"q-{policy.slug}"
    world = World(trace, jobs_per_pod=JOBS_PER_POD, start=start, server=server, queue=queue)
    pending: str | None = None
    baseline: BaselineLoop | None = None
    if policy.kind == "keda":
        dep = worker_deployment("sim", ns, replicas=0, startup_seconds=STARTUP, grace_seconds=GRACE)
        apps.create_namespaced_deployment(ns, dep)
        baseline = BaselineLoop(
            apps,
            ns,
            "sim",
            server.base_url,
            queue,
            KedaHpa(target=int(policy.param), max_replicas=MAX_REPLICAS),
        )
        name, selector = "sim", selector_of(dep)
    else:
        # An OJSWorker scaled by the operator; its Deployment is <worker>-worker.
        name = "sim-worker"
        selector = ",".join(
            (
                "app.kubernetes.io/component=worker",
                "app.kubernetes.io/instance=sim",
                "app.kubernetes.io/name=ojs-worker",
            )
        )
        pending = create_ojsctrl_policy(api, ns, queue, policy)
    watcher = PodWatcher(api, ns, selector).start()
    driver = WorldDriver(world, watcher, tick=0.5).start()
    recorder = ReplicaRecorder(apps, ns, name).start()
    if baseline is not None:
        baseline.start()
    return Lane(policy, ns, name, world, watcher, driver, recorder, baseline, pending)


def create_ojsctrl_policy(api: Any, ns: str, queue: str, policy: Policy) -> str | None:
    """Create the OJSCluster and OJSWorker of an ojsctrl policy; returns why it cannot run yet, if so."""
    auto: dict[str, Any] = {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": MAX_REPLICAS,
        "pollingInterval": "5s",
    }
    if policy.kind == "queueDepth":
        auto.update(metric="queueDepth", targetJobsPerWorker=int(policy.param))
    else:
        auto.update(metric="waitTime", targetWaitTime=policy.param)
    docs = [
        {
            "apiVersion": "ojs.openjobspec.dev/v1alpha1",
            "kind": "OJSCluster",
            "metadata": {"name": "sim-cluster", "namespace": ns},
            "spec": {"backend": {"type": "redis", "url": "redis://redis.invalid:6379"}},
        },
        {
            "apiVersion": "ojs.openjobspec.dev/v1alpha1",
            "kind": "OJSWorker",
            "metadata": {"name": "sim", "namespace": ns},
            "spec": {
                "clusterRef": "sim-cluster",
                "jobTypes": ["sim"],
                "queues": [queue],
                "image": "example.invalid/ojs-worker:sim",
                "concurrency": JOBS_PER_POD,
                "replicas": 0,
                "podAnnotations": kwok_annotations(STARTUP),
                "autoScaling": auto,
                "gracefulShutdown": {
                    "timeoutSeconds": max(0, GRACE - 10),
                    "drainBeforeShutdown": policy.drain,
                },
            },
        },
    ]
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    # Not "ojs": the double strips everything before the first "/ojs/" of a path, so a cluster named ojs
    # would leave /ojs/ojs/v1/... behind.
    custom = k8s.CustomObjectsApi(api)
    for doc, plural in zip(docs, ("ojsclusters", "ojsworkers"), strict=True):
        try:
            custom.create_namespaced_custom_object("ojs.openjobspec.dev", "v1alpha1", ns, plural, doc)
        except ApiException as exc:
            return f"not created: {exc.status} {str(exc.body)[:300]}"
    return None


def run_trace(name: str, policies: list[Policy]) -> dict[str, Any]:
    trace = trace_by_name(name)
    plane = ControlPlane(name=f"bench-autoscale-{name}", node_pods=1000)
    plane.start()
    api = api_client(plane.kubeconfig)
    server = OJSTestServer(paginate_admin_queues=False).start()
    operator: OperatorProcess | None = None
    lanes: list[Lane] = []
    try:
        if any(p.kind != "keda" for p in policies):
            install_crds(plane)
            # One double stands in for every cluster: the operator dials /<namespace>/<cluster>/ojs/...
            operator = start_ojsctrl(plane, server.base_url + "/{namespace}/{name}", name="ojsctrl-bench")
        start = time.time()
        lanes = [start_lane(plane, api, server, trace, p, start) for p in policies]
        log(f"{name}: {len(lanes)} policies, {len(lanes[0].world.jobs)} jobs over {trace.duration:.0f}s")
        end = start + trace.duration + TAIL
        while time.time() < end:
            time.sleep(5)
            for lane in lanes:
                if lane.driver.error or (lane.baseline and lane.baseline.error):
                    raise RuntimeError(f"{lane.policy.name}: {lane.driver.error or lane.baseline.error}")
        return {lane.policy.name: lane_result(lane) for lane in lanes}
    finally:
        for lane in lanes:
            for stop in (
                lane.baseline.stop if lane.baseline else None,
                lane.driver.stop,
                lane.watcher.stop,
                lane.recorder.stop,
            ):
                if stop is not None:
                    try:
                        stop()
                    except Exception as exc:
                        log(f"{lane.policy.name}: stopping: {exc}")
        if operator is not None:
            operator.stop()
        server.stop()
        api.close()
        plane.stop()


def lane_result(lane: Lane) -> dict[str, Any]:
    summary = lane.world.summary()
    summary["scale_events"] = lane.recorder.scale_events()
    summary["pending"] = lane.pending
    start = lane.world.start
    summary["series"] = {
        "t": [round(p.t - start, 1) for p in lane.world.history[::4]],
        "pods": [p.pods for p in lane.world.history[::4]],
        "ready": [p.ready for p in lane.world.history[::4]],
        "backlog": [p.available for p in lane.world.history[::4]],
    }
    arrivals = [j.arrived - start for j in lane.world.jobs]
    summary["series"]["arrivals_per_10s"] = [
        sum(1 for a in arrivals if k * 10 <= a < (k + 1) * 10)
        for k in range(int(lane.world.trace.duration // 10) + 1)
    ]
    summary["series"]["wait_by_arrival"] = [
        [round(j.arrived - start, 1), round(j.first_wait, 2)]
        for j in lane.world.jobs
        if j.first_wait is not None
    ][::5]
    return summary


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Autoscaling benchmark",
        "",
        f"Measured {data['measured_at']} on {data['config']['cpus']} CPUs; jobs per pod "
        f"{data['config']['jobs_per_pod']}, start-up {data['config']['startup_s']:g} s, grace "
        f"{data['config']['grace_s']} s{SMOKE_NOTE if data['config']['smoke'] else ''}.",
        "",
        "| trace | policy | jobs | p50 wait s | p95 wait s | p99 wait s | replica-s | scale events "
        "| interrupted | first Ready from zero s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for trace, runs in data["traces"].items():
        for policy, r in runs.items():
            fz = ", ".join(f"{x:.0f}" for x in r["first_ready_from_zero"]) or "-"
            lines.append(
                f"| {trace} | {policy} | {r['jobs']} | {r['wait_p50']:.1f} | {r['wait_p95']:.1f} | "
                f"{r['wait_p99']:.1f} | {r['pod_seconds']:.0f} | {r['scale_events']} | {r['interrupted']} | "
                f"{fz} | {r['pending'] or ''} |"
            )
    lines += ["", "## waitTime against the depth policies' cost/wait frontier", ""]
    for trace, runs in data["traces"].items():
        for policy, r in runs.items():
            if policy.startswith("waitTime-") and "+nodrain" not in policy:
                target = duration_s(policy.split("-", 1)[1])
                within = "within" if r["wait_p95"] <= target else "over"
                lines.append(
                    f"- {trace}, {policy}: p95 {r['wait_p95']:.1f} s, {within} its target; "
                    f"{frontier_verdict(runs, policy)}"
                )
    return "\n".join(lines) + "\n"


def duration_s(text: str) -> float:
    """A Go duration of the bench's policies (``30s``, ``2m``, ``1m30s``) in seconds."""
    total, number = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        else:
            total += float(number) * {"s": 1, "m": 60, "h": 3600}[ch]
            number = ""
    return total


def depth_frontier(runs: dict[str, Any]) -> list[tuple[float, float]]:
    """The depth policies' (keda, queueDepth with drain) cost/wait frontier: their (replica-s, p95) points
    that no other depth point beats on both, by cost."""
    points = sorted(
        (r["pod_seconds"], r["wait_p95"])
        for name, r in runs.items()
        if name.split("-")[0] in ("keda", "queueDepth") and "+nodrain" not in name
    )
    frontier: list[tuple[float, float]] = []
    for cost, p95 in points:
        if not frontier or p95 < frontier[-1][1]:
            frontier.append((cost, p95))
    return frontier


def frontier_verdict(runs: dict[str, Any], policy: str) -> str:
    """Where a policy's point lies against the depth frontier: below it (cheaper at the same p95, or a
    lower p95 at the same cost, by linear interpolation between frontier points), on or above it."""
    frontier = depth_frontier(runs)
    if not frontier:
        return "no depth policy to compare"
    cost, p95 = runs[policy]["pod_seconds"], runs[policy]["wait_p95"]
    dominated = [f"{c:.0f}/{w:.1f}" for c, w in frontier if c <= cost and w <= p95]
    if dominated:
        return f"above: a depth policy has fewer replica-s and a lower p95 ({', '.join(dominated)})"
    if cost < frontier[0][0]:
        c0, w0 = frontier[0]
        if p95 <= w0:
            return f"below: cheaper than every depth policy ({cost:.0f} < {c0:.0f} replica-s) at a p95 as low"
        return (
            f"beyond the cheap end: fewer replica-s than every depth policy ({cost:.0f} < {c0:.0f}) "
            f"but a longer p95 than the cheapest ({p95:.1f} > {w0:.1f} s); not comparable"
        )
    for (c0, w0), (c1, w1) in itertools.pairwise(frontier):
        if c0 <= cost <= c1:
            at = w0 + (w1 - w0) * (cost - c0) / (c1 - c0) if c1 > c0 else min(w0, w1)
            side = "below" if p95 < at else "above"
            return f"{side}: p95 {p95:.1f} s against {at:.1f} s on the frontier at {cost:.0f} replica-s"
    # Dearer than every depth policy (and not dominated): its p95 is lower than all of theirs.
    return (
        f"beyond the dear end: more replica-s than every depth policy but a lower p95 "
        f"({p95:.1f} < {frontier[-1][1]:.1f} s); not comparable"
    )


def plot(data: dict[str, Any], path: Path) -> None:
    """One row per trace: arrivals and backlog, replicas, wait by arrival time, and the trace's cost/wait
    plane (the depth policies' frontier as a line, waitTime as stars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = list(data["traces"])
    fig, axes = plt.subplots(len(traces), 4, figsize=(20, 3.6 * len(traces)), squeeze=False)
    for row, trace in enumerate(traces):
        runs = data["traces"][trace]
        ax_load, ax_pods, ax_wait, ax_front = axes[row]
        for policy, r in runs.items():
            s = r["series"]
            ax_pods.plot(s["t"], s["pods"], label=policy)
            ax_load.plot(s["t"], s["backlog"], label=f"backlog {policy}")
            if s["wait_by_arrival"]:
                xs, ys = zip(*s["wait_by_arrival"], strict=True)
                ax_wait.plot(xs, ys, ".", markersize=2, label=policy)
        first = next(iter(runs.values()))["series"]["arrivals_per_10s"]
        ax_load.plot([10 * k for k in range(len(first))], [a / 10 for a in first], "k-", label="arrivals/s")
        ax_load.set_title(f"{trace}: arrivals/s and backlog")
        ax_pods.set_title(f"{trace}: replicas")
        ax_wait.set_title(f"{trace}: wait by arrival time (s)")
        frontier = depth_frontier(runs)
        if frontier:
            xs, ys = zip(*frontier, strict=True)
            ax_front.plot(xs, ys, "k--", linewidth=0.8, label="depth frontier")
        for policy, r in runs.items():
            marker = "*" if policy.startswith("waitTime") else ("s" if policy.startswith("keda") else "o")
            ax_front.plot(r["pod_seconds"], r["wait_p95"], marker, markersize=9 if marker == "*" else 6)
            ax_front.annotate(policy, (r["pod_seconds"], r["wait_p95"]), fontsize=6)
        ax_front.set_yscale("symlog", linthresh=1.0)
        ax_front.set_title(f"{trace}: cost/wait (lower left is better)")
        ax_front.set_xlabel("replica-seconds")
        ax_front.set_ylabel("p95 wait (s)")
        for ax in (ax_load, ax_pods, ax_wait, ax_front):
            ax.grid(True, alpha=0.3)
        for ax in (ax_load, ax_pods, ax_wait):
            ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_one(name: str, policies: list[Policy], out: Path) -> None:
    """Run one trace and write its results to ``out`` (a part merged by :func:`main`)."""
    extra = [Policy.parse(p) for p in EXTRA_POLICIES.get(name, []) if not SMOKE]
    out.write_text(json.dumps(run_trace(name, policies + extra), indent=1) + "\n")


def main() -> None:
    binaries.ensure_built()
    RESULTS.mkdir(exist_ok=True)
    policies = [Policy.parse(p) for p in POLICIES]
    for extra in EXTRA_POLICIES.values():
        for p in extra:
            Policy.parse(p)
    names = ["step-burst"] if SMOKE else TRACE_NAMES
    data: dict[str, Any] = {
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {
            "cpus": os.cpu_count(),
            "jobs_per_pod": JOBS_PER_POD,
            "startup_s": STARTUP,
            "grace_s": GRACE,
            "smoke": SMOKE,
            "parallel": PARALLEL,
            "policies": [p.name for p in policies],
            "extra_policies": {} if SMOKE else EXTRA_POLICIES,
            "traces": {n: {"duration_s": trace_by_name(n).duration} for n in names},
        },
        "traces": {},
    }
    stem = "autoscale-smoke" if SMOKE else "autoscale"
    # Each trace runs in its own process with its own plane and operator, PARALLEL at a time, longest first.
    pending = sorted(names, key=lambda n: -trace_by_name(n).duration)
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < PARALLEL:
            name = pending.pop(0)
            part = RESULTS / f".{stem}-{name}.json"
            part.unlink(missing_ok=True)
            log(f"trace {name}: started")
            cmd = [sys.executable, "-m", "bench.autoscale_bench", name, str(part)]
            running[name] = (subprocess.Popen(cmd, cwd=ROOT), part)
        time.sleep(2)
        for name, (proc, part) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0 or not part.exists():
                failed.append(name)
                log(f"trace {name}: failed (exit {proc.returncode})")
                continue
            data["traces"][name] = json.loads(part.read_text())
            part.unlink()
            log(f"trace {name}: done")
            ordered = {n: data["traces"][n] for n in names if n in data["traces"]}
            data["traces"] = ordered
            (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
            (RESULTS / f"{stem}.md").write_text(markdown(data))
            plot(data, RESULTS / f"{stem}.png")
    print(markdown(data))
    if failed:
        raise SystemExit(f"traces failed: {', '.join(failed)}")


def render(path: Path) -> None:
    """Write the markdown and the plot again from a results JSON."""
    data = json.loads(path.read_text())
    path.with_suffix(".md").write_text(markdown(data))
    plot(data, path.with_suffix(".png"))


if __name__ == "__main__":
    if sys.argv[1] == "--render":
        # python -m bench.autoscale_bench --render bench/results/autoscale.json
        render(Path(sys.argv[2]))
    else:
        # python -m bench.autoscale_bench <trace> <out.json>: one trace, as run by main().
        run_one(sys.argv[1], [Policy.parse(p) for p in POLICIES], Path(sys.argv[2]))
