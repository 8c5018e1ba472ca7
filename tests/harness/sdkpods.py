"""Simulated SDK workers for the pods of a worker Deployment: one heartbeating worker per running pod.

kwok runs no containers, so no worker process ever talks to the OJS double. :class:`PodWorkers` stands in
for them: it follows the pods of a selector through the test's driver client (a list every
``poll`` seconds) and runs one :class:`tests.ojsserver.sdk.SimulatedWorker` per running pod, with
hostname = pod name, as the application in that pod would (the Go SDK builds its id from the hostname,
which Kubernetes sets to the pod name). A worker stops when its pod is being deleted (deletionTimestamp)
or gone, as the SDKs stop heartbeating on SIGTERM. Each worker beats every ``interval`` seconds for as long
as its pod runs, so a long test never lets the redis personality's 60 s staleness expire it.
"""

from __future__ import annotations

import threading
from typing import Any

from ojsctrl.runtime.client import PODS, Client
from tests.ojsserver.sdk import SimulatedWorker


class PodWorkers:
    """SDK workers of ``style`` (go, python, js) for the running pods matching ``selector`` in ``ns``."""

    def __init__(
        self,
        client: Client,
        ns: str,
        selector: str,
        base_url: str,
        api_key: str | None,
        *,
        style: str,
        interval: float = 1.0,
        poll: float = 0.3,
    ) -> None:
        self.client = client
        self.ns = ns
        self.selector = selector
        self.base_url = base_url
        self.api_key = api_key
        self.style = style
        self.interval = interval
        self.poll = poll
        self._lock = threading.Lock()
        self._workers: dict[str, SimulatedWorker] = {}
        self._busy: dict[str, int] = {}
        #: Every pod a worker ran for, with its worker id (kept after the pod goes).
        self.ids: dict[str, str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- control -------------------------------------------------------------------------------------

    def start(self) -> PodWorkers:
        """Follow the pods on a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._run, name=f"podworkers-{self.ns}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following and stop every worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.stop()

    def __enter__(self) -> PodWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_busy(self, pod: str, jobs: int) -> None:
        """The worker of ``pod`` reports ``jobs`` jobs in progress from its next heartbeat on."""
        with self._lock:
            self._busy[pod] = jobs
            w = self._workers.get(pod)
        if w is not None:
            w.set_busy(jobs)

    def running(self) -> dict[str, SimulatedWorker]:
        """Pod name -> its worker, for the pods that run now."""
        with self._lock:
            return dict(self._workers)

    def beaten(self, pods: list[str]) -> bool:
        """Every one of ``pods`` has a worker that the server has answered at least once."""
        running = self.running()
        return all(p in running and running[p].beats > 0 for p in pods)

    # ---- following -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as e:  # an API hiccup: try again at the next poll
                self.errors.append(f"{type(e).__name__}: {e}")
            self._stop.wait(self.poll)

    def sync(self) -> None:
        """One pass: start workers for new running pods, stop those of pods being deleted or gone."""
        items, _ = self.client.list(PODS, self.ns, label_selector=self.selector)
        live = {p["metadata"]["name"] for p in items if _running(p)}
        with self._lock:
            gone = [n for n in self._workers if n not in live]
            stopped = [self._workers.pop(n) for n in gone]
            new = [n for n in sorted(live) if n not in self._workers]
            for n in new:
                w = SimulatedWorker(
                    self.base_url,
                    self.api_key,
                    style=self.style,
                    hostname=n,
                    interval=self.interval,
                    busy=self._busy.get(n, 0),
                )
                self._workers[n] = w
                self.ids[n] = w.worker_id
                w.start()
        for w in stopped:
            w.stop()


def _running(pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    return not meta.get("deletionTimestamp") and (pod.get("status") or {}).get("phase") == "Running"
