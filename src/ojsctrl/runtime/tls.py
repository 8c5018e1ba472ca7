"""TLS for the runtime's HTTPS listeners (the webhook server and the secure metrics endpoint).

* :func:`tls_server_context`: the one server context: TLS 1.2+, AEAD ciphers for TLS 1.2, HTTP/1.1 via ALPN.
* :class:`CertificateReloader`: the current context from a certificate and key file, replaced when the files
  change (cert-manager, a projected Secret or the self-managed certificates rewrite them).
* :class:`ServingCertificate`: the metrics listener's certificate: files from a directory (reloaded) or a
  self-signed one made at start-up.
* :class:`TLSServer`: the HTTPS server base both listeners use: plain accept, the handshake in the
  connection's thread with the context current at that moment.

Generating and rotating the webhook's own CA and certificate is :mod:`ojsctrl.runtime.certs`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from prometheus_client import Counter, Gauge

from ojsctrl.runtime.certs import CertConfig, issue, utcnow
from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.serving import LimitedHTTPServer

__all__ = [
    "CERT_NOT_AFTER",
    "CERT_RELOADS",
    "CertificateReloader",
    "ServingCertificate",
    "TLSServer",
    "self_signed_context",
    "tls_server_context",
]

# The name the certificate messages have always been logged under, whichever listener they serve.
log = structlog.get_logger("ojsctrl.webhook")

CERT_NOT_AFTER = Gauge(
    "ojsctrl_webhook_serving_certificate_not_after_seconds",
    "Expiry (Unix time) of the certificate the webhook server currently serves.",
    registry=REGISTRY,
)
CERT_RELOADS = Counter(
    "ojsctrl_webhook_certificate_reloads_total",
    "Serving certificate (re)loads, by result (loaded, failed).",
    ["result"],
    registry=REGISTRY,
)


def tls_server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context: TLS 1.2+, modern AEAD ciphers for TLS 1.2, HTTP/1.1 via ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _file_signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)  # follows the ..data symlinks of projected Secret volumes
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class CertificateReloader:
    """Holds the current SSLContext and replaces it when the certificate or key file changes.

    Checks are cheap (two stat calls) and throttled; a half-written pair (certificate and key do not match
    yet) keeps the previous context and is tried again on the next check.
    """

    def __init__(
        self, cert_file: str, key_file: str, check_interval: float = 1.0, *, purpose: str = "webhook"
    ) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.check_interval = check_interval
        # Names the certificate in logs; only the webhook's feeds the webhook certificate metrics.
        self.purpose = purpose
        self._lock = threading.Lock()
        self._ctx: ssl.SSLContext | None = None
        self._signature: object = None
        self._failed_signature: object = None
        self._checked = 0.0
        self.not_after: float | None = None
        self.fingerprint = ""

    def context(self) -> ssl.SSLContext | None:
        """The context to use for a new connection (reloaded first if the files changed)."""
        if time.monotonic() - self._checked >= self.check_interval:
            self.reload()
        return self._ctx

    def reload(self) -> bool:
        """Load the files if they changed since the last load; True when a new certificate is in use."""
        with self._lock:
            self._checked = time.monotonic()
            signature = (_file_signature(self.cert_file), _file_signature(self.key_file))
            if None in signature or signature == self._signature:
                return False
            try:
                ctx = tls_server_context(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as e:
                if signature != self._failed_signature:
                    self._failed_signature = signature
                    if self.purpose == "webhook":
                        CERT_RELOADS.labels("failed").inc()
                    log.warning(
                        f"cannot load the {self.purpose} serving certificate",
                        error=str(e),
                        file=self.cert_file,
                    )
                return False
            self._ctx, self._signature = ctx, signature
            self._describe()
            if self.purpose == "webhook":
                CERT_RELOADS.labels("loaded").inc()
            log.info(
                f"{self.purpose} serving certificate loaded",
                file=self.cert_file,
                sha256=self.fingerprint[:16],
                not_after=self.not_after,
            )
            return True

    def _describe(self) -> None:
        try:
            with open(self.cert_file, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            self.not_after = cert.not_valid_after_utc.timestamp()
            self.fingerprint = cert.fingerprint(hashes.SHA256()).hex()
            if self.purpose == "webhook":
                CERT_NOT_AFTER.set(self.not_after)
        except (OSError, ValueError):
            self.not_after, self.fingerprint = None, ""

    @property
    def loaded(self) -> bool:
        """A certificate has been loaded (connections can be served)."""
        return self._ctx is not None


def self_signed_context(dns_names: tuple[str, ...], ca_name: str) -> ssl.SSLContext:
    """A server context for a certificate (and its CA) made now; nothing stays on disk."""
    cfg = CertConfig(
        namespace="",
        secret_name="",
        dns_names=dns_names,
        ip_addresses=("127.0.0.1", "::1"),
        ca_name=ca_name,
    )
    ca, pair = issue(cfg, utcnow())
    folder = tempfile.mkdtemp(prefix="ojsctrl-metrics-tls-")
    try:
        cert, key = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
        with open(cert, "wb") as f:
            f.write(pair.cert_pem + ca.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pair.key_pem)
        return tls_server_context(cert, key)
    finally:
        # The context holds the material; nothing stays on disk.
        shutil.rmtree(folder, ignore_errors=True)


class ServingCertificate:
    """The metrics listener's TLS context: `tls.crt`/`tls.key` from `cert_dir` (reloaded when they change),
    or, without a directory, a self-signed certificate made at start-up (kubebuilder's default)."""

    CERT, KEY = "tls.crt", "tls.key"

    def __init__(self, cert_dir: str = "", *, check_interval: float = 1.0) -> None:
        self.self_signed = not cert_dir
        self._reloader: CertificateReloader | None = None
        self._ctx: ssl.SSLContext | None = None
        if cert_dir:
            self.cert_file = os.path.join(cert_dir, self.CERT)
            self.key_file = os.path.join(cert_dir, self.KEY)
            self._reloader = CertificateReloader(
                self.cert_file, self.key_file, check_interval, purpose="metrics"
            )
            if not self._reloader.reload():
                raise OSError(f"cannot load {self.cert_file} and {self.key_file}")
        else:
            self.cert_file = self.key_file = ""
            self._ctx = self_signed_context(("localhost", socket.gethostname()), "ojsctrl-metrics-ca")

    def reload(self) -> bool:
        """Load the files when they changed; True when a new certificate is in use."""
        return self._reloader.reload() if self._reloader is not None else False

    def context(self) -> ssl.SSLContext | None:
        """The context for a new connection."""
        return self._reloader.context() if self._reloader is not None else self._ctx


class TLSServer(LimitedHTTPServer):
    """Accepts plain TCP and does the TLS handshake in the connection's thread, with the context current at
    that moment, so slow handshakes never block the accept loop and a reloaded certificate applies to the
    next connection. Until ``tls`` returns a context, connections are closed at once.

    Set ``tls`` (and ``handshake_timeout``) before serving; subclasses may log in :meth:`handshake_failed`
    and :meth:`handle_error`, which are silent here.
    """

    tls: Callable[[], ssl.SSLContext | None]
    handshake_timeout = 10.0

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake, then hand the TLS connection to the request handler."""
        ctx = self.tls()
        if ctx is None:
            return
        slot = self.limiter.lookup(request)
        request.settimeout(self.handshake_timeout)
        try:
            conn = ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            self.handshake_failed(client_address, e)  # a plain-HTTP client or a failed handshake
            return
        if slot is not None:
            self.limiter.rebind(slot, conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handshake_failed(self, client_address: Any, error: Exception) -> None:
        """Called when a TLS handshake fails; nothing is answered."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection's handler failed; the connection is closed."""
