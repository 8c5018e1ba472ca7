"""The secure metrics endpoint refuses unauthorised scrapes (TokenReview and SubjectAccessReview).

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import collections
import ssl
import urllib.error
import urllib.request

import pytest

from tests.harness import ledger
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    FULL,
    SERVICEACCOUNTS,
    AuditLog,
    by_operator,
    driver,
    ns_for,
    wait_until,
)
from tests.harness.operator import OperatorProcess, start_op

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def test_secure_metrics_refuse_unauthorised_scrapes(crds: ControlPlane, ops: list[OperatorProcess]) -> None:
    ns = ns_for(crds, "rel-metrics")
    client = driver(crds)
    audit = AuditLog(crds)
    op = start_op(crds, "--metrics-secure", name="rel-metrics", namespaces=[ns], started=ops)
    wait_until("operator ready", op.ready, 60)
    role = f"ojsctrl-metrics-reader-{ns}"
    for sa in ("scraper", "nobody"):
        client.create(
            SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}, ns
        )
    client.create(
        CLUSTERROLES,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
        },
    )
    client.create(
        CLUSTERROLEBINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": ns}],
        },
    )
    try:

        def token(sa: str) -> str:
            out = client.request(
                "POST",
                f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 600},
                },
            )
            ledger.plant(out["status"]["token"])
            return str(out["status"]["token"])

        good, bad = token("scraper"), token("nobody")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def scrape(tok: str | None, scheme: str = "https") -> tuple[int, str]:
            req = urllib.request.Request(f"{scheme}://127.0.0.1:{op.metrics_port}/metrics")
            if tok:
                req.add_header("Authorization", f"Bearer {tok}")
            try:
                with urllib.request.urlopen(req, timeout=10, context=ctx if scheme == "https" else None) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        assert scrape(None)[0] == 401
        assert scrape("not-a-token")[0] == 401
        status, body = scrape(bad)
        assert status == 403 and f"system:serviceaccount:{ns}:nobody" in body
        scrapes = 10
        for _ in range(scrapes):
            status, body = scrape(good)
            assert status == 200 and "controller_runtime_reconcile_total" in body
        op.metrics_snapshot = body  # type: ignore[attr-defined]
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            scrape(good, scheme="http")
        reviews = collections.Counter(
            (e.get("objectRef") or {}).get("resource")
            for e in by_operator(audit.events(), "rel-metrics")
            if (e.get("objectRef") or {}).get("resource") in ("tokenreviews", "subjectaccessreviews")
        )
        # 10 authorised scrapes cost one review of each kind (cached), plus one per refused token.
        assert reviews["tokenreviews"] <= 3 + 1 and reviews["subjectaccessreviews"] <= 2 + 1, reviews
    finally:
        client.delete(CLUSTERROLEBINDINGS, role)
        client.delete(CLUSTERROLES, role)
    figure(
        "metrics_secure",
        no_token=401,
        invalid_token=401,
        sa_without_rbac=403,
        sa_with_rbac=200,
        plain_http="refused",
        authorised_scrapes=scrapes,
        tokenreviews=reviews["tokenreviews"],
        subjectaccessreviews=reviews["subjectaccessreviews"],
    )
