"""An HTTPS server for admission webhooks (AdmissionReview v1), with pluggable handlers per path.

What it guarantees, whatever the handlers do:
- TLS 1.2 or newer, HTTP/1.1 only (ALPN), the serving certificate reloaded from its files when they change
  (cert-manager or a kubelet-projected Secret rewrites them; the self-managed certificates write them too),
  so a rotation never needs a restart. Until a certificate can be loaded, connections are closed at once and
  the readiness check fails.
- Bounded work per client: request bodies are capped (`max_request_bytes`, as controller-runtime's 7 MiB);
  a new connection must complete its TLS handshake and send its request line and headers within
  `header_timeout`, a body must arrive within `request_timeout`, and a kept-alive connection must send
  its next request within `idle_timeout`, each a deadline however slowly bytes trickle in. At most
  `max_connections` connections (threads) are served at once; when all are taken, a new connection
  evicts the oldest one that is not in the middle of a request, so slow or idle clients cannot lock
  the API server out (see `ojsctrl.runtime.serving`).
- A handler that raises denies the request with code 500 (fail closed, as the `Fail` failure policy would) and
  is logged; a malformed review is answered with HTTP 400 and never reaches a handler.
- Metrics with controller-runtime's names: `controller_runtime_webhook_requests_total{webhook,code}`,
  `controller_runtime_webhook_latency_seconds{webhook}`, `controller_runtime_webhook_requests_in_flight`.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram

from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.serving import ConnectionLimiter, LimitedHandler
from ojsctrl.runtime.tls import CertificateReloader, TLSServer

log = structlog.get_logger("ojsctrl.webhook")

JSON = dict[str, Any]
ADMISSION_API_VERSION = "admission.k8s.io/v1"
# The API server truncates longer warnings; newlines would break the Warning header.
MAX_WARNING_LENGTH = 256
MAX_WARNINGS = 16

REQUESTS = Counter(
    "controller_runtime_webhook_requests_total",
    "Total number of admission requests by HTTP status code.",
    ["webhook", "code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "controller_runtime_webhook_latency_seconds",
    "Histogram of the latency of processing admission requests.",
    ["webhook"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "controller_runtime_webhook_requests_in_flight",
    "Current number of admission requests being served.",
    ["webhook"],
    registry=REGISTRY,
)


@dataclass
class AdmissionResponse:
    """What a handler decides; the server adds the request's uid and wraps it in an AdmissionReview."""

    allowed: bool
    message: str = ""
    reason: str = ""
    code: int = 0
    details: JSON | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def allow(cls, warnings: Iterable[str] = ()) -> AdmissionResponse:
        """Admit, with optional warnings."""
        return cls(True, warnings=list(warnings))

    @classmethod
    def deny(
        cls,
        message: str,
        *,
        code: int = 403,
        reason: str = "Forbidden",
        details: JSON | None = None,
        warnings: Iterable[str] = (),
    ) -> AdmissionResponse:
        """Refuse with an HTTP-like code and a message for the user."""
        return cls(False, message, reason, code, details, list(warnings))

    def to_json(self, uid: str) -> JSON:
        """The `response` member of an AdmissionReview."""
        out: JSON = {"uid": uid, "allowed": self.allowed}
        if not self.allowed:
            status: JSON = {
                "metadata": {},
                "status": "Failure",
                "message": self.message,
                "reason": self.reason or "Forbidden",
                "code": self.code if self.code >= 400 else 403,
            }
            if self.details:
                status["details"] = self.details
            out["status"] = status
        warnings = clean_warnings(self.warnings)
        if warnings:
            out["warnings"] = warnings
        return out


def clean_warnings(warnings: Iterable[str]) -> list[str]:
    """Warnings as the API server accepts them: one line each, bounded in length and number, no repeats."""
    out: list[str] = []
    for w in warnings:
        text = " ".join(str(w).split())
        if len(text) > MAX_WARNING_LENGTH:
            text = text[: MAX_WARNING_LENGTH - 3] + "..."
        if text and text not in out:
            out.append(text)
        if len(out) >= MAX_WARNINGS:
            break
    return out


AdmissionHandler = Callable[[JSON], AdmissionResponse]
"""Gets the review's `request` (uid, kind, operation, namespace, object, oldObject, dryRun, ...)."""


@dataclass
class WebhookOptions:
    """Limits and timeouts of the webhook server."""

    max_request_bytes: int = 7 * 1024 * 1024
    handshake_timeout: float = 10.0
    # From accept to the end of the first request's headers (handshake included).
    header_timeout: float = 10.0
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 128
    reload_check_interval: float = 1.0
    drain_timeout: float = 5.0


# --------------------------------------------------------------------------- the server
class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _TLSServer(TLSServer):
    """The webhook listener: a deeper accept backlog, and handshake or connection failures logged at debug."""

    request_queue_size = 128

    def handshake_failed(self, client_address: Any, error: Exception) -> None:
        """Log the failed handshake at debug (API servers retry; scanners are noise)."""
        log.debug("TLS handshake failed", client=str(client_address[0]), error=str(error))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log the broken connection at debug."""
        log.debug("webhook connection error", client=str(client_address[0]))


class _TLSServer6(_TLSServer):
    address_family = socket.AF_INET6


class WebhookServer:
    """Serves AdmissionReview v1 over HTTPS; `handlers` maps a URL path to its handler."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cert_file: str,
        key_file: str,
        handlers: Mapping[str, AdmissionHandler],
        options: WebhookOptions | None = None,
    ) -> None:
        self.host, self.requested_port = host, port
        self.options = options or WebhookOptions()
        self.handlers = dict(handlers)
        self.reloader = CertificateReloader(cert_file, key_file, self.options.reload_check_interval)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The bound port (the requested one until started)."""
        return int(self._server.server_address[1]) if self._server else self.requested_port

    def start(self) -> None:
        """Bind (raises OSError when the port is taken) and serve in a background thread."""
        owner = self
        idle_timeout = self.options.idle_timeout

        class Handler(LimitedHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle_timeout
            server_version = "ojsctrl-webhook"
            sys_version = ""

            def do_POST(self) -> None:
                owner._handle(self)

            def do_GET(self) -> None:
                owner._reply(self, 405, b"method not allowed\n", "text/plain; charset=utf-8")

            def log_message(self, format: str, *args: object) -> None:
                pass

        cls = _TLSServer6 if ":" in self.host else _TLSServer
        server = cls((self.host, self.requested_port), Handler, bind_and_activate=False)
        server.tls = self.reloader.context
        server.handshake_timeout = min(self.options.handshake_timeout, self.options.header_timeout)
        server.limiter = ConnectionLimiter(
            "webhook",
            max_connections=self.options.max_connections,
            header_timeout=self.options.header_timeout,
            idle_timeout=self.options.idle_timeout,
        )
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        self._server = server
        self.reloader.reload()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="webhook-server", daemon=True
        )
        self._thread.start()
        log.info(
            "webhook server listening",
            address=f"{self.host}:{self.port}",
            paths=sorted(self.handlers),
            certificate=self.reloader.loaded,
        )

    def stop(self) -> None:
        """Stop accepting, let in-flight reviews finish (bounded), then close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.socket.close()
        deadline = time.monotonic() + self.options.drain_timeout
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.02)
        server.limiter.close_all()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def reload(self) -> bool:
        """Reload the certificate files now (the self-managed certificates call this after writing)."""
        return self.reloader.reload()

    def ready(self) -> str | None:
        """Readiness check: None once the server accepts TLS connections with a loaded certificate."""
        if self._server is None:
            return "webhook server not started"
        if not self.reloader.loaded:
            self.reloader.reload()
            if not self.reloader.loaded:
                return f"no serving certificate yet ({self.reloader.cert_file})"
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)  # noqa: S104
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Only "does it serve TLS": identity is the API server's business (it checks the caBundle).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection((host, self.port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname=None),
            ):
                pass
        except (OSError, ssl.SSLError) as e:
            return f"TLS dial to {host}:{self.port} failed: {e}"
        return None

    # ------------------------------------------------------------------ requests
    def _reply(
        self, req: http.server.BaseHTTPRequestHandler, status: int, body: bytes, content_type: str
    ) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("X-Content-Type-Options", "nosniff")
        if status >= 400:
            req.send_header("Connection", "close")
            req.close_connection = True
        req.end_headers()
        req.wfile.write(body)

    def _read_body(self, req: http.server.BaseHTTPRequestHandler) -> bytes:
        if req.headers.get("Transfer-Encoding"):
            raise _BadRequest(411, "chunked bodies are not accepted; send Content-Length")
        raw_length = req.headers.get("Content-Length")
        if raw_length is None or not raw_length.isdigit():
            raise _BadRequest(411, "Content-Length required")
        length = int(raw_length)
        if length > self.options.max_request_bytes:
            self._discard(req, length)
            raise _BadRequest(413, f"request body larger than {self.options.max_request_bytes} bytes")
        body = self._read_exactly(req, length, time.monotonic() + self.options.request_timeout)
        # Checked after reading, so the answer is not lost to a connection reset over unread data.
        content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _BadRequest(415, f"Content-Type must be application/json, not {content_type!r}")
        return body

    def _read_exactly(self, req: http.server.BaseHTTPRequestHandler, length: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        remaining = length
        try:
            while remaining > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                req.connection.settimeout(left)
                chunk = req.rfile.read1(min(remaining, 65536))
                if not chunk:
                    raise _BadRequest(400, "request body shorter than Content-Length")
                chunks.append(chunk)
                remaining -= len(chunk)
        except TimeoutError:
            raise _BadRequest(408, "request body not received in time") from None
        finally:
            with contextlib.suppress(OSError):
                req.connection.settimeout(self.options.idle_timeout)
        return b"".join(chunks)

    def _discard(self, req: http.server.BaseHTTPRequestHandler, length: int) -> None:
        """Read and drop an oversized body for a short while, so the client sees the 413 rather than a
        reset; the connection is closed after the answer anyway."""
        deadline = time.monotonic() + 1.0
        remaining = length
        with contextlib.suppress(OSError, _BadRequest):
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= len(self._read_exactly(req, min(remaining, 1 << 20), deadline))

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        handler = self.handlers.get(path)
        webhook = path if handler is not None else "<unknown>"
        started = time.monotonic()
        IN_FLIGHT.labels(webhook).inc()
        with self._busy_lock:
            self._busy += 1
        status = 200
        try:
            try:
                # The body is read before any answer, so the client is not reset over unread data.
                body = self._read_body(req)
                if handler is None:
                    raise _BadRequest(404, "no webhook at this path")
                review = self._decode(body)
            except _BadRequest as e:
                status = e.status
                self._reply(req, e.status, f"{e}\n".encode(), "text/plain; charset=utf-8")
                return
            request: JSON = review["request"]
            uid = str(request["uid"])
            try:
                response = handler(request)
            except Exception as e:
                log.error("admission handler failed", webhook=path, uid=uid, error=f"{type(e).__name__}: {e}")
                response = AdmissionResponse.deny(
                    f"internal error in the admission webhook: {type(e).__name__}",
                    code=500,
                    reason="InternalError",
                )
            body = orjson.dumps(
                {
                    "apiVersion": ADMISSION_API_VERSION,
                    "kind": "AdmissionReview",
                    "response": response.to_json(uid),
                }
            )
            self._reply(req, 200, body, "application/json")
            log.debug(
                "admission reviewed",
                webhook=path,
                uid=uid,
                operation=request.get("operation"),
                namespace=request.get("namespace"),
                name=request.get("name"),
                allowed=response.allowed,
            )
        finally:
            with self._busy_lock:
                self._busy -= 1
            IN_FLIGHT.labels(webhook).dec()
            REQUESTS.labels(webhook, str(status)).inc()
            LATENCY.labels(webhook).observe(time.monotonic() - started)

    @staticmethod
    def _decode(body: bytes) -> JSON:
        try:
            review = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise _BadRequest(400, f"body is not JSON: {e}") from None
        if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
            raise _BadRequest(400, "body is not an AdmissionReview")
        if review.get("apiVersion") != ADMISSION_API_VERSION:
            raise _BadRequest(400, f"only {ADMISSION_API_VERSION} AdmissionReviews are supported")
        request = review.get("request")
        if not isinstance(request, dict) or not request.get("uid"):
            raise _BadRequest(400, "AdmissionReview without a request uid")
        return review
