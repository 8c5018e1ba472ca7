"""Connection limits for the operator's threaded HTTP servers (webhook, metrics, health probes).

`http.server` gives every connection a thread and only per-`recv` timeouts, so a client that sends
its request one byte every few seconds, or opens hundreds of idle connections, costs a thread each
for as long as it likes. `ConnectionLimiter` bounds that:

- at most `max_connections` connections are served at once (so at most that many threads);
- a new connection must finish its TLS handshake and send its request line and headers within
  `header_timeout` of being accepted; a kept-alive connection must send the next request within
  `idle_timeout` of the previous answer. One reaper thread enforces these deadlines by shutting the
  socket down under the blocked read, however slowly the bytes trickle in;
- when every slot is taken, a new connection evicts the oldest connection that is not in the middle
  of a request (still handshaking, sending headers, or idle), instead of being refused. Slow or idle
  connections therefore cannot lock out a real client such as the API server, whose requests arrive
  within milliseconds of connecting.
A connection busy with a request is never evicted; the request's own deadlines bound it.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from prometheus_client import Counter

from ojsctrl.runtime.metrics import REGISTRY

log = structlog.get_logger("ojsctrl.serving")

CLOSED = Counter(
    "ojsctrl_http_connections_closed_total",
    "Connections the operator's HTTP servers closed early, by server and cause "
    "(header_timeout, idle_timeout, evicted, refused).",
    ["server", "cause"],
    registry=REGISTRY,
)


@dataclass(eq=False)
class Connection:
    """One accepted connection as the limiter sees it."""

    sock: socket.socket
    accepted: float
    deadline: float | None
    cause: str = "header_timeout"
    busy: bool = False
    closed: bool = field(default=False)


class ConnectionLimiter:
    """Slots, deadlines and eviction for one server (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        max_connections: int,
        header_timeout: float,
        idle_timeout: float,
        reap_interval: float = 0.2,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.name = name
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.reap_interval = reap_interval
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._conns: dict[int, Connection] = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name=f"{name}-conn-reaper", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------------ accept side
    def admit(self, sock: socket.socket) -> Connection | None:
        """Take a slot for a just-accepted socket, evicting the oldest connection not busy with a
        request when all are taken; None when no slot frees up (the caller closes the socket)."""
        if not self._slots.acquire(blocking=False):
            victim = self._oldest_waiting()
            if victim is not None:
                self._close(victim, "evicted")
            if not self._slots.acquire(timeout=1.0):
                CLOSED.labels(self.name, "refused").inc()
                return None
        conn = Connection(sock, time.monotonic(), time.monotonic() + self.header_timeout)
        with self._lock:
            self._conns[id(sock)] = conn
        return conn

    def rebind(self, conn: Connection, sock: socket.socket) -> None:
        """The connection now reads through another socket object (its TLS wrapper)."""
        with self._lock:
            self._conns.pop(id(conn.sock), None)
            conn.sock = sock
            self._conns[id(sock)] = conn
        if conn.closed:
            self._shutdown(sock)

    def release(self, conn: Connection) -> None:
        """The connection's thread is done with it: free its slot."""
        with self._lock:
            if self._conns.get(id(conn.sock)) is conn:
                del self._conns[id(conn.sock)]
        self._slots.release()

    # ------------------------------------------------------------------ handler side
    def lookup(self, sock: object) -> Connection | None:
        with self._lock:
            return self._conns.get(id(sock))

    def busy(self, sock: object) -> None:
        """A request's headers arrived: no deadline of ours while it is handled."""
        conn = self.lookup(sock)
        if conn is not None:
            conn.busy, conn.deadline = True, None

    def idle(self, sock: object) -> None:
        """The answer went out: the next request must start within the idle timeout."""
        conn = self.lookup(sock)
        if conn is not None:
            conn.busy, conn.deadline, conn.cause = False, time.monotonic() + self.idle_timeout, "idle_timeout"

    # ------------------------------------------------------------------ internals
    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._conns.values())

    def _oldest_waiting(self) -> Connection | None:
        waiting = [c for c in self.connections() if not c.busy and not c.closed]
        return min(waiting, key=lambda c: c.accepted, default=None)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        # Wakes the thread blocked in recv on this socket; closing is its thread's job.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _close(self, conn: Connection, cause: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        CLOSED.labels(self.name, cause).inc()
        self._shutdown(conn.sock)

    def close_all(self) -> None:
        """Shut every connection down (server stop)."""
        for conn in self.connections():
            conn.closed = True
            self._shutdown(conn.sock)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_interval):
            now = time.monotonic()
            for conn in self.connections():
                if not conn.busy and conn.deadline is not None and now >= conn.deadline:
                    self._close(conn, conn.cause)

    def stop(self) -> None:
        self._stop.set()


class LimitedHTTPServer(http.server.ThreadingHTTPServer):
    """A thread-per-connection server whose connections go through a ConnectionLimiter: the thread
    starts only once a slot is held, and the slot is freed when the thread ends."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    limiter: ConnectionLimiter

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = self.limiter.admit(request)
        if conn is None:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.limiter.release(conn)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn = self.limiter.lookup(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            if conn is not None:
                self.limiter.release(conn)

    def server_close(self) -> None:
        super().server_close()
        self.limiter.stop()


class LimitedHandler(http.server.BaseHTTPRequestHandler):
    """Tells the limiter when a request's headers are in (busy) and when its answer is out (idle)."""

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            self._limiter().busy(self.connection)
        return ok

    def handle_one_request(self) -> None:
        super().handle_one_request()
        self._limiter().idle(self.connection)

    def _limiter(self) -> ConnectionLimiter:
        return cast(LimitedHTTPServer, self.server).limiter
