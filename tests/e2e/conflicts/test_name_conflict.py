"""Issue 18 against the real control plane: NameConflict means hands off (design.md §name-conflict),
full cluster-domain names (design.md §cluster-domain), and no apply loop when another field manager adds
entries to a list the operator owns."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import DEPLOYMENTS, EVENTS, PVCS, SECRETS, SERVICES
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import (
    cond,
    driver,
    get,
    mutating_by_operator,
    namespace,
    ojs_cluster,
    ojs_worker,
    phase,
    secret,
    wait_until,
    wcond,
)
from tests.harness.operator import OperatorProcess, start_ojsctrl

DOMAIN = "e2e-domain.test"


class Polls:
    """A loopback HTTP server standing in for every OJS server: it records which cluster each request was
    for (the URL template puts namespace/name in the path) and answers 503."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        lock = threading.Lock()
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    paths.append(self.path)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_cluster(self, ns: str, name: str) -> int:
        return sum(1 for p in list(self.paths) if p.startswith(f"/{ns}/{name}/"))


@pytest.fixture(scope="module")
def polls() -> Iterator[Polls]:
    p = Polls()
    yield p
    p.server.shutdown()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, polls: Polls) -> Iterator[OperatorProcess]:
    op = start_ojsctrl(
        crds,
        f"http://127.0.0.1:{polls.port}/{{namespace}}/{{name}}",
        "--cluster-domain",
        DOMAIN,
        name="ojsctrl-hardening",
    )
    yield op
    op.stop()


def lite(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return ojs_cluster(ns, name, {"backend": {"type": "lite"}, **spec})


def queue_worker(ns: str, name: str, cluster: str) -> dict[str, Any]:
    return ojs_worker(
        ns,
        name,
        {
            "clusterRef": cluster,
            "image": "example.invalid/worker:1",
            "jobTypes": ["email.send"],
            "queues": ["default"],
            "autoScaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 3,
                "pollingInterval": "1s",
            },
        },
    )


def conflict_events(client: Any, ns: str, name: str) -> int:
    """NameConflict events about an object, counting repeats (an aggregated event's count)."""
    items, _ = client.list(EVENTS, ns)
    return sum(
        int(e.get("count") or 1)
        for e in items
        if e.get("reason") == "NameConflict" and (e.get("involvedObject") or {}).get("name") == name
    )


def poke(client: Any, res: Any, ns: str, name: str, times: int = 3) -> None:
    """Make the operator reconcile an object again (an annotation change is an update event)."""
    for i in range(times):
        client.patch(res, name, {"metadata": {"annotations": {"e2e/poke": str(i)}}}, ns)
        time.sleep(0.7)


def test_name_conflict_means_hands_off(crds: ControlPlane, operator: OperatorProcess, polls: Polls) -> None:
    client = driver(crds)
    ns = namespace(crds, "handsoff")
    # Foreign objects on child names, created before their clusters: an ExternalName Service where the
    # server Service goes, an API key Secret, an embedded Redis's Secret and volume.
    client.create(
        SERVICES,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc-server", "namespace": ns},
            "spec": {"type": "ExternalName", "externalName": "attacker.example.invalid"},
        },
        ns,
    )
    client.create(SECRETS, secret(ns, "key-api-key", {"api-key": "someone-elses-key"}), ns)
    client.create(
        SECRETS, secret(ns, "red-redis", {"password": "theirs", "url": "redis://:theirs@x:6379/0"}), ns
    )
    client.create(
        PVCS,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "vol-redis", "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        ns,
    )
    client.create(OJSCLUSTERS, lite(ns, "ok"), ns)
    client.create(OJSCLUSTERS, lite(ns, "svc"), ns)
    client.create(OJSCLUSTERS, lite(ns, "key"), ns)
    client.create(OJSCLUSTERS, ojs_cluster(ns, "red", {"backend": {"type": "redis", "embedded": True}}), ns)
    client.create(
        OJSCLUSTERS,
        ojs_cluster(
            ns, "vol", {"backend": {"type": "redis", "embedded": True, "redis": {"storage": {"size": "1Gi"}}}}
        ),
        ns,
    )
    client.create(OJSWORKERS, queue_worker(ns, "onsvc", "svc"), ns)
    client.create(OJSWORKERS, queue_worker(ns, "onok", "ok"), ns)

    for name, foreign in (
        ("svc", "Service"),
        ("key", "Secret"),
        ("red", "Secret"),
        ("vol", "PersistentVolumeClaim"),
    ):
        wait_until(
            f"{name}: NameConflict",
            lambda name=name: cond(client, ns, name, "Degraded").get("reason") == "NameConflict",
            60,
        )
        msg = cond(client, ns, name, "Degraded")["message"]
        assert f"{foreign} {ns}/{name}-" in msg, msg
        assert cond(client, ns, name, "Ready")["reason"] == "NameConflict"
    wait_until(
        "worker onsvc: NameConflict",
        lambda: wcond(client, ns, "onsvc", "Degraded").get("reason") == "NameConflict",
        60,
    )
    assert f"Service {ns}/svc-server" in wcond(client, ns, "onsvc", "Degraded")["message"]
    wait_until("onok's Deployment", lambda: get(client, DEPLOYMENTS, ns, "onok-worker") is not None, 60)
    wait_until("cluster ok polled", lambda: polls.for_cluster(ns, "ok") > 0, 60)

    poke(client, OJSCLUSTERS, ns, "svc")
    poke(client, OJSWORKERS, ns, "onsvc")
    poke(client, OJSCLUSTERS, ns, "key")
    time.sleep(2.0)  # the worker asks for a poll every second: several would have happened by now
    # Nothing referencing a foreign object was applied, and the foreign Service was never dialled.
    assert get(client, DEPLOYMENTS, ns, "key-server") is None
    assert (
        get(client, DEPLOYMENTS, ns, "red-server") is None
        and get(client, DEPLOYMENTS, ns, "red-redis") is None
    )
    assert get(client, DEPLOYMENTS, ns, "vol-redis") is None  # the foreign volume is not mounted
    assert get(client, DEPLOYMENTS, ns, "onsvc-worker") is None  # its endpoint is someone else's Service
    assert polls.for_cluster(ns, "svc") == 0 and polls.for_cluster(ns, "key") == 0
    # Nothing was deleted or changed.
    assert client.get(SERVICES, "svc-server", ns)["spec"]["externalName"] == "attacker.example.invalid"
    assert "ownerReferences" not in client.get(SECRETS, "key-api-key", ns)["metadata"]
    assert "ownerReferences" not in client.get(PVCS, "vol-redis", ns)["metadata"]
    # One event per conflict, however many reconciles saw it.
    assert conflict_events(client, ns, "key") == 1
    assert conflict_events(client, ns, "svc") == 1
    assert conflict_events(client, ns, "onsvc") == 1
    # ... and no second Warning (the phase change to Degraded) repeating the same message.
    warnings = [
        e
        for e in client.list(EVENTS, ns)[0]
        if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("name") == "key"
    ]
    assert [e["reason"] for e in warnings] == ["NameConflict"], [
        (e["reason"], e["message"]) for e in warnings
    ]

    # Full cluster-domain names (design.md §cluster-domain): status.endpoint and the workers' OJS_URL.
    wait_until(
        "ok has an endpoint",
        lambda: bool((client.get(OJSCLUSTERS, "ok", ns).get("status") or {}).get("endpoint")),
        60,
    )
    endpoint = client.get(OJSCLUSTERS, "ok", ns)["status"]["endpoint"]
    assert endpoint == f"http://ok-server.{ns}.svc.{DOMAIN}:8080"
    env = client.get(DEPLOYMENTS, "onok-worker", ns)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"]: e.get("value") for e in env}["OJS_URL"] == endpoint

    # The foreign objects go, and each owner comes back on its own, with nothing poking it: the deletion is
    # an event of a name the owner waits for (the sync period is hours away).
    client.delete(SERVICES, "svc-server", ns)
    client.delete(SECRETS, "key-api-key", ns)
    client.delete(SECRETS, "red-redis", ns)
    wait_until(
        "svc's own Service",
        lambda: bool(
            (get(client, SERVICES, ns, "svc-server") or {}).get("metadata", {}).get("ownerReferences")
        ),
        60,
    )
    wait_until("key's Deployment", lambda: get(client, DEPLOYMENTS, ns, "key-server") is not None, 60)
    wait_until("red's Deployment", lambda: get(client, DEPLOYMENTS, ns, "red-server") is not None, 60)
    wait_until("onsvc's Deployment", lambda: get(client, DEPLOYMENTS, ns, "onsvc-worker") is not None, 60)
    assert "ownerReferences" in client.get(SECRETS, "key-api-key", ns)["metadata"]


def test_a_deployment_already_running_is_left_alone_when_its_secret_turns_foreign(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "adopted")
    client.create(OJSCLUSTERS, lite(ns, "c"), ns)
    wait_until("c's Deployment", lambda: get(client, DEPLOYMENTS, ns, "c-server") is not None, 60)
    wait_until("c's key", lambda: get(client, SECRETS, ns, "c-api-key") is not None, 60)
    # Someone takes the Secret over (drops our owner reference): from now on it is not ours.
    client.patch(SECRETS, "c-api-key", {"metadata": {"ownerReferences": None}}, ns)
    wait_until(
        "c: NameConflict", lambda: cond(client, ns, "c", "Degraded").get("reason") == "NameConflict", 60
    )
    time.sleep(1.0)
    before = client.get(DEPLOYMENTS, "c-server", ns)
    since = int(time.time())  # the audit log's times have whole seconds
    # A spec change that would otherwise roll the servers is not applied while the conflict lasts.
    client.patch(OJSCLUSTERS, "c", {"spec": {"env": [{"name": "EXTRA", "value": "1"}]}}, ns)
    poke(client, OJSCLUSTERS, ns, "c")
    time.sleep(1.0)
    after = client.get(DEPLOYMENTS, "c-server", ns)
    assert after["spec"] == before["spec"]
    assert [w for w in mutating_by_operator(crds, since, ns) if "/deployments/c-server" in w] == []
    assert get(client, SECRETS, ns, "c-api-key") is not None
    assert phase(client, ns, "c") == "Degraded"


def test_entries_another_manager_adds_to_an_owned_list_cause_no_apply(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "appended")
    client.create(OJSCLUSTERS, lite(ns, "c"), ns)
    wait_until("c's Deployment", lambda: get(client, DEPLOYMENTS, ns, "c-server") is not None, 60)
    time.sleep(2.0)  # the reconciles of the creation are over
    since = int(time.time())  # the audit log's times have whole seconds
    container = client.get(DEPLOYMENTS, "c-server", ns)["spec"]["template"]["spec"]["containers"][0]["name"]
    # Another field manager adds an env entry and a container port to the operator's container.
    client.apply(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "c-server", "namespace": ns},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": container,
                                "env": [{"name": "SIDE_CAR_HINT", "value": "1"}],
                                "ports": [{"name": "extra", "containerPort": 9999}],
                            }
                        ]
                    }
                }
            },
        },
        field_manager="e2e-other-manager",
        force=True,
    )
    poke(client, OJSCLUSTERS, ns, "c", times=4)
    time.sleep(1.5)
    patches = [w for w in mutating_by_operator(crds, since, ns) if "/deployments/c-server" in w]
    assert patches == []
    env = client.get(DEPLOYMENTS, "c-server", ns)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "SIDE_CAR_HINT" in {e["name"] for e in env}
