"""The real operator runs authenticated as its ServiceAccount (a TokenRequest token) and converges an
OJSCluster and an OJSWorker in a `restricted` namespace with no 403, and the audit log of that run is
compared with the ClusterRole and Role: every grant is used or justified in JUSTIFIED below (that run
serves --metrics-secure and is scraped, so the TokenReview and SubjectAccessReview grants are used).

The whole e2e suite can run as the ServiceAccount too: see tests/harness/serviceaccount.py.

Conventions of the delivery tests: tests/e2e/delivery/conftest.py.
"""

from __future__ import annotations

import json
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.delivery import (
    GROUP,
    WEBHOOK_CONFIG,
    docs,
    install_crds,
    restricted_namespace,
    webhooks_supported,
)
from tests.harness.kube import (
    ROOT,
    wait_until,
)
from tests.harness.operator import OperatorProcess
from tests.harness.serviceaccount import NAMESPACE, SA_USER, service_account_kubeconfig, service_account_token

# Grants of manifests/rbac that the converge run below does not exercise, and why they are needed.
JUSTIFIED: dict[tuple[str, str, str], str] = {
    (GROUP, "ojsclusters", "get"): "the admission webhook GETs an OJSWorker's cluster when its informer has "
    "not seen it yet (created a moment before the worker, or outside --watch-namespace)",
    ("", "pods", "patch"): "drain before shutdown sets controller.kubernetes.io/pod-deletion-cost on idle "
    "workers; needs an OJS server listing busy workers (tests/e2e/worker/test_worker.py covers it)",
    ("", "events", "patch"): "an identical event repeated within 10 minutes is aggregated (count, "
    "lastTimestamp) instead of creating another Event",
    ("", "pods", "list"): "the worker pod informer starts with the first drain before shutdown, which needs "
    "an OJS server listing busy workers (tests/e2e/worker/test_worker.py covers it)",
    ("", "pods", "watch"): "the worker pod informer, as for list",
    ("", "secrets", "patch"): "the embedded Redis password Secret is released (owner reference removed) "
    "when embedded Redis is turned off and adopted back when it is on again "
    "(tests/e2e/usage/test_newuser.py)",
    ("", "persistentvolumeclaims", "patch"): "the Redis claim is applied when a spec asks for storage, "
    "and released or adopted back on a spec change (tests/e2e/usage/test_newuser.py)",
}
# Reads of children. Deployments, Services and ConfigMaps: the caches cover every object of these kinds
# (ours in full, the rest as metadata), so one is read only when the cache has not caught up with our
# own apply yet - a race this run may or may not hit. PDBs, PVCs and HPAs (made for some clusters and
# workers only): read before their first apply, which this run's specs may not ask for.
JUSTIFIED.update(
    {
        (group, plural, "get"): "a child missing from the cache right after our own apply is read once "
        "(runtime/apply.py); otherwise the informers answer"
        for group, plural in (("", "services"), ("", "configmaps"))
    }
)
JUSTIFIED[("apps", "deployments", "get")] = (
    "a Deployment missing from the cache right after our own apply, or one whose pod template digest the "
    "operator has not checked yet (edited by hand, or after a restart), is read once (runtime/apply.py)"
)
JUSTIFIED.update(
    {
        (group, plural, "get"): "read before its first apply (only the managed ones are cached), when a "
        "spec asks for one"
        for group, plural in (
            ("", "persistentvolumeclaims"),
            ("policy", "poddisruptionbudgets"),
            ("autoscaling", "horizontalpodautoscalers"),
        )
    }
)
# Grants used only by the self-managed webhook certificates; justified when this run has no webhook.
WEBHOOK_GRANTS: dict[tuple[str, str, str], str] = {
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "get"): "self-managed certificates "
    "read the caBundle of ojs-operator-validating-webhook-configuration",
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "update"): "self-managed "
    "certificates publish the CA in that caBundle",
    ("", "secrets", "update"): "self-managed certificates rewrite ojs-operator-webhook-server-cert when they "
    "rotate (tests/e2e/webhooks/test_webhooks.py covers rotation)",
}


# Grants used only by --metrics-secure (each scrape's token is reviewed, the answer cached per token). The
# converge run serves its metrics that way and is scraped with an authorised token, so these must appear in
# its audit log: they are checked as used, not accepted as justified.
METRICS_SECURE_GRANTS: dict[tuple[str, str, str], str] = {
    ("authentication.k8s.io", "tokenreviews", "create"): "--metrics-secure authenticates a scrape's bearer "
    "token with a TokenReview (runtime/httpserver.py MetricsAuthorizer)",
    ("authorization.k8s.io", "subjectaccessreviews", "create"): "--metrics-secure authorises the reviewed "
    "user for get on the non-resource URL /metrics with a SubjectAccessReview",
}
METRICS_READER = "ojsctrl-e2e-delivery-metrics-reader"

# ----------------------------------------------------------------------------------------- as the SA
SERVICEMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def _get(plane: ControlPlane, *what: str) -> dict[str, Any] | None:
    out = plane.kubectl("get", *what, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _phase(plane: ControlPlane, kind: str, ns: str, name: str) -> str | None:
    obj = _get(plane, kind, "-n", ns, name) or {}
    return (obj.get("status") or {}).get("phase")


def _apply(plane: ControlPlane, obj: dict[str, Any]) -> None:
    plane.kubectl("apply", "--server-side", "--field-manager=ojsctrl-e2e", "-f", "-", input=json.dumps(obj))


def metrics_scraper_token(plane: ControlPlane, ns: str) -> str:
    """A token of a ServiceAccount `metrics-scraper` in `ns`, bound to a ClusterRole allowing `get` on the
    non-resource URL /metrics (what a Prometheus scraping a --metrics-secure manager needs)."""
    rbac = "rbac.authorization.k8s.io"
    for obj in (
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "metrics-scraper", "namespace": ns},
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": METRICS_READER},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": METRICS_READER},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": METRICS_READER},
            "subjects": [{"kind": "ServiceAccount", "name": "metrics-scraper", "namespace": ns}],
        },
    ):
        _apply(plane, obj)
    return service_account_token(plane, ns, "metrics-scraper")


def secure_scrape(port: int, token: str | None) -> tuple[int, str]:
    """GET https://127.0.0.1:<port>/metrics (the manager's self-signed certificate is not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def sa_run(dplane: ControlPlane) -> dict[str, Any]:
    """The operator, authenticated as its ServiceAccount, through the life cycle of a cluster and a worker."""
    install_crds(dplane)
    kubeconfig = service_account_kubeconfig(dplane)
    dplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(SERVICEMONITOR_CRD))
    dplane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com"
    )
    ns = restricted_namespace(dplane, "sa", {"ojsctrl-e2e-delivery": "on"})
    # Made before the operator starts: the RBAC authoriser sees the binding by the time of the scrape.
    scraper = metrics_scraper_token(dplane, ns)
    with_webhooks = webhooks_supported()
    args = [
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-secure",
        "--leader-elect",
        "--leader-election-namespace",
        NAMESPACE,
        "--ojs-url-template",
        f"http://127.0.0.1:{free_port()}",
        "--log-level",
        "debug",
    ]
    if with_webhooks:
        from ojsctrl.webhooks.manifests import dev_webhook_configuration

        port = free_port()
        vwc = dev_webhook_configuration(
            port, name=WEBHOOK_CONFIG, namespace_selector={"matchLabels": {"ojsctrl-e2e-delivery": "on"}}
        )
        dplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(vwc))
        certs = tempfile.mkdtemp(prefix="ojsctrl-delivery-certs-")
        args += [
            "--enable-webhooks",
            "--webhook-host",
            "127.0.0.1",
            "--webhook-port",
            str(port),
            "--webhook-cert-dir",
            certs,
            "--webhook-service-namespace",
            NAMESPACE,
            "--webhook-config-name",
            WEBHOOK_CONFIG,
        ]
    started = time.monotonic()
    op = OperatorProcess(dplane, "ojsctrl", *args, name="ojsctrl-as-sa")
    try:
        try:
            wait_until("operator (as its ServiceAccount) ready", op.ready, 60)
        except AssertionError as e:
            raise AssertionError(f"{e}\noperator log (last lines):\n{op.logs()[-3000:]}") from None
        if with_webhooks:
            wait_until(
                "caBundle published",
                lambda: all(
                    w["clientConfig"].get("caBundle")
                    for w in (
                        _get(dplane, "validatingwebhookconfiguration", WEBHOOK_CONFIG)
                        or {"webhooks": [{"clientConfig": {}}]}
                    )["webhooks"]
                ),
                60,
            )
        dplane.kubectl(
            "create",
            "secret",
            "generic",
            "backend",
            "-n",
            ns,
            "--from-literal=url=redis://redis.example:6379/0",
        )
        cluster: dict[str, Any] = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "OJSCluster",
            "metadata": {"name": "sa", "namespace": ns},
            "spec": {
                "backend": {"type": "redis", "embedded": True},
                "replicas": 2,
                "image": "ghcr.io/openjobspec/ojs-server:v0.5.0",
                "monitoring": {"enabled": True, "serviceMonitor": True, "grafanaDashboard": True},
            },
        }
        worker: dict[str, Any] = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "OJSWorker",
            "metadata": {"name": "sa", "namespace": ns},
            "spec": {
                "clusterRef": "sa",
                "jobTypes": ["email.send"],
                "image": "example.org/worker:v1",
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "256Mi"}},
                "autoScaling": {"enabled": True, "metric": "cpu", "minReplicas": 1, "maxReplicas": 3},
            },
        }
        _apply(dplane, cluster)
        _apply(dplane, worker)
        wait_until("cluster Running", lambda: _phase(dplane, "ojscluster", ns, "sa") == "Running", 90, 0.5)
        wait_until("worker Running", lambda: _phase(dplane, "ojsworker", ns, "sa") == "Running", 90, 0.5)
        converged = time.monotonic() - started
        for what in (
            ("poddisruptionbudget", "sa-server"),
            ("servicemonitor", "sa-server"),
            ("configmap", "sa-dashboard"),
            ("horizontalpodautoscaler", "sa-worker"),
            ("secret", "sa-redis"),
            ("secret", "sa-api-key"),
        ):
            assert _get(dplane, what[0], "-n", ns, what[1]) is not None, what
        pods = json.loads(dplane.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        components = sorted(p["metadata"]["labels"].get("app.kubernetes.io/component", "") for p in pods)
        # Created by the Deployment controller in a `restricted` namespace: all admitted.
        assert components.count("server") == 2 and "backend" in components and "worker" in components

        # Persistent Redis storage: a PersistentVolumeClaim.
        cluster["spec"]["backend"]["redis"] = {"storage": {"size": "1Gi"}}
        _apply(dplane, cluster)
        wait_until("Redis PVC", lambda: _get(dplane, "pvc", "-n", ns, "sa-redis") is not None, 60)
        # Then everything optional off: the operator removes what it owns.
        cluster["spec"] = {
            "backend": {"type": "redis", "urlSecretRef": {"name": "backend", "key": "url"}},
            "replicas": 1,
            "image": "ghcr.io/openjobspec/ojs-server:v0.5.0",
            "monitoring": {"enabled": False},
        }
        dplane.kubectl(
            "apply", "--server-side", "--field-manager=ojsctrl-e2e", "--force-conflicts", "-f", "-",
            input=json.dumps(cluster),
        )  # fmt: skip
        worker["spec"]["autoScaling"] = {"enabled": False}
        _apply(dplane, worker)
        gone = (
            ("deployment", "sa-redis"),
            ("service", "sa-redis"),
            ("poddisruptionbudget", "sa-server"),
            ("servicemonitor", "sa-server"),
            ("configmap", "sa-dashboard"),
            ("horizontalpodautoscaler", "sa-worker"),
        )
        for what in gone:
            wait_until(
                f"{what} removed", lambda what=what: _get(dplane, what[0], "-n", ns, what[1]) is None, 60, 0.3
            )
        # The Redis data and its password are kept (design.md §storage): released, not deleted, as the
        # ServiceAccount may (patch of ownership metadata only; the ValidatingAdmissionPolicy allows exactly
        # that).
        for what in (("pvc", "sa-redis"), ("secret", "sa-redis")):

            def released(what: tuple[str, str] = what) -> bool:
                obj = _get(dplane, what[0], "-n", ns, what[1])
                meta = (obj or {}).get("metadata", {})
                return (
                    obj is not None
                    and not meta.get("ownerReferences")
                    and "ojs.openjobspec.dev/released" in meta.get("annotations", {})
                )

            wait_until(f"{what} released", released, 60, 0.3)
        wait_until(
            "cluster Running again", lambda: _phase(dplane, "ojscluster", ns, "sa") == "Running", 90, 0.5
        )
        lease = _get(dplane, "lease", "-n", NAMESPACE, "ojs-k8s-operator.openjobspec.dev")
        assert lease is not None and lease["spec"].get("holderIdentity")

        # --metrics-secure as the ServiceAccount: the operator reviews the scraper's token (TokenReview,
        # SubjectAccessReview); without those grants it answers 401 and logs the 403 it got.
        assert secure_scrape(op.metrics_port, None)[0] == 401
        scraped: dict[str, Any] = {}

        def authorised() -> bool:
            scraped["status"], scraped["body"] = secure_scrape(op.metrics_port, scraper)
            return bool(scraped["status"] == 200)

        try:
            wait_until("an authorised scrape of the secure metrics endpoint", authorised, 30, 0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}: last answer {scraped}\noperator log:\n{op.logs()[-3000:]}") from None
        assert "controller_runtime_reconcile_total" in scraped["body"]
    finally:
        op.stop()
        dplane.kubectl("delete", "clusterrolebinding,clusterrole", METRICS_READER, "--ignore-not-found")
    logs = op.logs()
    if with_webhooks:
        dplane.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "--ignore-not-found")
    return {"logs": logs, "namespace": ns, "webhooks": with_webhooks, "converged": converged}


def test_operator_converges_as_its_service_account(sa_run: dict[str, Any]) -> None:
    print(f"converged in {sa_run['converged']:.1f}s as {SA_USER} (webhooks: {sa_run['webhooks']})")
    denial = re.compile(r"\b403\b(?!\w)(?=[ ,}:\"])|forbidden", re.I)
    forbidden = [line for line in sa_run["logs"].splitlines() if denial.search(line)]
    assert not forbidden, "the operator hit RBAC denials:\n" + "\n".join(forbidden[:20])


def _grants() -> dict[tuple[str, str, str], list[str] | None]:
    """(apiGroup, resource, verb) -> resourceNames (None: any) from the manager's ClusterRoles and Role.
    A grant in several rules allows the union of their names (any name if one rule names none)."""
    out: dict[tuple[str, str, str], list[str] | None] = {}
    for name in ("role.yaml", "cluster_role.yaml", "leader_election_role.yaml"):
        for rule in docs((ROOT / "manifests" / "rbac" / name).read_text())[0]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        k = (group, resource, verb)
                        names = rule.get("resourceNames")
                        if k in out and (out[k] is None or names is None):
                            out[k] = None
                        else:
                            out[k] = sorted({*(out.get(k) or []), *(names or [])}) if names else None
    return out


def test_audit_log_matches_the_cluster_role(dplane: ControlPlane, sa_run: dict[str, Any]) -> None:
    used: dict[tuple[str, str, str], int] = {}
    denied = []
    names: dict[tuple[str, str, str], set[str]] = {}
    for event in dplane.audit_events():
        if (event.get("user") or {}).get("username") != SA_USER:
            continue
        ref = event.get("objectRef")
        code = (event.get("responseStatus") or {}).get("code")
        if code == 403:
            denied.append(f"{event.get('verb')} {event.get('requestURI')}")
        if not ref:
            continue  # discovery and other non-resource URLs: every authenticated user may read them
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        k = (ref.get("apiGroup", ""), resource, event["verb"])
        used[k] = used.get(k, 0) + 1
        names.setdefault(k, set()).add(ref.get("name") or "")
        if event["verb"] == "patch" and code == 201:
            # A server-side apply that creates an object is authorised as create (the audit log keeps the
            # request's verb, patch).
            created = (k[0], k[1], "create")
            used[created] = used.get(created, 0) + 1
    assert not denied, f"{len(denied)} requests of {SA_USER} were forbidden: {denied[:10]}"
    assert used, f"no audit events for {SA_USER}"
    grants = _grants()
    ungranted = sorted(set(used) - set(grants))
    assert not ungranted, f"used without a grant (yet not denied?): {ungranted}"
    for k, resource_names in grants.items():
        if resource_names and k in names:
            assert names[k] <= set(resource_names), f"{k} used on {names[k]}, granted only {resource_names}"
    justified = dict(JUSTIFIED)
    if not sa_run["webhooks"]:
        justified.update(WEBHOOK_GRANTS)
    else:
        justified[("", "secrets", "update")] = WEBHOOK_GRANTS[("", "secrets", "update")]
    unused = {k: v for k, v in grants.items() if k not in used and k not in justified}
    assert not unused, "granted but neither used in this run nor justified in JUSTIFIED: " + ", ".join(
        f"{g or 'core'}/{r} {v}" for g, r, v in sorted(unused)
    )
    assert set(METRICS_SECURE_GRANTS) <= set(grants), "the ClusterRole lacks the --metrics-secure reviews"
    unreviewed = {k: why for k, why in METRICS_SECURE_GRANTS.items() if k not in used}
    assert not unreviewed, f"the secure metrics scrape made no such request: {unreviewed}"
    print(
        f"{len(grants)} grants: {len(set(grants) & set(used))} used, {len(set(grants) - set(used))} justified"
    )
    for k in sorted(used):
        print(f"  used {used[k]:5d}x {k[0] or 'core'}/{k[1]} {k[2]}")
