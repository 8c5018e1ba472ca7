"""Simulated OJS SDK workers: heartbeat an OJS server over HTTP as the real SDKs do.

Only the heartbeat side of a worker is simulated (no job execution): the worker id the SDK makes, the body
it sends to ``POST /ojs/v1/workers/heartbeat``, how often, and how it reads the answer. Sources:

- Go (ojs-go-sdk: ``worker.go``): id ``worker_<hostname>_<pid>_<unixnano>`` (generateWorkerID); body
  ``{"worker_id", "state", "active_jobs": <int>, "active_job_ids": [...]}`` (sendHeartbeat); the first beat
  after one interval (``time.NewTicker``; ``options.go``: 5 s default); reads only ``state`` of the answer
  (handleServerState: running->quiet, running|quiet->terminate, quiet->running).
- Python (ojs-python-sdk: ``src/ojs/worker.py``, ``src/ojs/transport/http.py``): id
  ``worker_<uuid4().hex[:16]>``; body ``{"worker_id", "active_jobs": [ids], "visibility_timeout_ms"}``;
  beats at once and then every interval (5 s default), and stops beating when quiet with no active job;
  reads ``state`` (``quiet`` while running -> quiet, ``terminate`` -> stop).
- JS/TS (ojs-js-sdk: ``src/worker.ts``): id ``worker_<crypto.randomUUID()>``; body ``{"worker_id", "state",
  "active_jobs": <int>, "active_job_ids", "hostname" ($HOSTNAME), "pid", "queues", "concurrency"}``; first
  beat after one interval (``setInterval``, 5 s default); reads ``state`` (quiet, terminate).

None of them reads ``directive``, which is where every server puts quiet (ojs-backend-redis:
``internal/redis/workers.go`` answers ``{"state": "active", "directive": "quiet"}``): a quiet call never
reaches a real worker. The simulation does the same and records what it saw (:attr:`seen_states`,
:attr:`seen_directives`), so tests can show it. The SDKs take the token from the application (Go
``WithAuthToken``, Python ``headers=``, JS ``auth``); here it is always sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

STYLES = ("go", "python", "js")
MEDIA_TYPE = "application/openjobspec+json"


def sdk_worker_id(style: str, hostname: str, pid: int = 1) -> str:
    """A worker id as the SDK of ``style`` makes it."""
    if style == "go":
        return f"worker_{hostname}_{pid}_{time.time_ns()}"
    if style == "python":
        return f"worker_{uuid.uuid4().hex[:16]}"
    if style == "js":
        return f"worker_{uuid.uuid4()}"
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")


class SimulatedWorker:
    """One SDK worker heartbeating ``base_url`` on a background thread (``start()``/``stop()``).

    ``hostname`` is the pod name (the Go id carries it, JS sends it, Python neither). ``busy`` is the number
    of jobs it reports in progress (:meth:`set_busy`). ``pid`` is the process id it reports (1: the
    application is the container's first process).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        style: str = "go",
        hostname: str = "localhost",
        interval: float = 5.0,
        busy: int = 0,
        pid: int = 1,
        queues: tuple[str, ...] = ("default",),
        concurrency: int = 10,
        timeout: float = 5.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.base_url = base_url.rstrip("/")
        self.style = style
        self.hostname = hostname
        self.interval = interval
        self.pid = pid
        self.queues = queues
        self.concurrency = concurrency
        self.timeout = timeout
        self.worker_id = sdk_worker_id(style, hostname, pid)
        self._api_key = api_key
        self._lock = threading.Lock()
        self._busy = busy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The SDK's own lifecycle state: running, quiet or terminate.
        self.state = "running"
        #: Every ``state`` and ``directive`` the server answered, in order (None when absent).
        self.seen_states: list[str | None] = []
        self.seen_directives: list[str | None] = []
        #: HTTP statuses of failed heartbeats (the SDKs ignore them and keep going).
        self.errors: list[int] = []
        self.beats = 0

    # ---- control ---------------------------------------------------------------------------------------

    def set_busy(self, n: int) -> None:
        """Report ``n`` jobs in progress from the next heartbeat on."""
        with self._lock:
            self._busy = max(0, n)

    def active_job_ids(self) -> list[str]:
        """Ids of the jobs the worker reports (made up: the simulation runs no jobs)."""
        with self._lock:
            return [f"{self.worker_id}-job-{i}" for i in range(self._busy)]

    def start(self) -> SimulatedWorker:
        """Start heartbeating on a daemon thread; returns self."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sdk-{self.worker_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop heartbeating (as the JS and Python SDKs do at once on SIGTERM) and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"simulated worker {self.worker_id} did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> SimulatedWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- protocol --------------------------------------------------------------------------------------

    def body(self) -> dict[str, Any] | None:
        """The heartbeat body the SDK would send now (None: this SDK would not beat now)."""
        ids = self.active_job_ids()
        if self.style == "go":
            return {
                "worker_id": self.worker_id,
                "state": self.state,
                "active_jobs": len(ids),
                "active_job_ids": ids,
            }
        if self.style == "python":
            # worker.py _heartbeat_loop: beats while running, or while quiet with jobs still active.
            if not ids and self.state != "running":
                return None
            return {"worker_id": self.worker_id, "active_jobs": ids, "visibility_timeout_ms": 30000}
        return {
            "worker_id": self.worker_id,
            "state": self.state,
            "active_jobs": len(ids),
            "active_job_ids": ids,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
        }

    def beat(self) -> dict[str, Any] | None:
        """Send one heartbeat now; returns the answer (None when not sent or failed)."""
        body = self.body()
        if body is None:
            return None
        headers = {"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(
            self.base_url + "/ojs/v1/workers/heartbeat",
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            self.errors.append(exc.code)
            return None
        except (urllib.error.URLError, OSError, ValueError):
            self.errors.append(0)
            return None
        self.beats += 1
        state = answer.get("state") if isinstance(answer, dict) else None
        directive = answer.get("directive") if isinstance(answer, dict) else None
        self.seen_states.append(state if isinstance(state, str) else None)
        self.seen_directives.append(directive if isinstance(directive, str) else None)
        if isinstance(state, str):
            self._apply_state(state)
        return answer if isinstance(answer, dict) else None

    def _apply_state(self, desired: str) -> None:
        # Each SDK reads only "state"; a server's "active" matches no transition in any of them.
        current = self.state
        if desired == "quiet" and current == "running":
            self.state = "quiet"
        elif desired == "terminate" and current in ("running", "quiet"):
            self.state = "terminate"
            if self.style in ("python", "js"):
                self._stop.set()  # both stop the worker on terminate
        elif desired == "running" and current == "quiet" and self.style == "go":
            self.state = "running"

    def _run(self) -> None:
        # Python beats first and then sleeps; Go's ticker and JS's setInterval wait one interval first.
        if self.style == "python":
            self.beat()
        while not self._stop.wait(self.interval):
            self.beat()
