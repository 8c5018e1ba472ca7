"""Our canonical form of resource quantities is the API server's: children are written with the values
it stores, so a spec holding ``0.5`` CPU does not cause an apply on every reconcile."""

from __future__ import annotations

from ojsctrl.api.quantity import canonical_quantity
from ojsctrl.runtime.client import PODS
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import driver, namespace

SAMPLES = [
    "0.5", "500m", "2000", "1500", "1Gi", "1024Mi", "0.5Gi", "1536Mi", "1.5Gi", "1.1Gi", "1000Ki",
    "100Ki", "512", "1e3", "1.5e3", "12e6", "1E3", "0.1", "100M", "1000M", "2", "0", "0.0000000001",
    "1.0", "01", "+1", "1000000", "1Ki", "1023Ki", "1.5", "3e-3", "1000k", "1Ei", "0.001Ki", "7.5e-1",
    "0.1n", "1500u", "1500000000000000000m", "7Ki", "8Ki", "1.000", "10.50", "0.0",
]  # fmt: skip


def test_canonical_quantities_match_the_api_server(plane: ControlPlane) -> None:
    client = driver(plane)
    ns = namespace(plane, "quantities")
    # One container per sample (a CPU limit each, no request: nothing to compare it with), created as a
    # server-side dry run: the response holds the values as the API server would store them.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "q", "namespace": ns},
        "spec": {
            "containers": [
                {
                    "name": f"c{i}",
                    "image": "example.invalid/x:1",
                    "resources": {"limits": {"cpu": v}},
                }
                for i, v in enumerate(SAMPLES)
            ]
        },
    }
    out = client.create(PODS, pod, ns, dry_run=True)
    stored = {SAMPLES[int(c["name"][1:])]: c["resources"]["limits"]["cpu"] for c in out["spec"]["containers"]}
    ours = {v: canonical_quantity(v) for v in SAMPLES}
    assert ours == stored
