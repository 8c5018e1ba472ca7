"""``kubectl ojs``: status, explain-scaling, pause, resume and report (kubectl finds ``kubectl-ojs`` on
PATH; it comes with the ojsctrl wheel)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from ojsctrl.plugin import report as rpt
from ojsctrl.plugin import text, views
from ojsctrl.plugin.kube import (
    OJSCLUSTERS,
    OJSWORKERS,
    VALIDATING_WEBHOOKS,
    ConfigError,
    Connection,
    connect,
)
from ojsctrl.plugin.pause import PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION, pause_patch, resume_patch
from ojsctrl.runtime.client import DEPLOYMENTS, EVENTS, HPAS, SECRETS, ApiError, NotFoundError

JSON = dict[str, Any]
OUTPUTS = ("text", "json", "yaml")

PAUSE_HELP = """\
Pause the autoscaling of an OJSWorker by setting its annotations
  ojs.openjobspec.dev/autoscaling-paused = true, or the RFC 3339 time the pause lasts until
  ojs.openjobspec.dev/paused-replicas    = N (with --replicas; removed otherwise)
with a merge patch that touches nothing else of the object. This command only writes the annotations:
the operator reads them, holds (or sets) the replicas and shows the pause in a condition; a pause with
an end time expires by itself."""


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The same flags before or after the command (kubectl ojs -n x status / kubectl ojs status -n x): the
    # sub-parsers' copies default to SUPPRESS so they do not overwrite the values given before.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", default=default, help="Path to the kubeconfig file ($KUBECONFIG).")
    parser.add_argument("--context", default=default, help="The kubeconfig context to use.")
    parser.add_argument(
        "-n", "--namespace", default=default, help="Namespace (default: the context's namespace)."
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=OUTPUTS, default="text", help="Output format: text (default), json or yaml."
    )


def _worker_command(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A command about one OJSWorker: the shared flags, the worker's name and ``-o``."""
    p: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    _common(p, suppress=True)
    p.add_argument("worker", help="OJSWorker name.")
    _output(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="kubectl ojs",
        description="Inspect and operate OJS job servers and workers run by the ojsctrl operator.",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", help="Clusters, their queues, workers and recent warnings.")
    _common(p, suppress=True)
    p.add_argument("name", nargs="?", help="Show this OJSCluster only.")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="Every namespace.")
    _output(p)

    _worker_command(
        sub, "explain-scaling", help="The autoscaler's inputs and decision for a worker, in words."
    )
    p = _worker_command(
        sub,
        "pause",
        help="Pause a worker's autoscaling (writes annotations).",
        description=PAUSE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    until = p.add_mutually_exclusive_group()
    until.add_argument(
        "--until", metavar="TIME", help="Pause until this RFC 3339 time (2026-12-05T18:00:00Z)."
    )
    until.add_argument(
        "--for", dest="duration", metavar="DURATION", help="Pause for this long (Go duration: 30m, 2h)."
    )
    p.add_argument("--replicas", type=int, metavar="N", help="Hold this many replicas while paused.")
    _worker_command(
        sub,
        "resume",
        help="Resume a worker's autoscaling (removes the pause annotations).",
        description="Remove both pause annotations with a merge patch; the operator autoscales again.",
    )

    p = sub.add_parser(
        "report",
        help="Write a .tar.gz for a bug report (Secret values and credentials redacted).",
        description=(
            "Collect the operator (Deployment, pods, logs, version) and the namespace's OJSClusters, "
            "OJSWorkers, their children and events into a .tar.gz. Secrets appear with their keys only; "
            "every value and every credential found elsewhere is replaced by <redacted>."
        ),
    )
    _common(p, suppress=True)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="Every namespace with OJS objects.")
    p.add_argument(
        "-o",
        "--output",
        dest="file",
        metavar="FILE",
        help="Tarball path (default: ojs-report-<ns>-<time>.tar.gz).",
    )
    p.add_argument("--operator-namespace", help="Where the operator runs (default: found by its label).")
    p.add_argument(
        "--operator-selector", default=rpt.OPERATOR_SELECTOR, help="Label selector of the operator's objects."
    )
    return parser


def _emit(data: JSON, fmt: str, human: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    elif fmt == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    else:
        out.write(human)


def _secret_presence(conn: Connection, clusters: list[JSON]) -> dict[str, bool] | None:
    """Whether each cluster's API-key Secret exists, read as metadata only: the value is never fetched.
    None when the user may not read Secrets."""
    out: dict[str, bool] = {}
    for c in clusters:
        auth = views.auth_view(c, None)
        if auth.get("disabled"):
            continue
        key = f"{c['metadata']['namespace']}/{auth['secret']}"
        try:
            conn.client.get(SECRETS, auth["secret"], c["metadata"]["namespace"], metadata_only=True)
            out[key] = True
        except NotFoundError:
            out[key] = False
        except ApiError:
            return None
    return out


def _operator(conn: Connection, now: dt.datetime) -> JSON:
    """The operator's Deployments (any namespace) and webhook, each None when it may not be listed."""
    try:
        deps: list[JSON] | None = conn.client.list(DEPLOYMENTS, None, label_selector=rpt.OPERATOR_SELECTOR)[0]
    except ApiError:
        deps = None
    try:
        hooks: list[JSON] | None = conn.client.list(VALIDATING_WEBHOOKS, None)[0]
    except ApiError:
        hooks = None
    return views.operator_view(deps, hooks, now)


def cmd_status(conn: Connection, args: argparse.Namespace, out: TextIO, now: dt.datetime) -> int:
    ns = None if args.all_namespaces else conn.namespace
    if args.name and args.all_namespaces:
        raise UsageError("status: a NAME and -A exclude each other")
    clusters, _ = conn.client.list(OJSCLUSTERS, ns)
    workers, _ = conn.client.list(OJSWORKERS, ns)
    if args.name:
        clusters = [c for c in clusters if c["metadata"]["name"] == args.name]
        if not clusters:
            raise NotFound(f'OJSCluster "{args.name}" not found in namespace {conn.namespace}')
        workers = [w for w in workers if (w.get("spec") or {}).get("clusterRef") == args.name]
    try:
        events, _ = conn.client.list(EVENTS, ns, field_selector="type=Warning")
    except ApiError:
        events = []
    view = views.status_view(
        clusters, workers, events, _secret_presence(conn, clusters), now, _operator(conn, now)
    )
    painter = text.Painter(args.output == "text" and text.use_colour(out))
    _emit(view, args.output, text.render_status(view, painter), out)
    return 0


def _get_worker(conn: Connection, name: str) -> JSON:
    try:
        return conn.client.get(OJSWORKERS, name, conn.namespace)
    except NotFoundError:
        raise NotFound(f'OJSWorker "{name}" not found in namespace {conn.namespace}') from None


def cmd_explain(conn: Connection, args: argparse.Namespace, out: TextIO, now: dt.datetime) -> int:
    worker = _get_worker(conn, args.worker)
    cluster = None
    ref = (worker.get("spec") or {}).get("clusterRef")
    if ref:
        try:
            cluster = conn.client.get(OJSCLUSTERS, ref, conn.namespace)
        except NotFoundError:
            cluster = None
    hpa = None
    if views.worker_mode(worker.get("spec") or {}) == "cpu":
        try:
            hpa = conn.client.get(HPAS, f"{args.worker}-worker", conn.namespace)
        except ApiError:
            hpa = None
    view = views.explain_scaling(worker, cluster, hpa, now)
    painter = text.Painter(args.output == "text" and text.use_colour(out))
    _emit(view, args.output, text.render_explain(view, painter), out)
    return 0


def _patch_worker(conn: Connection, name: str, patch: JSON, args: argparse.Namespace, out: TextIO) -> int:
    _get_worker(conn, name)
    obj = conn.client.patch(OJSWORKERS, name, patch, conn.namespace, field_manager="kubectl-ojs")
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    result = {
        "namespace": conn.namespace,
        "name": name,
        "annotations": {k: ann[k] for k in (PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION) if k in ann},
    }
    _emit(result, args.output, text.render_pause(result), out)
    return 0


def cmd_pause(conn: Connection, args: argparse.Namespace, out: TextIO, now: dt.datetime) -> int:
    try:
        patch = pause_patch(until=args.until, duration=args.duration, replicas=args.replicas, now=now)
    except ValueError as e:
        raise UsageError(f"pause: {e}") from None
    return _patch_worker(conn, args.worker, patch, args, out)


def cmd_resume(conn: Connection, args: argparse.Namespace, out: TextIO, now: dt.datetime) -> int:
    return _patch_worker(conn, args.worker, resume_patch(), args, out)


def cmd_report(conn: Connection, args: argparse.Namespace, out: TextIO, now: dt.datetime) -> int:
    namespaces = None if args.all_namespaces else [conn.namespace]
    label = "all" if args.all_namespaces else conn.namespace
    path = args.file or f"ojs-report-{label}-{now.strftime('%Y%m%dT%H%M%SZ')}.tar.gz"
    rep = rpt.collect(
        conn,
        namespaces,
        operator_namespace=args.operator_namespace,
        operator_selector=args.operator_selector,
        now=now,
    )
    # Owner-only: the report is redacted, but it still describes the cluster.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    members = rpt.write_tarball(rep, path, now=now)
    out.write(f"wrote {path}: {len(members)} files, {len(rep.errors)} could not be read (see errors.txt)\n")
    return 0


class UsageError(Exception):
    """A flag or argument that cannot work (exit code 2)."""


class NotFound(Exception):
    """The named object does not exist (exit code 1)."""


COMMANDS = {
    "status": cmd_status,
    "explain-scaling": cmd_explain,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point of ``kubectl-ojs``; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    for name in ("kubeconfig", "context", "namespace"):
        if not hasattr(args, name):
            setattr(args, name, None)
    now = dt.datetime.now(dt.UTC)
    try:
        conn = connect(args.kubeconfig, args.context, args.namespace)
        return COMMANDS[args.command](conn, args, out, now)
    except UsageError as e:
        err.write(f"error: {e}\n")
        return 2
    except (ConfigError, NotFound) as e:
        err.write(f"error: {e}\n")
        return 1
    except ApiError as e:
        err.write(f"error: the API server answered {e.status} {e.reason}: {e}\n")
        return 1


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())
