"""The manager's webhook flags. Each also comes from an environment variable (``OJSCTRL_WEBHOOK_PORT``...).

``--webhook-cert-validity`` is hidden: it exists so tests can watch a rotation happen in seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from typing import Any, Protocol

from ojsctrl.api.durations import parse_duration

CERT_MODES = ("self-managed", "external")
DEFAULT_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"  # noqa: S108 - controller-runtime's default path
DEFAULT_SERVICE_NAME = "ojs-operator-webhook-service"
DEFAULT_CONFIG_NAME = "ojs-operator-validating-webhook-configuration"
DEFAULT_CERT_SECRET = "ojs-operator-webhook-server-cert"  # noqa: S105 - a Secret's name
DEFAULT_CERT_VALIDITY = dt.timedelta(days=365)
MIN_CERT_VALIDITY = dt.timedelta(seconds=10)
VALIDITY_ENV = "OJSCTRL_WEBHOOK_CERT_VALIDITY"


class FlagParser(Protocol):
    """What the CLI's parser offers (``ojsctrl.cli._Parser``)."""

    def add_flag(
        self,
        name: str,
        *,
        help: str,
        default: Any = ...,
        type: Callable[[str], Any] = ...,
        boolean: bool = ...,
    ) -> None: ...

    def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), not {value}")
    return value


def _cert_mode(text: str) -> str:
    if text not in CERT_MODES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(CERT_MODES)}, not {text!r}")
    return text


def cert_validity(text: str) -> dt.timedelta:
    """A Go-style duration (``8760h``, ``30s``), at least 10s."""
    try:
        value = parse_duration(text.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: {e}") from None
    if value < MIN_CERT_VALIDITY:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_CERT_VALIDITY.total_seconds():.0f}s")
    return value


def add_webhook_flags(parser: FlagParser) -> None:
    """Add the ``--enable-webhooks`` and ``--webhook-*`` flags."""
    parser.add_flag(
        "--enable-webhooks",
        boolean=True,
        default=False,
        help="serve the validating admission webhooks (on every replica)",
    )
    parser.add_flag("--webhook-port", default=9443, type=_port, help="HTTPS port of the admission webhooks")
    parser.add_flag(
        "--webhook-host",
        default="",
        help="address the webhook server binds; empty = 0.0.0.0 in a cluster, 127.0.0.1 outside one",
    )
    parser.add_flag(
        "--webhook-cert-dir",
        default=DEFAULT_CERT_DIR,
        help="directory with tls.crt and tls.key (reloaded when they change); self-managed mode writes them",
    )
    parser.add_flag(
        "--webhook-cert-mode",
        default="self-managed",
        type=_cert_mode,
        help="self-managed: the operator keeps a CA and certificate in a Secret and patches the caBundle; "
        "external: cert-manager or a user Secret provides the files in --webhook-cert-dir",
    )
    parser.add_flag(
        "--webhook-service-name",
        default=DEFAULT_SERVICE_NAME,
        help="Service in front of the webhook (the certificate names <service>.<namespace>.svc)",
    )
    parser.add_flag(
        "--webhook-service-namespace",
        default="",
        help="namespace of that Service and of the certificate Secret; empty = the pod's namespace "
        "(ojs-system outside a cluster)",
    )
    parser.add_flag(
        "--webhook-config-name",
        default=DEFAULT_CONFIG_NAME,
        help="ValidatingWebhookConfiguration whose caBundle self-managed mode keeps current; empty = none",
    )
    parser.add_flag(
        "--webhook-cert-secret",
        default=DEFAULT_CERT_SECRET,
        help="Secret holding the self-managed CA bundle and serving certificate",
    )
    raw = os.environ.get(VALIDITY_ENV)
    default = DEFAULT_CERT_VALIDITY
    if raw:
        try:
            default = cert_validity(raw)
        except argparse.ArgumentTypeError as e:
            raise SystemExit(f"environment variable {VALIDITY_ENV}: {e}") from None
    parser.add_argument(
        "--webhook-cert-validity", default=default, type=cert_validity, help=argparse.SUPPRESS
    )
