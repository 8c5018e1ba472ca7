"""`ojsctrl`: flags (each also from an environment variable) -> a running Manager.

Flag names follow controller-runtime where one exists. Every flag `--some-flag` can also be set with
`OJSCTRL_SOME_FLAG`; a flag on the command line wins. Booleans accept `--flag`, `--flag=true` and
`--flag=false`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from ojsctrl import __version__
from ojsctrl.api.backends import CONTRACTS, check_image_template
from ojsctrl.ojs.urls import DEFAULT_URL_TEMPLATE, validate_url_template
from ojsctrl.runtime import logging as runtime_logging
from ojsctrl.runtime.client import Client, ClientOptions
from ojsctrl.runtime.httpserver import parse_bind_address
from ojsctrl.runtime.manager import Manager, ManagerOptions
from ojsctrl.webhooks.flags import add_webhook_flags

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

ENV_PREFIX = "OJSCTRL_"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style duration ("15s", "1m30s", "10h") or plain seconds -> seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 15s, 2m, 1h30m)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"duration must be a finite, non-negative time: {text!r}")
    return value


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "t", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (use true or false)")


def _checked_by(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that keeps the text once ``check`` accepts it; its ValueError is the usage error."""

    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    return parse


# A bind address: host:port, :port or 0 (off).
_bind_address = _checked_by(parse_bind_address)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {value}")
    return value


def _server_image(text: str) -> str | None:
    """A --server-image template (``{backend}`` required, ``{tag}`` optional); empty: the pinned images."""
    if not text.strip():
        return None
    try:
        return check_image_template(text.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# An --ojs-url-template: only the known placeholders, rendering an http(s) URL.
_url_template = _checked_by(validate_url_template)


def _cluster_domain(text: str) -> str:
    """A --cluster-domain: a lowercase DNS name (RFC 1123 labels, at most 253 characters, no trailing dot)."""
    value = text.strip().lower()
    labels = value.split(".")
    if not value or len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise argparse.ArgumentTypeError(
            f"--cluster-domain: {text!r} is not a DNS name (dot-separated labels of a-z, 0-9 and '-', "
            "e.g. cluster.local)"
        )
    return value


_PINNED = ", ".join(c.default_image for c in CONTRACTS.values())


class _Parser(argparse.ArgumentParser):
    """argparse with environment-variable defaults for every flag."""

    def add_flag(
        self,
        name: str,
        *,
        help: str,
        default: Any = None,
        type: Callable[[str], Any] = str,
        boolean: bool = False,
        repeatable: bool = False,
        metavar: str | None = None,
    ) -> None:
        env = ENV_PREFIX + name.lstrip("-").upper().replace("-", "_")
        raw = os.environ.get(env)
        if raw is not None:
            try:
                if repeatable:
                    default = [type(v.strip()) for v in raw.split(",") if v.strip()]
                elif boolean:
                    default = parse_bool(raw)
                else:
                    default = type(raw)
            except (argparse.ArgumentTypeError, ValueError) as e:
                self.error(f"environment variable {env}: {e}")
        shown = (
            f"{help} [env {env}]"
            if repeatable
            else f"{help} (default: {_shown_default(default, type)}) [env {env}]"
        )
        if boolean:
            self.add_argument(
                name,
                nargs="?",
                const=True,
                default=bool(default),
                type=parse_bool,
                metavar="true|false",
                help=shown,
            )
        elif repeatable:
            self.add_argument(
                name, action="append", default=None, type=type, metavar=metavar, help=shown + " (repeatable)"
            )
            self._repeatable_defaults[name.lstrip("-").replace("-", "_")] = list(default or [])
        else:
            self.add_argument(name, default=default, type=type, metavar=metavar, help=shown)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._repeatable_defaults: dict[str, list[Any]] = {}
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns = super().parse_args(args, namespace)
        for dest, default in self._repeatable_defaults.items():
            if getattr(ns, dest) is None:
                setattr(ns, dest, list(default))
        return ns


def _shown_default(value: Any, type: Callable[[str], Any] | None = None) -> str:
    """A default as the user would type it in ``--help`` (argparse's own %(default)s prints reprs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if type is parse_duration and isinstance(value, int | float):
        seconds = int(value)
        if seconds != value or seconds == 0:
            return f"{value}s"
        h, rest = divmod(seconds, 3600)
        m, sec = divmod(rest, 60)
        return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (sec, "s")) if n) or "0s"
    if value in ("", None):
        return "none"
    return str(value).replace("%", "%%")


def _hidden_env(name: str, type: Callable[[str], Any], default: Any) -> Any:
    """Environment default of a hidden flag (hidden flags skip add_flag, which would document them)."""
    env = ENV_PREFIX + name.lstrip("-").upper().replace("-", "_")
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        return type(raw)
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise SystemExit(f"environment variable {env}: {e}") from None


def build_parser() -> _Parser:
    """Every manager flag. Later features add theirs here."""
    p = _Parser(prog="ojsctrl", description="Kubernetes operator for Open Job Spec servers and workers.")
    p.add_argument("--version", action="version", version=f"ojsctrl {__version__}")
    p.add_flag(
        "--kubeconfig", help="path to a kubeconfig; empty = in-cluster service account or ~/.kube/config"
    )
    p.add_flag(
        "--metrics-bind-address",
        default=":8080",
        type=_bind_address,
        help="address of /metrics; 0 disables it",
    )
    p.add_flag(
        "--health-probe-bind-address",
        default=":8081",
        type=_bind_address,
        help="address of /healthz and /readyz; 0 disables",
    )
    p.add_flag(
        "--metrics-secure",
        boolean=True,
        default=False,
        help="serve /metrics over HTTPS and require a bearer token allowed to get the non-resource URL "
        "/metrics (TokenReview + SubjectAccessReview)",
    )
    p.add_flag(
        "--metrics-cert-dir",
        default="",
        help="directory with tls.crt and tls.key for --metrics-secure (reloaded when they change); "
        "empty = a self-signed certificate made at start-up",
    )
    p.add_flag(
        "--leader-elect", boolean=True, default=False, help="enable leader election (one active manager)"
    )
    p.add_flag("--leader-election-id", default="ojs-k8s-operator.openjobspec.dev", help="name of the Lease")
    p.add_flag(
        "--leader-election-namespace",
        default="",
        help="namespace of the Lease; default: the pod's namespace (in-cluster) or default",
    )
    p.add_flag("--lease-duration", default=15.0, type=parse_duration, help="leader lease duration (e.g. 15s)")
    p.add_flag(
        "--renew-deadline",
        default=10.0,
        type=parse_duration,
        help="how long the leader retries renewing before giving up",
    )
    p.add_flag(
        "--retry-period", default=2.0, type=parse_duration, help="interval between leader-election tries"
    )
    p.add_flag(
        "--watch-namespace",
        repeatable=True,
        metavar="NAMESPACE",
        help="only watch this namespace; none = all namespaces",
    )
    p.add_flag("--max-concurrent-reconciles", default=4, type=_positive_int, help="workers per controller")
    p.add_flag(
        "--sync-period",
        default=10 * 3600.0,
        type=parse_duration,
        help="how often every OJSCluster and OJSWorker is reconciled again (their children: on change)",
    )
    p.add_flag(
        "--status-min-interval",
        default=30.0,
        type=parse_duration,
        help="least time between two status writes of one object that change only polled queue counts "
        "(phase, conditions and replicas are written at once), and the longest the status of an "
        "autoscaler scaling, or the first status of a new object on its way, waits for its rollout's "
        "end; 0 = every change at once",
    )
    p.add_flag("--kube-api-qps", default=50.0, type=_positive_float, help="client-side API request rate")
    p.add_flag("--kube-api-burst", default=100, type=_positive_int, help="client-side API burst")
    p.add_flag(
        "--watch-inactivity-timeout",
        default=70.0,
        type=parse_duration,
        help="a watch silent for this long is reopened",
    )
    p.add_flag(
        "--graceful-shutdown-timeout",
        default=30.0,
        type=parse_duration,
        help="how long in-flight reconciles may run after SIGTERM",
    )
    p.add_flag(
        "--server-image",
        default=None,
        type=_server_image,
        metavar="TEMPLATE",
        help=(
            "OJS server image for clusters that set none, as a template: {backend} is replaced by the "
            "backend type and {tag} by the release pinned for it "
            "(e.g. mirror.example/ojs-backend-{backend}:{tag}); "
            f"default: {_PINNED}"
        ),
    )
    p.add_flag(
        "--ojs-url-template",
        default=DEFAULT_URL_TEMPLATE,
        type=_url_template,
        help=(
            "how the operator reaches OJS servers; placeholders {name} {namespace} {service} {port} "
            "{cluster_domain}"
        ),
    )
    p.add_flag(
        "--cluster-domain",
        default="cluster.local",
        type=_cluster_domain,
        help=(
            "the cluster's DNS domain; every in-cluster URL the operator builds is "
            "<service>.<namespace>.svc.<domain> (status.endpoint, workers' OJS_URL, the default URL template)"
        ),
    )
    # Hidden, for tests: how long an informer may make no progress before /healthz fails (design.md §health:
    # 5m), and a suffix that tells several operator processes apart in the API server's audit log.
    p.add_argument(
        "--informer-stall-timeout",
        default=_hidden_env("--informer-stall-timeout", parse_duration, 300.0),
        type=parse_duration,
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--user-agent-suffix",
        default=_hidden_env("--user-agent-suffix", str, ""),
        help=argparse.SUPPRESS,
    )
    p.add_flag("--log-level", default="info", help="debug, info, warning or error")
    p.add_flag("--log-format", default="json", help="json or console")
    add_webhook_flags(p)
    return p


def build_manager(args: argparse.Namespace) -> Manager:
    """A Manager configured from parsed flags (no controllers registered)."""
    user_agent = f"ojsctrl/{__version__}"
    if getattr(args, "user_agent_suffix", ""):
        user_agent += f" {args.user_agent_suffix}"
    client = Client.from_kubeconfig(
        args.kubeconfig or None,
        options=ClientOptions(qps=args.kube_api_qps, burst=args.kube_api_burst, user_agent=user_agent),
    )
    options = ManagerOptions(
        metrics_bind_address=args.metrics_bind_address,
        health_probe_bind_address=args.health_probe_bind_address,
        leader_elect=args.leader_elect,
        leader_election_id=args.leader_election_id,
        leader_election_namespace=args.leader_election_namespace,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        namespaces=list(args.watch_namespace),
        sync_period=args.sync_period,
        status_min_interval=args.status_min_interval,
        watch_inactivity_timeout=args.watch_inactivity_timeout,
        graceful_shutdown_timeout=args.graceful_shutdown_timeout,
        informer_stall_timeout=getattr(args, "informer_stall_timeout", 300.0),
        metrics_secure=args.metrics_secure,
        metrics_cert_dir=args.metrics_cert_dir,
    )
    return Manager(client, options)


def run(
    argv: Sequence[str] | None,
    setup: Callable[[Manager, argparse.Namespace], None],
    parser: _Parser | None = None,
) -> int:
    """Parse flags, configure logging, build the manager, let `setup` register controllers, run."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        runtime_logging.configure(args.log_level, args.log_format)
    except ValueError as e:
        parser.error(str(e))
    log = structlog.get_logger("ojsctrl")
    try:
        manager = build_manager(args)
    except Exception as e:
        log.error("cannot load Kubernetes client configuration", error=str(e), kubeconfig=args.kubeconfig)
        return 1
    setup(manager, args)
    manager.install_signal_handlers()
    log.info(
        "starting",
        version=__version__,
        server=manager.client.host,
        namespaces=args.watch_namespace or "all",
        leader_elect=args.leader_elect,
    )
    return manager.run()


def _setup_operator(manager: Manager, args: argparse.Namespace) -> None:
    """Register the operator's controllers and webhooks (assembled in ``ojsctrl.app``)."""
    from ojsctrl.app import setup_operator

    setup_operator(manager, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ojsctrl` console script. `ojsctrl crds` prints the CRDs."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["crds"]:
        from ojsctrl.api.crdgen import generate_crds, render

        sys.stdout.write("".join(render(crd) for crd in generate_crds()))
        return 0
    return run(args, _setup_operator)


if __name__ == "__main__":
    sys.exit(main())
