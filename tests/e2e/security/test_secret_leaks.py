"""No secret value leaks: secret-bearing clusters (a referenced backend URL, a user's API key, embedded
Redis) and a rotation, then the module's secret ledger searched everywhere the operator writes.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    DEPLOYMENTS,
    SECRETS,
)
from tests.harness import ledger
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import FULL, driver, secret, wait_until
from tests.harness.operator import Shared
from tests.harness.storm import cluster_body, not_converged, worker_body

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def test_no_secret_value_leaks_anywhere(
    crds: ControlPlane, shared: Shared, secret_ledger: ledger.SecretLedger
) -> None:
    """Every value of every Secret in the module's namespaces, and the tokens and passwords planted, searched
    in every operator's log and metrics, and in events, statuses and ConfigMaps (the ledger's scan, which
    runs again at the module's end over everything every test of the module registered)."""
    ns = shared.ns["secrets"]
    client = driver(crds)
    # A few more secret-bearing clusters, including a rotation, so there is something to leak.
    client.create(SECRETS, secret(ns, "backend", {"url": "redis://:pw-rotation-one-7a1@redis:6379/0"}), ns)
    client.create(SECRETS, secret(ns, "given-key", {"api-key": "api-key-given-by-user-5c2"}), ns)
    client.create(
        OJSCLUSTERS,
        cluster_body(
            "withref",
            ns,
            backend={"type": "redis", "urlSecretRef": {"name": "backend", "key": "url"}},
            auth={"apiKeySecretRef": {"name": "given-key", "key": "api-key"}},
        ),
        ns,
    )
    # Two with embedded Redis (a generated API key, Redis password and URL each): run alone, the module
    # still has more than ten values to search for.
    for name in ("embedded", "embedded-two"):
        client.create(OJSCLUSTERS, cluster_body(name, ns, backend={"type": "redis", "embedded": True}), ns)
    client.create(OJSWORKERS, worker_body("w", ns, "withref"), ns)
    wait_until(
        "secret-bearing objects Running",
        lambda: not not_converged(client, ns) and len(client.list(OJSCLUSTERS, ns)[0]) == 3,
        90,
    )
    hash_before = client.get(DEPLOYMENTS, "withref-server", ns)["spec"]["template"]["metadata"][
        "annotations"
    ]["ojs.openjobspec.dev/config-hash"]
    client.patch(SECRETS, "backend", {"stringData": {"url": "redis://:pw-rotation-two-8b4@redis:6379/0"}}, ns)
    ledger.plant(
        *{
            "redis://:pw-rotation-one-7a1@redis:6379/0",
            "pw-rotation-one-7a1",
            "redis://:pw-rotation-two-8b4@redis:6379/0",
            "pw-rotation-two-8b4",
            "api-key-given-by-user-5c2",
        }
    )
    wait_until(
        "the rotation reached the server",
        lambda: (
            client.get(DEPLOYMENTS, "withref-server", ns)["spec"]["template"]["metadata"]["annotations"][
                "ojs.openjobspec.dev/config-hash"
            ]
            != hash_before
        ),
        30,
        0.2,
    )

    found = secret_ledger.scan()
    assert found.leaks == [], found.leaks[:20]
    assert len(found.needles) > 10 and len(found.haystacks) > 10
    figure(
        "secrets",
        secret_values_searched=len(found.needles),
        places_searched=len(found.haystacks),
        operator_logs=len(secret_ledger.operators),
        log_megabytes=round(found.log_bytes / 1e6, 1),
        leaks=len(found.leaks),
    )
