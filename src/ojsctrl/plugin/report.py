"""``kubectl ojs report``: a .tar.gz to attach to a bug report.

It holds the operator (Deployment, ReplicaSets, pods, their logs through the API server, its version),
the OJS CRDs' state, and for each namespace its OJSClusters and OJSWorkers, their children (Deployments,
Services, ConfigMaps, PodDisruptionBudgets, HPAs, ServiceMonitors when that CRD is served, claims, pods),
the Secrets they use (keys only) and the events. Everything passes through :mod:`ojsctrl.plugin.redact`
before it is written; what could not be read is listed in ``errors.txt`` instead of failing the report.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import yaml

from ojsctrl.plugin import redact
from ojsctrl.plugin.kube import (
    OJSCLUSTERS,
    OJSWORKERS,
    REPLICASETS,
    SERVICEMONITORS,
    VALIDATING_WEBHOOKS,
    Connection,
    pod_log,
)
from ojsctrl.runtime.client import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    HPAS,
    LEASES,
    PDBS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    ApiError,
    Resource,
)

JSON = dict[str, Any]
OPERATOR_SELECTOR = "app.kubernetes.io/name=ojs-operator"
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=ojsctrl"
LOG_TAIL_LINES = 5000
CHILD_KINDS: tuple[tuple[str, Resource], ...] = (
    ("deployments", DEPLOYMENTS),
    ("replicasets", REPLICASETS),
    ("pods", PODS),
    ("services", SERVICES),
    ("configmaps", CONFIGMAPS),
    ("poddisruptionbudgets", PDBS),
    ("horizontalpodautoscalers", HPAS),
    ("persistentvolumeclaims", PVCS),
)


def plugin_version() -> str:
    """The installed ojsctrl wheel's version (the plugin ships in it)."""
    try:
        return metadata.version("ojsctrl")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Report:
    """The files of the report (path -> text) and what could not be collected."""

    files: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    secrets: list[JSON] = field(default_factory=list)

    def add_list(self, path: str, items: Iterable[JSON]) -> None:
        """A YAML ``List`` of redacted objects."""
        body = {"apiVersion": "v1", "kind": "List", "items": [redact.redact_object(i) for i in items]}
        self.files[path] = yaml.safe_dump(body, sort_keys=False, default_flow_style=False)

    def add_text(self, path: str, text: str) -> None:
        """A text file (logs, versions), with credentials redacted."""
        self.files[path] = redact.redact_text(text)

    def attempt(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one read, ``fn(*args, **kwargs)``; an error becomes a line of errors.txt and None."""
        try:
            return fn(*args, **kwargs)
        except ApiError as e:
            self.errors.append(f"{what}: {e.status} {e.reason}: {str(e)[:300]}")
        except Exception as e:
            self.errors.append(f"{what}: {_describe(e)}")
        return None


def _describe(e: Exception) -> str:
    """One line for an error: the kubernetes package's ApiException carries the status and the API
    server's message in its body (its str() adds every response header)."""
    status, body = getattr(e, "status", None), getattr(e, "body", None)
    if status is not None:
        message = ""
        try:
            message = str(json.loads(body or "{}").get("message") or "")
        except (ValueError, AttributeError):
            message = str(body or "")
        return f"{status} {getattr(e, 'reason', '')}: {message}"[:300]
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]


def _list(conn: Connection, res: Resource, ns: str | None, selector: str | None = None) -> list[JSON]:
    items, _ = conn.client.list(res, ns, label_selector=selector)
    return items


def _secret_refs(objs: Iterable[JSON]) -> set[str]:
    """Names of the Secrets the objects refer to (any ``*SecretRef``/``secretKeyRef``/``secretRef`` and
    ``secretName``), plus the ones a cluster's operator creates."""
    names: set[str] = set()

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, dict):
            if key.lower().endswith(("secretref", "secretkeyref")) and isinstance(v.get("name"), str):
                names.add(v["name"])
            for k, x in v.items():
                if k == "secretName" and isinstance(x, str):
                    names.add(x)
                walk(x, k)
        elif isinstance(v, list):
            for x in v:
                walk(x, key)

    for o in objs:
        walk(o.get("spec") or {})
        if o.get("kind") == "OJSCluster":
            name = (o.get("metadata") or {}).get("name")
            spec = o.get("spec") or {}
            backend = spec.get("backend") or {}
            if not (spec.get("auth") or {}).get("disabled"):
                names.add(f"{name}-api-key")
            if backend.get("embedded") or (backend.get("stateStore") or {}).get("embedded"):
                names.add(f"{name}-redis")
    return names


def _collect_operator(conn: Connection, rep: Report, namespace: str | None, selector: str) -> None:
    deps = rep.attempt("list operator Deployments", lambda: _list(conn, DEPLOYMENTS, namespace, selector))
    if deps is None and namespace is None:
        # No cluster-wide list: try where the manifests install it.
        namespace = "ojs-system"
        deps = rep.attempt(
            "list operator Deployments in ojs-system", lambda: _list(conn, DEPLOYMENTS, namespace, selector)
        )
    deps = deps or []
    if not deps:
        rep.errors.append(
            f"no operator Deployment found with label {selector}"
            + (f" in namespace {namespace}" if namespace else " in any namespace")
            + " (--operator-namespace / --operator-selector choose another)"
        )
    versions = []
    for ns in sorted({d["metadata"]["namespace"] for d in deps}):
        mine = [d for d in deps if d["metadata"]["namespace"] == ns]
        base = f"operator/{ns}"
        rep.add_list(f"{base}/deployments.yaml", mine)
        for d in mine:
            labels = d["metadata"].get("labels") or {}
            for c in ((d.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or ():
                versions.append(
                    f"{ns}/{d['metadata']['name']} container {c.get('name')}: image {c.get('image')}"
                    + (
                        f", app.kubernetes.io/version {labels['app.kubernetes.io/version']}"
                        if "app.kubernetes.io/version" in labels
                        else ""
                    )
                )
        for fname, res in (("replicasets", REPLICASETS), ("pods", PODS), ("services", SERVICES)):
            items = rep.attempt(f"list operator {fname} in {ns}", _list, conn, res, ns, selector)
            if items is not None:
                rep.add_list(f"{base}/{fname}.yaml", items)
            if fname == "pods":
                for pod in items or ():
                    _collect_logs(conn, rep, base, pod)
        for fname, res in (("leases", LEASES), ("events", EVENTS)):
            items = rep.attempt(f"list {fname} in {ns}", _list, conn, res, ns)
            if items is not None:
                rep.add_list(f"{base}/{fname}.yaml", items)
        secrets = rep.attempt(f"list Secrets in {ns}", _list, conn, SECRETS, ns)
        if secrets is not None:
            rep.secrets += secrets
            rep.add_list(f"{base}/secrets.yaml", secrets)
    rep.add_text("operator/version.txt", "\n".join(versions) + "\n" if versions else "operator not found\n")


def _collect_logs(conn: Connection, rep: Report, base: str, pod: JSON) -> None:
    meta = pod["metadata"]
    for c in (pod.get("spec") or {}).get("containers") or ():
        text = rep.attempt(
            f"logs of pod {meta['namespace']}/{meta['name']} container {c['name']}",
            pod_log,
            conn,
            meta["namespace"],
            meta["name"],
            c["name"],
            LOG_TAIL_LINES,
        )
        if text is not None:
            rep.add_text(f"{base}/logs/{meta['name']}_{c['name']}.log", text)


def _collect_namespace(conn: Connection, rep: Report, ns: str, monitors: bool) -> None:
    base = f"namespaces/{ns}"
    ojs: list[JSON] = []
    for fname, res in (("ojsclusters", OJSCLUSTERS), ("ojsworkers", OJSWORKERS)):
        items = rep.attempt(f"list {fname} in {ns}", _list, conn, res, ns)
        if items is not None:
            ojs += items
            rep.add_list(f"{base}/{fname}.yaml", items)
    kinds = [*CHILD_KINDS, ("servicemonitors", SERVICEMONITORS)] if monitors else list(CHILD_KINDS)
    for fname, res in kinds:
        items = rep.attempt(f"list {fname} in {ns}", _list, conn, res, ns, MANAGED_SELECTOR)
        if items is not None:
            rep.add_list(f"{base}/{fname}.yaml", items)
    secrets: list[JSON] = []
    for name in sorted(_secret_refs(ojs)):
        try:
            secrets.append(conn.client.get(SECRETS, name, ns))
        except ApiError as e:
            if e.status == 404:
                rep.errors.append(f"Secret {ns}/{name}: referenced, not found")
                continue
            # Without read access the keys are still worth knowing.
            meta = rep.attempt(f"Secret {ns}/{name}", conn.client.get, SECRETS, name, ns, metadata_only=True)
            if meta is not None:
                secrets.append({"kind": "Secret", **meta})
    rep.secrets += secrets
    rep.add_list(f"{base}/secrets.yaml", secrets)
    events = rep.attempt(f"list events in {ns}", lambda: _list(conn, EVENTS, ns))
    if events is not None:
        events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        rep.add_list(f"{base}/events.yaml", events)


def collect(
    conn: Connection,
    namespaces: list[str] | None,
    *,
    operator_namespace: str | None = None,
    operator_selector: str = OPERATOR_SELECTOR,
    now: dt.datetime | None = None,
) -> Report:
    """Read everything the report holds; ``namespaces`` None means every namespace with OJS objects."""
    now = now or dt.datetime.now(dt.UTC)
    rep = Report()
    version = rep.attempt("server version", conn.client.server_version)
    if version is not None:
        rep.add_text("cluster/version.yaml", yaml.safe_dump(version, sort_keys=True))
    crds = rep.attempt("list CRDs", lambda: _list(conn, CRDS, None))
    if crds is not None:
        mine = [c for c in crds if str(c["metadata"]["name"]).endswith(".ojs.openjobspec.dev")]
        # The schema is the release's; name, versions and conditions say which release is installed.
        slim = [
            {
                "kind": "CustomResourceDefinition",
                "metadata": c["metadata"],
                "spec": {
                    "versions": [
                        {k: v.get(k) for k in ("name", "served", "storage")} for v in c["spec"]["versions"]
                    ]
                },
                "status": c.get("status") or {},
            }
            for c in mine
        ]
        rep.add_list("cluster/crds.yaml", slim)
    hooks = rep.attempt(
        "list ValidatingWebhookConfigurations", lambda: _list(conn, VALIDATING_WEBHOOKS, None)
    )
    if hooks is not None:
        ours = [
            h
            for h in hooks
            if any(str(w.get("name", "")).endswith("openjobspec.dev") for w in h.get("webhooks") or ())
        ]
        for h in ours:
            for w in h.get("webhooks") or ():
                (w.get("clientConfig") or {}).pop("caBundle", None)
        rep.add_list("cluster/validatingwebhookconfigurations.yaml", ours)
    _collect_operator(conn, rep, operator_namespace, operator_selector)
    if namespaces is None:
        found: set[str] = set()
        for res in (OJSCLUSTERS, OJSWORKERS):
            items = rep.attempt(f"list {res.plural} in all namespaces", _list, conn, res, None)
            found.update(i["metadata"]["namespace"] for i in items or ())
        namespaces = sorted(found)
    monitors = bool(
        rep.attempt(
            "discover ServiceMonitor",
            lambda: conn.client.served("monitoring.coreos.com", "v1", "servicemonitors"),
        )
    )
    for ns in namespaces:
        _collect_namespace(conn, rep, ns, monitors)
    rep.files["README.txt"] = (
        f"kubectl ojs report, written {now.strftime('%Y-%m-%dT%H:%M:%SZ')} by ojsctrl {plugin_version()}\n"
        f"context: {conn.context or '-'}; namespaces: {', '.join(namespaces) or '-'}\n\n"
        "Secret values and credentials are replaced by <redacted>: Secrets keep only their keys, env values\n"
        "with credential-like names, URL passwords, authorization headers, last-applied annotations, and\n"
        "any value of a Secret the report read, wherever it appeared. Check before you share it anyway.\n\n"
        "operator/    the operator's Deployment, pods, logs (last lines), leases, events, version.txt\n"
        "cluster/     API server version, the OJS CRDs' versions and conditions, the admission webhook\n"
        "namespaces/  per namespace: OJSClusters, OJSWorkers, their children, Secrets (keys only), events\n"
        "errors.txt   what could not be read\n"
    )
    rep.files["errors.txt"] = "\n".join(rep.errors) + "\n" if rep.errors else "none\n"
    return rep


def write_tarball(
    rep: Report, path: str, *, now: dt.datetime | None = None, root: str = "ojs-report"
) -> list[str]:
    """Write the report as a gzip'd tar (every file under ``root/``) after the last redaction pass: the
    known Secret values are removed from every file. Returns the member names."""
    known = redact.known_values(rep.secrets)
    stamp = (now or dt.datetime.now(dt.UTC)).timestamp()
    names = []
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(rep.files):
            data = redact.scrub_known(rep.files[name], known).encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            info.mtime = int(stamp)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
            names.append(info.name)
    return names
