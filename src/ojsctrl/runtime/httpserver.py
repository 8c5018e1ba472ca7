"""The manager's HTTP endpoints: /healthz and /readyz (health probe address) and /metrics.

Health checks answer like Kubernetes components: body `ok` with 200, or 500 naming the failed check;
`?verbose` lists `[+]name ok` / `[-]name failed: reason` for every check; `/healthz/<name>` runs one.

With `--metrics-secure` the metrics listener serves HTTPS (a certificate from a directory, reloaded when it
changes, or a self-signed one made at start-up) and every scrape must carry a bearer token that a
TokenReview authenticates and a SubjectAccessReview authorises for `get` on the non-resource URL
`/metrics`, as controller-runtime's `filters.WithAuthenticationAndAuthorization` does. Answers are cached
briefly so a scrape every few seconds costs the API server two reviews per token and TTL, not per scrape.

Both listeners bound their cost (see `ojsctrl.runtime.serving`): at most `max_connections` connections
and threads, a deadline for the request line and headers, and an idle timeout; idle connections make
room for new ones, so a few hundred idle clients neither create a few hundred threads nor lock out the
kubelet's probes or a scrape.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import cachetools
import structlog
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.serving import ConnectionLimiter, LimitedHandler, LimitedHTTPServer
from ojsctrl.runtime.tls import ServingCertificate, TLSServer

__all__ = [
    "AuthDecision",
    "Check",
    "Checks",
    "EndpointServer",
    "MetricsAuthorizer",
    "ServingCertificate",  # re-exported: it moved to ojsctrl.runtime.tls
    "parse_bind_address",
]

log = structlog.get_logger("ojsctrl.httpserver")

METRICS_AUTH = Counter(
    "ojsctrl_metrics_authorization_total",
    "Scrapes of the secure metrics endpoint, by outcome (allowed, unauthenticated, forbidden, error) "
    "and whether the answer came from the cache.",
    ["result", "cached"],
    registry=REGISTRY,
)

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
        """Register (or replace) the check called ``name``."""
        with self.lock:
            self.checks[name] = check

    def run(self, only: str | None = None) -> list[tuple[str, str | None]]:
        """Run every check (or only ``only``): (name, None when healthy or the reason)."""
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


class _Server(LimitedHTTPServer):
    request_queue_size = 64


class _Server6(_Server):
    address_family = socket.AF_INET6


class _TLSServer(TLSServer):
    request_queue_size = 64


class _TLSServer6(_TLSServer):
    address_family = socket.AF_INET6


# --------------------------------------------------------------------------- secure metrics
class _Requester(Protocol):
    def request(self, method: str, path: str, *, body: Any = ..., timeout: float | None = ...) -> Any: ...


@dataclass(frozen=True)
class AuthDecision:
    """The answer for one scrape: HTTP status 200 (allowed), 401, 403 or 500, and why."""

    status: int
    reason: str

    @property
    def allowed(self) -> bool:
        """True for a 200."""
        return self.status == 200


class MetricsAuthorizer:
    """Bearer token -> TokenReview -> SubjectAccessReview (non-resource URL, verb get).

    Decisions are cached per token (by its SHA-256, never the token itself): allowed for `allowed_ttl`,
    refused for `denied_ttl`; an API error is not cached (a 401 when authentication could not be checked,
    a 500 when authorisation could not, as controller-runtime answers).
    """

    MAX_TOKEN_BYTES = 16 * 1024

    def __init__(
        self,
        client: _Requester,
        *,
        path: str = "/metrics",
        verb: str = "get",
        allowed_ttl: float = 60.0,
        denied_ttl: float = 10.0,
        max_entries: int = 4096,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.path, self.verb, self.timeout = client, path, verb, timeout
        ttls = {True: allowed_ttl, False: denied_ttl}

        def ttu(_key: str, value: AuthDecision, now: float) -> float:
            return now + ttls[value.allowed]

        self._cache: cachetools.TLRUCache[str, AuthDecision] = cachetools.TLRUCache(
            maxsize=max_entries, ttu=ttu, timer=clock
        )
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> AuthDecision:
        """Decide for the value of one request's Authorization header."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > self.MAX_TOKEN_BYTES:
            METRICS_AUTH.labels("unauthenticated", "false").inc()
            return AuthDecision(401, "a bearer token is required")
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            METRICS_AUTH.labels(self._result(cached), "true").inc()
            return cached
        decision, cacheable = self._review(token)
        if cacheable:
            with self._lock:
                self._cache[key] = decision
        METRICS_AUTH.labels(self._result(decision), "false").inc()
        return decision

    @staticmethod
    def _result(d: AuthDecision) -> str:
        return {200: "allowed", 401: "unauthenticated", 403: "forbidden"}.get(d.status, "error")

    def _review(self, token: str) -> tuple[AuthDecision, bool]:
        try:
            tr = self.client.request(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
                timeout=self.timeout,
            )
        except Exception as e:
            log.warning("metrics scrape: TokenReview failed", error=str(e)[:300])
            return AuthDecision(401, "the token could not be reviewed"), False
        status = (tr or {}).get("status") or {}
        user = status.get("user") or {}
        if not status.get("authenticated") or not user.get("username"):
            return AuthDecision(401, "invalid bearer token"), True
        spec: dict[str, Any] = {
            "user": user["username"],
            "groups": list(user.get("groups") or []),
            "nonResourceAttributes": {"path": self.path, "verb": self.verb},
        }
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        try:
            sar = self.client.request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                body={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                },
                timeout=self.timeout,
            )
        except Exception as e:
            log.warning("metrics scrape: SubjectAccessReview failed", error=str(e)[:300])
            return AuthDecision(500, "authorization could not be checked"), False
        if ((sar or {}).get("status") or {}).get("allowed"):
            return AuthDecision(200, user["username"]), True
        return (
            AuthDecision(403, f'user "{user["username"]}" may not {self.verb} {self.path}'),
            True,
        )


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
        tls: Callable[[], ssl.SSLContext | None] | None = None,
        authorizer: MetricsAuthorizer | None = None,
        max_connections: int = 32,
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.healthz, self.readyz, self.registry = healthz, readyz, registry
        self.authorizer = authorizer
        owner = self

        class Handler(LimitedHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle_timeout

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server_cls: type[LimitedHTTPServer]
        if tls is not None:
            server_cls = _TLSServer6 if ":" in address[0] else _TLSServer
        else:
            server_cls = _Server6 if ":" in address[0] else _Server
        self._server = server_cls(address, Handler)
        self._server.limiter = ConnectionLimiter(
            name, max_connections=max_connections, header_timeout=header_timeout, idle_timeout=idle_timeout
        )
        if isinstance(self._server, _TLSServer) and tls is not None:
            self._server.tls = tls
        self.address = self._server.server_address
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"{name}-server",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._server.shutdown()
        self._server.limiter.close_all()
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
            if self.authorizer is not None:
                decision = self.authorizer.check(req.headers.get("Authorization"))
                if not decision.allowed:
                    text = {401: "Unauthorized", 403: "Forbidden"}.get(
                        decision.status, "Internal Server Error"
                    )
                    self._reply(req, decision.status, f"{text}: {decision.reason}\n".encode())
                    return
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
