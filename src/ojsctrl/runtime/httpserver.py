"""The manager's HTTP endpoints: /healthz and /readyz (health probe address) and /metrics.

Health checks answer like Kubernetes components: body `ok` with 200, or 500 naming the failed check;
`?verbose` lists `[+]name ok` / `[-]name failed: reason` for every check; `/healthz/<name>` runs one.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

Check = Callable[[], str | None]
"""A health check: returns None when healthy, or a short reason when not."""


def parse_bind_address(address: str) -> tuple[str, int] | None:
    """controller-runtime style bind addresses: ":8080" (all interfaces), "127.0.0.1:8080", "0" (off)."""
    if address in ("", "0"):
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid bind address {address!r}: want host:port, :port or 0")
    return (host or "0.0.0.0", int(port))  # noqa: S104 - ":port" means every interface by convention


@dataclass
class Checks:
    """A named set of checks, evaluated in registration order."""

    checks: dict[str, Check] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, check: Check) -> None:
        with self.lock:
            self.checks[name] = check

    def run(self, only: str | None = None) -> list[tuple[str, str | None]]:
        with self.lock:
            items = list(self.checks.items())
        out: list[tuple[str, str | None]] = []
        for name, check in items:
            if only and name != only:
                continue
            try:
                out.append((name, check()))
            except Exception as e:
                out.append((name, f"check raised {type(e).__name__}: {e}"))
        return out


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class _Server6(_Server):
    address_family = socket.AF_INET6


class EndpointServer:
    """One HTTP listener serving any of: health checks, readiness checks, metrics."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        healthz: Checks | None = None,
        readyz: Checks | None = None,
        registry: CollectorRegistry | None = None,
        name: str = "http",
    ) -> None:
        self.healthz, self.readyz, self.registry = healthz, readyz, registry
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server_cls = _Server6 if ":" in address[0] else _Server
        self._server = server_cls(address, Handler)
        self.address = self._server.server_address
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"{name}-server",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self.address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _reply(
        self,
        req: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("X-Content-Type-Options", "nosniff")
        req.end_headers()
        req.wfile.write(body)

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query, keep_blank_values=True)
        if path == "/metrics" and self.registry is not None:
            encoder, content_type = choose_encoder(req.headers.get("Accept", ""))
            self._reply(req, 200, encoder(self.registry), content_type)
            return
        for prefix, checks in (("/healthz", self.healthz), ("/readyz", self.readyz)):
            if checks is not None and (path == prefix or path.startswith(prefix + "/")):
                only = path[len(prefix) + 1 :] or None
                self._checks(req, checks, only, "verbose" in query, prefix)
                return
        self._reply(req, 404, b"404 page not found\n")

    def _checks(
        self,
        req: http.server.BaseHTTPRequestHandler,
        checks: Checks,
        only: str | None,
        verbose: bool,
        prefix: str,
    ) -> None:
        results = checks.run(only)
        if only and not results:
            self._reply(req, 404, f"no such check: {only}\n".encode())
            return
        failed = [(n, r) for n, r in results if r is not None]
        if not failed and not verbose:
            self._reply(req, 200, b"ok")
            return
        lines = []
        for name, reason in results:
            lines.append(f"[+]{name} ok" if reason is None else f"[-]{name} failed: {reason}")
        lines.append(f"{prefix[1:]} check failed" if failed else f"{prefix[1:]} check passed")
        self._reply(req, 500 if failed else 200, ("\n".join(lines) + "\n").encode())
