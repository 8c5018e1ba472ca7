"""Runtime benchmarks: workqueue throughput, informer event rate and cache memory per object.

Figures are reported together with a baseline measured in the same run (a bare watch reader for
the informer, a plain deque+lock for the workqueue), because this machine is shared and noisy:
the ratios are the result, the absolute numbers only context.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from ojsctrl.runtime.client import CONFIGMAPS, Client, ClientOptions
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.workqueue import Queue, RateLimitingQueue
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane

RESULTS = Path(__file__).parent / "results"
N_OBJECTS = int(os.environ.get("OJSCTRL_BENCH_OBJECTS", "5000"))


def bench_workqueue(n: int = 200_000) -> dict[str, float]:
    """add + get + done cycles per second, single thread, against a deque+lock baseline."""
    q: Queue[int] = Queue()
    keys = 1000
    start = time.perf_counter()
    for i in range(n):
        q.add(i % keys)
        item, _ = q.get(timeout=1)
        assert item is not None
        q.done(item)
    ours = n / (time.perf_counter() - start)

    dq: collections.deque[int] = collections.deque()
    lock = threading.Condition()
    start = time.perf_counter()
    for i in range(n):
        with lock:
            dq.append(i % keys)
            lock.notify()
        with lock:
            dq.popleft()
    base = n / (time.perf_counter() - start)

    # Dedup under load: 4 workers, hot keys.
    rq: RateLimitingQueue[int] = RateLimitingQueue("bench")
    done = threading.Event()
    processed = [0]
    plock = threading.Lock()

    def worker() -> None:
        while True:
            item, shutdown = rq.get(timeout=0.5)
            if shutdown:
                return
            if item is None:
                continue
            with plock:
                processed[0] += 1
            rq.done(item)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    for i in range(n):
        rq.add(i % keys)
    while len(rq):
        time.sleep(0.001)
    adds_per_s = n / (time.perf_counter() - start)
    rq.shut_down_with_drain(5)
    done.set()
    for t in threads:
        t.join(5)
    return {
        "queue_cycles_per_s": round(ours),
        "baseline_deque_cycles_per_s": round(base),
        "ratio_queue_vs_baseline": round(ours / base, 3),
        "adds_per_s_4_workers_1000_hot_keys": round(adds_per_s),
        "processed_after_dedup": processed[0],
    }


def _create(client: Client, ns: str, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    payload = {"k": "x" * 200}

    def one(i: int) -> None:
        client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"cm-{i:05d}",
                    "namespace": ns,
                    "labels": {"bench": "true", "index": str(i)},
                },
                "data": payload,
            },
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def bench_informer(plane: ControlPlane, n: int) -> dict[str, Any]:
    client = Client.from_kubeconfig(
        str(plane.kubeconfig), options=ClientOptions(qps=0, user_agent="ojsctrl-bench", pool_size=32)
    )
    ns = "bench-informer"
    plane.create_namespace(ns)

    # Event rate: an informer and a bare watch reader both watch while n objects are created.
    inf = Informer(client, CONFIGMAPS, namespaces=[ns], label_selector="bench=true")
    got = threading.Event()
    count = [0]

    class Counter:
        def on_add(self, obj: Any) -> None:
            count[0] += 1
            if count[0] >= n:
                got.set()

        def on_update(self, old: Any, new: Any) -> None: ...
        def on_delete(self, obj: Any) -> None: ...

    inf.add_event_handler(Counter())
    inf.start()
    inf.wait_for_sync(30)
    _, rv = client.list(CONFIGMAPS, ns, label_selector="bench=true")
    _create(client, ns, n)
    assert got.wait(300), f"informer saw {count[0]} of {n} adds"
    inf.stop()

    # Replay both from the same resourceVersion so the creation rate does not bound the measurement.
    start = time.perf_counter()
    for seen, _ev in enumerate(
        client.watch(
            CONFIGMAPS,
            ns,
            resource_version=rv,
            label_selector="bench=true",
            timeout_seconds=60,
            allow_bookmarks=False,
        ),
        start=1,
    ):
        if seen >= n:
            break
    bare_rate = n / (time.perf_counter() - start)

    replay = Informer(client, CONFIGMAPS, namespaces=[ns], label_selector="bench=true")
    replay_count = [0]
    replay_done = threading.Event()

    class ReplayCounter(Counter):
        def on_add(self, obj: Any) -> None:
            replay_count[0] += 1
            if replay_count[0] >= n:
                replay_done.set()

    replay.add_event_handler(ReplayCounter())
    # Drive the informer's event path over the same stream without its initial list.
    start = time.perf_counter()
    for ev in client.watch(
        CONFIGMAPS,
        ns,
        resource_version=rv,
        label_selector="bench=true",
        timeout_seconds=60,
        allow_bookmarks=False,
    ):
        replay._apply_event(ev.type, ev.object)
        if replay_count[0] >= n:
            break
    informer_rate = n / (time.perf_counter() - start)

    # Initial list + cache fill, and memory per cached object.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    cold = Informer(client, CONFIGMAPS, namespaces=[ns], label_selector="bench=true")
    start = time.perf_counter()
    cold.start()
    cold.wait_for_sync(120)
    list_seconds = time.perf_counter() - start
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    cold.stop()
    sample = next(iter(cold.store.objects()))
    return {
        "objects": n,
        "informer_events_per_s": round(informer_rate),
        "bare_watch_events_per_s": round(bare_rate),
        "ratio_informer_vs_bare_watch": round(informer_rate / bare_rate, 3),
        "initial_list_and_fill_seconds": round(list_seconds, 3),
        "cache_bytes_per_object": round(grown / n),
        "object_json_bytes": len(json.dumps(sample)),
    }


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    binaries.ensure_built()
    out: dict[str, Any] = {"workqueue": bench_workqueue()}
    with ControlPlane(name="bench-runtime") as plane:
        out["informer"] = bench_informer(plane, N_OBJECTS)
    (RESULTS / "runtime.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# Runtime benchmarks", "", "| benchmark | figure | value |", "|---|---|---|"]
    for group, figures in out.items():
        for k, v in figures.items():
            lines.append(f"| {group} | {k} | {v} |")
    (RESULTS / "runtime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
