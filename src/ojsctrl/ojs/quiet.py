"""Quiet calls sent in the background, never awaited (design.md §drain).

A drain asks the server to quiet the workers of the idle pods it removes
(``POST /ojs/v1/admin/workers/{id}/quiet``). Nothing depends on the answer: servers only store the
directive, a worker learns it from its next heartbeat (and the SDKs read ``state``, not the ``directive``
servers send: ``reference/ojs-ecosystem.md``), and the pod's removal rests on SIGTERM handling anyway. So
the reconcile that plans the drain hands the ids to :class:`QuietSender` and goes on at once; a small pool
sends them with a short deadline, and a failure is logged, not retried here (the next drain step asks
again if the worker is still there and not quiet).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import cachetools
import structlog

from ojsctrl.ojs.client import OJSClient

__all__ = ["QuietSender", "quiet_client"]

log = structlog.get_logger("ojsctrl.ojs.quiet")


class _Quieter(Protocol):
    def quiet_worker(self, base_url: str, api_key: str | None, worker_id: str) -> None: ...


def quiet_client(user_agent: str = "ojsctrl") -> OJSClient:
    """An OJS client for quiet calls: one short attempt (POSTs are never retried), 3 s at most."""
    return OJSClient(
        connect_timeout=1.0, read_timeout=2.0, total_timeout=3.0, retries=0, user_agent=user_agent
    )


class QuietSender:
    """Sends quiet calls from a bounded pool of threads; :meth:`send` never blocks on the network.

    At most ``max_pending`` calls wait or run at any time: beyond that, ids are dropped (and logged), since
    a quiet call is an optimisation the next drain step repeats. The same worker is not asked again while
    a call for it is pending, nor for ``resend_after`` seconds after a call that succeeded.
    """

    def __init__(
        self,
        client: _Quieter,
        *,
        threads: int = 2,
        max_pending: int = 256,
        resend_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threads < 1 or max_pending < 1:
            raise ValueError("threads and max_pending must be >= 1")
        self._client = client
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ojs-quiet")
        self._pending: set[tuple[str, str]] = set()
        self._sent: cachetools.TTLCache[tuple[str, str], bool] = cachetools.TTLCache(
            maxsize=4096, ttl=resend_after, timer=clock
        )
        self._lock = threading.Lock()
        self._closed = False
        self.sent = 0
        """Quiet calls that succeeded (for metrics and tests)."""
        self.failed = 0
        """Quiet calls that failed."""
        self.dropped = 0
        """Ids not sent because too many calls were pending."""

    def send(self, base_url: str, api_key: str | None, worker_ids: Iterable[str]) -> list[str]:
        """Queue a quiet call per id and return at once; the ids actually queued are returned."""
        queued: list[str] = []
        for wid in worker_ids:
            key = (base_url, wid)
            with self._lock:
                if self._closed or key in self._pending or key in self._sent:
                    continue
                if len(self._pending) >= self._max_pending:
                    self.dropped += 1
                    log.warning("quiet call dropped: too many pending", worker=wid)
                    continue
                self._pending.add(key)
            try:
                self._pool.submit(self._call, base_url, api_key, wid)
            except RuntimeError:  # shut down meanwhile
                with self._lock:
                    self._pending.discard(key)
                continue
            queued.append(wid)
        return queued

    def pending(self) -> int:
        """Calls queued or running."""
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is pending (tests, shutdown); False on timeout."""
        end = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop taking calls and drop those not started; running ones end within the client's deadline."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _call(self, base_url: str, api_key: str | None, worker_id: str) -> None:
        key = (base_url, worker_id)
        try:
            self._client.quiet_worker(base_url, api_key, worker_id)
        except Exception as e:  # fire and forget: whatever went wrong is only logged
            with self._lock:
                self.failed += 1
                self._pending.discard(key)
            # OJSError messages never carry the API key (see ojsctrl.ojs.client).
            log.warning("could not quiet worker", worker=worker_id, error=str(e)[:200])
            return
        with self._lock:
            self.sent += 1
            self._sent[key] = True
            self._pending.discard(key)
