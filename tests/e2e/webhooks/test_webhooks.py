"""Admission through the real API server: it calls the operator's webhook (design.md §admission,
§webhook-tls, issue 6).

Set-up: an operator process serving only its webhooks (tests/e2e/apps/webhook_operator.py, self-managed
certificates), and a ValidatingWebhookConfiguration made from the dev generator (url https://127.0.0.1:<port>)
whose namespaceSelector picks this module's "webhook on" namespace only, so the rest of the suite never goes
through it. The "webhook off" namespace shows what the CRDs' CEL rules do alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ojsctrl.api.validation import PYTHON_ONLY_RULES, validate_cluster, validate_worker
from ojsctrl.runtime.certs import VALIDATING_WEBHOOK_CONFIGURATIONS, load_cas
from ojsctrl.runtime.client import NAMESPACES, SECRETS, Client, NotFoundError
from ojsctrl.webhooks import CLUSTER_WEBHOOK, WORKER_WEBHOOK
from ojsctrl.webhooks.manifests import dev_webhook_configuration
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import driver, namespace, size, wait_until
from tests.harness.operator import OperatorProcess
from tests.unit.test_api_validation import (
    _DELETE,
    CLUSTER,
    CLUSTER_CASES,
    VALID_CLUSTERS,
    VALID_WORKERS,
    WORKER,
    WORKER_CASES,
    _with,
)

APP = "tests.e2e.apps.webhook_operator"
ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "deploy" / "samples"
GROUP_PATH = "/apis/ojs.openjobspec.dev/v1alpha1"
PLURALS = {"OJSCluster": "ojsclusters", "OJSWorker": "ojsworkers"}
SELECT_LABEL = "ojsctrl-e2e/webhook"
_WARNING = re.compile(r'^\d{3} \S+ "((?:[^"\\]|\\.)*)"$')


# --------------------------------------------------------------------------- raw API access (headers too)
@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    warnings: list[str]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


class Raw:
    """POST/PUT with the admin certificate through urllib3, keeping the `Warning` response headers (the
    operator's Client has no use for them)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.base = plane.server
        self.pool = urllib3.PoolManager(ssl_context=plane.ssl_context, maxsize=8)

    def send(self, obj: dict[str, Any], ns: str, *, dry_run: bool = True, method: str = "POST") -> Answer:
        path = f"{GROUP_PATH}/namespaces/{ns}/{PLURALS[obj['kind']]}"
        if method != "POST":
            path += f"/{obj['metadata']['name']}"
        obj = {**obj, "metadata": {**(obj.get("metadata") or {}), "namespace": ns}}
        resp = self.pool.request(
            method,
            self.base + path + ("?dryRun=All" if dry_run else ""),
            body=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=urllib3.Timeout(connect=5, read=30),
            retries=False,
        )
        warnings = []
        for raw in resp.headers.getlist("Warning"):
            m = _WARNING.match(raw.strip())
            warnings.append(re.sub(r"\\(.)", r"\1", m.group(1)) if m else raw)
        try:
            body = json.loads(resp.data) if resp.data else {}
        except ValueError:
            body = {"message": resp.data.decode(errors="replace")}
        return Answer(resp.status, body if isinstance(body, dict) else {}, warnings)


def served_fingerprint(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def served_certificate(port: int) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port), timeout=5).encode())


def published_cas(client: Client, name: str) -> list[x509.Certificate]:
    import base64

    vwc = client.get(VALIDATING_WEBHOOK_CONFIGURATIONS, name)
    bundles = [
        load_cas(base64.b64decode((w.get("clientConfig") or {}).get("caBundle") or ""))
        for w in vwc["webhooks"]
    ]
    # Every webhook entry carries the same bundle; the intersection is what all of them trust.
    first = bundles[0]
    fps = [{c.fingerprint(hashes.SHA256()) for c in b} for b in bundles]
    return [c for c in first if all(c.fingerprint(hashes.SHA256()) in f for f in fps)]


_namespaces: list[str] = []


def labelled_namespace(plane: ControlPlane, client: Client, prefix: str, selector: str | None) -> str:
    ns = namespace(plane, prefix)
    _namespaces.append(ns)
    if selector:
        client.patch(NAMESPACES, ns, {"metadata": {"labels": {SELECT_LABEL: selector}}})
    return ns


@dataclass
class Deployment:
    """One operator (or several sharing a Secret) with its configuration and namespaces."""

    ops: list[OperatorProcess]
    ports: list[int]
    configs: list[str]
    on: list[str]
    operator_ns: str


def start_webhook_operators(
    plane: ControlPlane,
    client: Client,
    replicas: int,
    *,
    extra: tuple[str, ...] = (),
    tag: str = "wh",
) -> Deployment:
    """`replicas` operators sharing one certificate Secret; replica i serves its own configuration (own port)
    selecting its own namespace, so a test can send requests to each of them through the API server."""
    run = uuid.uuid4().hex[:6]
    operator_ns = labelled_namespace(plane, client, f"{tag}-op", None)
    ports, configs, on, ops = [], [], [], []
    for i in range(replicas):
        selector = f"{run}-{i}"
        on.append(labelled_namespace(plane, client, f"{tag}-on{i}", selector))
        ports.append(free_port())
        configs.append(f"ojsctrl-e2e-{tag}-{run}-{i}")
        vwc = dev_webhook_configuration(
            ports[i], name=configs[i], namespace_selector={"matchLabels": {SELECT_LABEL: selector}}
        )
        client.create(VALIDATING_WEBHOOK_CONFIGURATIONS, vwc)
    for i in range(replicas):
        ops.append(
            OperatorProcess(
                plane,
                APP,
                "--enable-webhooks",
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(ports[i]),
                "--webhook-cert-dir",
                tempfile.mkdtemp(prefix="ojsctrl-webhook-certs-"),
                "--webhook-service-namespace",
                operator_ns,
                "--webhook-config-name",
                configs[i],
                "--watch-namespace",
                on[i],
                "--log-level",
                "debug",
                *extra,
                name=f"{tag}-{i}",
            )
        )
    return Deployment(ops, ports, configs, on, operator_ns)


def stop(client: Client, dep: Deployment) -> None:
    for op in dep.ops:
        op.stop()
    for name in dep.configs:
        with contextlib.suppress(NotFoundError):
            client.delete(VALIDATING_WEBHOOK_CONFIGURATIONS, name)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def client(crds: ControlPlane) -> Client:
    return driver(crds, "ojsctrl-e2e-webhooks")


@pytest.fixture(scope="module")
def raw(crds: ControlPlane) -> Raw:
    return Raw(crds)


@pytest.fixture(scope="module", autouse=True)
def _cleanup(crds: ControlPlane) -> Iterator[None]:
    """Namespaces go at the end (after the webhook configurations), so later modules' operators never
    meet this module's objects."""
    yield
    client = driver(crds, "ojsctrl-e2e-webhooks-cleanup")
    while _namespaces:
        with contextlib.suppress(NotFoundError):
            client.delete(NAMESPACES, _namespaces.pop())


@pytest.fixture(scope="module")
def webhook(crds: ControlPlane, client: Client, raw: Raw) -> Iterator[Deployment]:
    started = time.monotonic()
    dep = start_webhook_operators(crds, client, 1)
    try:
        wait_until("webhook operator ready", dep.ops[0].ready, 60)
        # No manual step: the operator made its CA, published it, and the API server now calls it.
        wait_until(
            "the API server calling the webhook",
            lambda: webhook_answers(raw, dep.on[0]),
            60,
            interval=0.2,
        )
        print(f"webhook trusted {time.monotonic() - started:.1f}s after the operator started")
        yield dep
    finally:
        stop(client, dep)


@pytest.fixture(scope="module")
def off_ns(crds: ControlPlane, client: Client) -> str:
    """A namespace no webhook configuration selects: CEL and the schema only."""
    return labelled_namespace(crds, client, "wh-off", None)


def webhook_answers(raw: Raw, ns: str) -> bool:
    latest = _with(CLUSTER, {"spec.image": "ojs-server:latest", "metadata.name": "probe"})
    answer = raw.send(latest, ns)
    return answer.status == 201 and any("latest" in w for w in answer.warnings)


def cluster(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return _with(CLUSTER, changes or {})


def worker(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return _with(WORKER, changes or {})


def sample_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in PLURALS:
                out.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return out


def _sendable(changes: dict[str, Any]) -> bool:
    # A metadata that is not an object cannot even name the resource: the API server rejects it while
    # decoding, before any rule runs; the unit tests cover that case.
    return not isinstance(changes.get("metadata", {}), str)


def names_field(message: str, path: str) -> bool:
    """The API server's message names the field: the exact path; or, for a CEL rule on a map or list, the
    collection's path; or, for a CEL rule on the parent object, the parent's path and the member's name."""
    if path in message:
        return True
    base = path.split("[", maxsplit=1)[0]
    if base != path and base in message:
        return True
    parent, _, member = base.rpartition(".")
    return bool(parent) and f"{parent}:" in message and member in message


# --------------------------------------------------------------------------- tests
def test_webhook_serving_and_ready(webhook: Deployment, client: Client) -> None:
    op = webhook.ops[0]
    status, body = op.get(op.health_port, "/readyz?verbose")
    assert status == 200
    assert "[+]webhook ok" in body
    secret = client.get(SECRETS, "ojs-operator-webhook-server-cert", webhook.operator_ns)
    assert secret["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
    served = served_certificate(webhook.ports[0])
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"ojs-operator-webhook-service.{webhook.operator_ns}.svc" in sans.get_values_for_type(x509.DNSName)
    assert any(str(ip) == "127.0.0.1" for ip in sans.get_values_for_type(x509.IPAddress))
    issuers = [ca for ca in published_cas(client, webhook.configs[0]) if ca.subject == served.issuer]
    assert issuers, "the served certificate's CA is not in the published caBundle"


CASES = [("OJSCluster", *c) for c in CLUSTER_CASES if _sendable(c[1])] + [
    ("OJSWorker", *c) for c in WORKER_CASES if _sendable(c[1])
]


def _bad(kind: str, changes: dict[str, Any]) -> dict[str, Any]:
    return cluster(changes) if kind == "OJSCluster" else worker(changes)


@pytest.mark.parametrize(
    ("kind", "case", "changes", "path", "rule"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_every_rule_rejects_through_the_api_server(
    webhook: Deployment, raw: Raw, kind: str, case: str, changes: dict[str, Any], path: str, rule: str
) -> None:
    answer = raw.send(_bad(kind, changes), webhook.on[0])
    assert answer.status in (400, 422), (answer.status, answer.message)
    assert names_field(answer.message, path), answer.message
    if rule in PYTHON_ONLY_RULES:
        # Only the webhook knows this rule: its denial names the exact field and the rule.
        webhook_name = CLUSTER_WEBHOOK if kind == "OJSCluster" else WORKER_WEBHOOK
        assert f'admission webhook "{webhook_name}" denied the request' in answer.message
        assert path in answer.message and f"(rule {rule})" in answer.message, answer.message
        assert any(c.get("field") == path for c in answer.body["details"]["causes"])


STRUCTURAL = [c for c in CASES if c[4] not in PYTHON_ONLY_RULES]


@pytest.mark.parametrize(
    ("kind", "case", "changes", "path", "rule"), STRUCTURAL, ids=[f"{c[0]}-{c[1]}" for c in STRUCTURAL]
)
def test_cel_rejects_the_structural_subset_without_the_webhook(
    off_ns: str, raw: Raw, kind: str, case: str, changes: dict[str, Any], path: str, rule: str
) -> None:
    answer = raw.send(_bad(kind, changes), off_ns)
    assert answer.status in (400, 422), (answer.status, answer.message)
    assert names_field(answer.message, path), answer.message
    assert "admission webhook" not in answer.message


VALID = (
    [(f"cluster {n}", cluster(c)) for n, c in VALID_CLUSTERS]
    + [(f"worker {n}", worker(c)) for n, c in VALID_WORKERS]
    + sample_docs()
)


@pytest.mark.parametrize(("case", "obj"), VALID, ids=[v[0] for v in VALID])
def test_valid_objects_are_admitted(webhook: Deployment, raw: Raw, case: str, obj: dict[str, Any]) -> None:
    answer = raw.send(obj, webhook.on[0])
    assert answer.status == 201, (answer.status, answer.message)


def test_readme_examples_are_created_updated_and_deleted(
    webhook: Deployment, raw: Raw, client: Client
) -> None:
    ns = webhook.on[0]
    warnings: dict[str, list[str]] = {}
    for name, doc in sample_docs():
        if not name.startswith("readme-"):
            continue
        answer = raw.send(doc, ns, dry_run=False)
        assert answer.status == 201, (name, answer.status, answer.message)
        warnings[name] = answer.warnings
    # The multi-worker example's workers use images tagged latest, and email-worker sets no limits; their
    # cluster was created a moment before them in the same run, so there is no clusterRef warning.
    email = warnings["readme-multi-worker.yaml:email-worker"]
    assert any("latest" in w for w in email) and any("limits" in w for w in email), email
    assert not any("not found" in w for ws in warnings.values() for w in ws), warnings
    for name, doc in sample_docs():
        if name.startswith("readme-"):
            current = client.get(_resource(doc["kind"]), doc["metadata"]["name"], ns)
            current["metadata"].setdefault("labels", {})["touched"] = "yes"
            answer = raw.send(current, ns, dry_run=False, method="PUT")
            assert answer.status == 200, (name, answer.status, answer.message)
    for name, doc in sample_docs():
        if name.startswith("readme-"):
            client.delete(_resource(doc["kind"]), doc["metadata"]["name"], ns)


def _resource(kind: str) -> Any:
    from ojsctrl.webhooks.handlers import OJSCLUSTERS, OJSWORKERS

    return OJSCLUSTERS if kind == "OJSCluster" else OJSWORKERS


def test_updates_are_validated_and_metadata_only_updates_of_invalid_objects_pass(
    crds: ControlPlane, webhook: Deployment, raw: Raw, client: Client
) -> None:
    ns = webhook.on[0]
    name = f"upd-{uuid.uuid4().hex[:4]}"
    created = raw.send(worker({"metadata.name": name}), ns, dry_run=False)
    assert created.status == 201, created.message
    current = client.get(_resource("OJSWorker"), name, ns)
    bad = copy.deepcopy(current)
    bad["spec"]["env"] = [{"name": "A=B", "value": "1"}]
    answer = raw.send(bad, ns, dry_run=False, method="PUT")
    assert (
        answer.status == 422 and "spec.env[0].name" in answer.message and "(rule envName)" in answer.message
    )
    moved = copy.deepcopy(current)
    moved["spec"]["clusterRef"] = "elsewhere"
    answer = raw.send(moved, ns, dry_run=False, method="PUT")
    assert answer.status == 422 and "clusterRef" in answer.message

    # An object that bypassed admission (made where the webhook was off) breaks a Python-only rule; once the
    # webhook covers its namespace, a label change still goes through, with a warning, but a spec change
    # that keeps it broken does not.
    sneaky = f"sneaky-{uuid.uuid4().hex[:4]}"
    later = labelled_namespace(crds, client, "wh-later", None)
    made = raw.send(worker({"metadata.name": sneaky, "spec.env": [{"name": "A=B"}]}), later, dry_run=False)
    assert made.status == 201, made.message
    client.patch(NAMESPACES, later, {"metadata": {"labels": {SELECT_LABEL: _selector(client, ns)}}})
    obj = client.get(_resource("OJSWorker"), sneaky, later)

    def label_update_warns() -> bool:
        fresh = client.get(_resource("OJSWorker"), sneaky, later)
        fresh["metadata"].setdefault("labels", {})["n"] = uuid.uuid4().hex[:6]
        a = raw.send(fresh, later, dry_run=True, method="PUT")
        assert a.status == 200, a.message
        return any("is invalid" in w for w in a.warnings)

    wait_until("the webhook covering the relabelled namespace", label_update_warns, 30)
    obj["spec"]["replicas"] = 3
    answer = raw.send(obj, later, dry_run=True, method="PUT")
    assert answer.status == 422 and "spec.env[0].name" in answer.message, answer.message


def _selector(client: Client, ns: str) -> str:
    return str(client.get(NAMESPACES, ns)["metadata"]["labels"][SELECT_LABEL])


def test_warnings_reach_the_client(webhook: Deployment, off_ns: str, raw: Raw) -> None:
    ns = webhook.on[0]
    ref = f"missing-{uuid.uuid4().hex[:4]}"
    orphan = worker({"spec.clusterRef": ref})
    answer = raw.send(orphan, ns)
    assert answer.status == 201
    assert any("clusterRef" in w and ref in w and "not found" in w for w in answer.warnings), answer.warnings

    # The cluster appears: the warning goes (cache or GET, whichever answers first).
    made = raw.send(cluster({"metadata.name": ref}), ns, dry_run=False)
    assert made.status == 201, made.message
    answer = raw.send(orphan, ns)
    assert not any("not found" in w for w in answer.warnings), answer.warnings

    cases = [
        (cluster({"spec.image": "ghcr.io/openjobspec/ojs-server:latest"}), "latest"),
        (worker({"spec.image": "example/worker"}), "no tag"),
        (worker({"spec.resources": _DELETE}), "limits"),
        (cluster({"spec.resources": {"requests": {"cpu": "1"}}}), "limits"),
        (cluster({"spec.auth": {"disabled": True}}), "auth.disabled"),
        (cluster({"spec.grpc": {"enabled": True}}), "OJS gRPC (port 9090) has no authentication"),
        (
            cluster(
                {
                    "spec.backend": {
                        "type": "sqs",
                        "sqs": {"region": "eu-west-1", "endpoint": "http://ls:4566"},
                    }
                }
            ),
            "static credentials test/test",
        ),
        (
            cluster({"spec.env": [{"name": "REDIS_URL", "value": "redis://mine"}]}),
            "spec.env[0] replaces the operator-managed variable REDIS_URL",
        ),
    ]
    for obj, text in cases:
        answer = raw.send(obj, ns)
        assert answer.status == 201, answer.message
        assert any(text in w for w in answer.warnings), (text, answer.warnings)
        # Without the webhook the same object passes silently: the warnings come from it.
        quiet = raw.send(obj, off_ns)
        assert quiet.status == 201 and not any(text in w for w in quiet.warnings)


# --------------------------------------------------------------------------- CEL and Python agree
DURATIONS = ["0", "0s", "30s", "1m30s", "1.5h", "500ms", "-5m", "1d", "1 minute", "", "1h", "2h", 300]
QUANTITIES = ["100m", "1", "2", "1Gi", "512Mi", "-1", "big", 1, 0.5, "0", "1e3", "1.5"]
LABEL_MAPS = [
    {},
    {"team": "jobs"},
    {"a b": "x"},
    {"example.com/tier": "backend"},
    {"a": "x" * 64},
    {"a": "-x"},
    {"app.kubernetes.io/name": "x"},
    {"/x": "1"},
    {"a": 1},
]


def _resources() -> st.SearchStrategy[Any]:
    part = st.dictionaries(
        st.sampled_from(["cpu", "memory", "ephemeral-storage"]), st.sampled_from(QUANTITIES), max_size=2
    )
    return st.fixed_dictionaries({}, optional={"requests": part, "limits": part}) | st.sampled_from([[], "x"])


def _pod_settings() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "resources": _resources(),
        "podLabels": st.sampled_from(LABEL_MAPS),
        "podAnnotations": st.sampled_from([{}, {"example.com/note": "x y"}, {"/x": "1"}, {"a": 1}]),
        "nodeSelector": st.sampled_from(LABEL_MAPS),
        "securityContext": st.fixed_dictionaries(
            {},
            optional={
                "runAsNonRoot": st.sampled_from([True, False, "yes"]),
                "runAsUser": st.sampled_from([-1, 0, 1000, "1000", 2**40]),
                "runAsGroup": st.sampled_from([-1, 0, 65534]),
                "fsGroup": st.sampled_from([-1, 0, 2000]),
                "readOnlyRootFilesystem": st.sampled_from([True, "no"]),
            },
        )
        | st.just([]),
        "tolerations": st.sampled_from(
            [[], [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}], {"key": "x"}, [1]]
        ),
        "serviceAccountName": st.sampled_from(["ojs", "Bad_Name", "", "a" * 254, "a.b"]),
        "priorityClassName": st.sampled_from(["high", "", "a" * 254]),
        "imagePullSecrets": st.sampled_from([[], [{"name": "regcred"}], ["x"]]),
    }


def _int_pool(*extra: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([-1, 0, 1, 2, 3, 10, 2**31, "2", 2.0, 2.5, True, *extra])


def _cluster_spec() -> st.SearchStrategy[dict[str, Any]]:
    backend = st.fixed_dictionaries(
        {"type": st.sampled_from(["redis", "postgres", "nats", "kafka", "sqs", "lite", "mysql"])},
        optional={
            "url": st.sampled_from(["redis://r:6379", "", 5, "x" * 2100]),
            "urlSecretRef": st.sampled_from(
                [
                    {"name": "s", "key": "url"},
                    {"name": "s"},
                    {"name": "", "key": "k"},
                    {"name": "s", "key": "a b"},
                ]
            ),
            "embedded": st.sampled_from([True, False, "true"]),
            "redis": st.sampled_from(
                [
                    {"storage": {"size": "1Gi"}},
                    {"storage": {"size": "big"}},
                    {"storage": {"storageClassName": "fast"}},
                    {"image": ""},
                    {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                ]
            ),
            "stateStore": st.sampled_from(
                [
                    {"embedded": True},
                    {"url": "redis://r"},
                    {"urlSecretRef": {"name": "r", "key": "url"}},
                    {"url": "redis://r", "embedded": True},
                    {"embedded": False},
                    {},
                    {"url": ""},
                    {"urlSecretRef": {"name": "r"}},
                ]
            ),
            "sqs": st.sampled_from(
                [
                    {"region": "eu-west-1"},
                    {"region": "eu-west-1", "fifo": True, "endpoint": "http://localstack:4566"},
                    {},
                    {"region": "EU West"},
                    {"region": "eu-west-1", "dynamodbTable": "ab"},
                    {"region": "eu-west-1", "queuePrefix": "a.b"},
                    {"region": "eu-west-1", "endpoint": "localstack:4566"},
                    {"region": "eu-west-1", "fifo": "yes"},
                ]
            ),
        },
    )
    auto = st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.booleans(),
            "minReplicas": st.sampled_from([-1, 0, 1, 5, 20]),
            "maxReplicas": st.sampled_from([0, 1, 3, 10, 100]),
            "targetQueueDepth": st.sampled_from([-1, 0, 1, 100]),
            "targetJobsPerWorker": st.sampled_from([-1, 0, 1, 20]),
            "scaleUpCooldown": st.sampled_from(DURATIONS),
            "scaleDownCooldown": st.sampled_from(DURATIONS),
        },
    )
    optional: dict[str, st.SearchStrategy[Any]] = {
        "backend": backend | st.just(_DELETE),
        "replicas": _int_pool(),
        "image": st.sampled_from(["", "ojs:v1", "ojs:latest", "a b", "x" * 600]),
        "autoScaling": auto,
        "monitoring": st.fixed_dictionaries(
            {},
            optional={
                "enabled": st.booleans(),
                "serviceMonitor": st.booleans(),
                "grafanaDashboard": st.booleans(),
                "interval": st.sampled_from(DURATIONS),
                "labels": st.sampled_from(LABEL_MAPS),
            },
        ),
        "podDisruptionBudget": st.fixed_dictionaries(
            {},
            optional={
                "enabled": st.booleans(),
                "minAvailable": st.sampled_from([0, 1, -1, "50%", "150%", "1", "x%"]),
                "maxUnavailable": st.sampled_from([0, 1, -1, "50%", "100%", "1"]),
            },
        ),
        "grpc": st.sampled_from([{}, {"enabled": True}, {"enabled": False}, {"enabled": "yes"}]),
        "env": st.sampled_from(
            [
                [{"name": "OJS_API_KEY", "value": "k"}],
                [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
                [{"name": "A=B"}],
                {"name": "A"},
            ]
        ),
        "envFrom": st.sampled_from([[{"secretRef": {"name": "aws"}}], {"secretRef": {"name": "aws"}}]),
        "auth": st.fixed_dictionaries(
            {},
            optional={
                "disabled": st.sampled_from([True, False, 1]),
                "apiKeySecretRef": st.sampled_from([{"name": "k", "key": "key"}, {"name": "k"}]),
            },
        ),
        **_pod_settings(),
    }
    return _overrides(optional)


def _overrides(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Up to three top-level fields changed at once: mostly-valid specs with a few edits explore the
    boundaries better than specs where everything is wrong."""
    keys = sorted(fields)
    return st.lists(st.sampled_from(keys), max_size=3, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: fields[k] for k in chosen})
    )


def _names() -> st.SearchStrategy[Any]:
    return st.lists(
        st.sampled_from(["a", "b", "email.send", "", "a,b", "a b", 1]), max_size=4
    ) | st.sampled_from(["x", [f"t{i}" for i in range(101)]])


def _worker_spec() -> st.SearchStrategy[dict[str, Any]]:
    env_item = st.sampled_from(
        [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"value": "1"},
            {"name": "A=B"},
            {"name": "C", "value": 1},
            {"name": "D", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            "A=1",
        ]
    )
    auto = st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.booleans(),
            "metric": st.sampled_from(["queueDepth", "cpu", "memory"]),
            "minReplicas": st.sampled_from([-1, 0, 1, 4, 20]),
            "maxReplicas": st.sampled_from([0, 1, 2, 10]),
            "targetJobsPerWorker": st.sampled_from([-1, 0, 1, 5]),
            "scaleUpThreshold": st.sampled_from([-1, 0, 5]),
            "scaleDownDelay": st.sampled_from(DURATIONS),
            "pollingInterval": st.sampled_from(["500ms", "1s", "30s", "often", "0"]),
            "cpuUtilization": st.sampled_from([0, 1, 80, 101, -1]),
        },
    )
    optional: dict[str, st.SearchStrategy[Any]] = {
        "clusterRef": st.sampled_from(["ojs", "", 5, "a" * 300, _DELETE]),
        "jobTypes": _names() | st.just(_DELETE),
        "queues": _names(),
        "concurrency": _int_pool(),
        "replicas": _int_pool(),
        "image": st.sampled_from(["", "w:v1", "w", "w:latest", "a b", _DELETE]),
        "env": st.lists(env_item, max_size=3) | st.just({"A": "1"}),
        "envFrom": st.sampled_from([[], [{"secretRef": {"name": "s"}}], {"configMapRef": {"name": "x"}}]),
        "command": st.sampled_from([[], ["/w"], ["run", 1], "run"]),
        "args": st.sampled_from([[], ["--x"], "--x"]),
        "autoScaling": auto,
        "gracefulShutdown": st.fixed_dictionaries(
            {},
            optional={
                "timeoutSeconds": st.sampled_from([-1, 0, 30]),
                "drainBeforeShutdown": st.sampled_from([True, False, "yes"]),
            },
        ),
        **_pod_settings(),
    }
    return _overrides(optional)


def _apply(base: dict[str, Any], overrides: dict[str, Any], name: str) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["metadata"] = {"name": name}
    for key, value in overrides.items():
        if value is _DELETE:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = copy.deepcopy(value)
    return obj


def test_cel_never_rejects_what_python_admits(off_ns: str, raw: Raw) -> None:
    """Generated specs go to the API server (dryRun=All, no webhook: schema + CEL) and to the Python rules.
    A spec the API server rejects and Python admits fails the test: the webhook would then be the weaker
    gate, and the reconcilers would accept objects the CRD forbids."""
    seen = {"total": 0, "cel_rejects": 0, "python_only": 0}
    disagreements: list[str] = []

    @settings(
        max_examples=size(60, 500),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(
        st.one_of(
            st.tuples(
                st.just("OJSCluster"),
                _cluster_spec(),
                st.sampled_from(["ojs"] * 5 + ["a" * 56, "a" * 57, "1ojs"]),
            ),
            st.tuples(
                st.just("OJSWorker"), _worker_spec(), st.sampled_from(["w"] * 5 + ["w" * 63, "w" * 64])
            ),
        )
    )
    def check(case: tuple[str, dict[str, Any], str]) -> None:
        kind, overrides, name = case
        obj = _apply(CLUSTER if kind == "OJSCluster" else WORKER, overrides, name)
        answer = raw.send(obj, off_ns)
        assert answer.status in (201, 400, 422), (answer.status, answer.message)
        result = validate_cluster(obj) if kind == "OJSCluster" else validate_worker(obj)
        seen["total"] += 1
        if answer.status == 201:
            seen["python_only"] += not result.ok
            return
        seen["cel_rejects"] += 1
        if result.ok:
            disagreements.append(f"{kind} {json.dumps(obj['spec'])[:300]} -> {answer.message[:300]}")
        assert not result.ok, f"the API server rejects what Python admits: {answer.message}"

    check()
    print(f"agreement: {seen}")
    assert not disagreements


# --------------------------------------------------------------------------- rotation
def test_rotation_without_a_failed_admission(crds: ControlPlane, client: Client, raw: Raw) -> None:
    """Two replicas share one Secret (created by whichever wins the race) with 30s certificates; admissions
    through both run in a loop across two rotations and none fails. Whenever a replica serves a certificate,
    the caBundle published just before already carried its CA."""
    validity = 30.0
    dep = start_webhook_operators(
        crds, client, 2, extra=("--webhook-cert-validity", f"{validity:.0f}s"), tag="rot"
    )
    try:
        for i in range(2):
            wait_until(f"replica {i} ready", dep.ops[i].ready, 60)
            wait_until(f"replica {i} trusted", lambda i=i: webhook_answers(raw, dep.on[i]), 60, interval=0.2)
        wait_until(
            "both replicas serving the one certificate",
            lambda: served_fingerprint(dep.ports[0]) == served_fingerprint(dep.ports[1]),
            30,
        )
        stop_loop = threading.Event()
        results: list[tuple[int, int, str]] = []
        lock = threading.Lock()

        def admit_loop(i: int) -> None:
            n = 0
            while not stop_loop.is_set():
                n += 1
                obj = worker({"metadata.name": f"w{n}", "spec.image": "w:latest"})
                try:
                    a = raw.send(obj, dep.on[i])
                    outcome = (i, a.status, a.message if a.status != 201 else "")
                    if a.status == 201 and not any("latest" in w for w in a.warnings):
                        outcome = (i, -1, "admitted without the webhook's warning")
                except Exception as e:
                    outcome = (i, 0, f"{type(e).__name__}: {e}")
                with lock:
                    results.append(outcome)
                time.sleep(0.02)

        threads = [threading.Thread(target=admit_loop, args=(i,), daemon=True) for i in (0, 1, 0, 1)]
        for t in threads:
            t.start()
        served: list[set[str]] = [set(), set()]
        violations: list[str] = []
        deadline = time.monotonic() + 2.6 * validity
        try:
            while time.monotonic() < deadline:
                for i in range(2):
                    # Bundle first, certificate second: a certificate served now must have had its CA
                    # published before.
                    cas = published_cas(client, dep.configs[i])
                    cert = served_certificate(dep.ports[i])
                    served[i].add(cert.fingerprint(hashes.SHA256()).hex())
                    if not any(ca.subject == cert.issuer for ca in cas):
                        violations.append(
                            f"replica {i} served {cert.serial_number:x} before its CA was published"
                        )
                if all(len(s) >= 3 for s in served):
                    break
                time.sleep(0.3)
        finally:
            stop_loop.set()
            for t in threads:
                t.join(10)
        failed = [r for r in results if r[1] != 201]
        print(
            f"rotation: {len(results)} admissions, certificates served per replica: "
            f"{[len(s) for s in served]}, failures: {len(failed)}"
        )
        assert not violations, violations[:5]
        assert not failed, failed[:5]
        assert len(results) > 100
        assert all(len(s) >= 3 for s in served), f"expected two rotations, saw {[len(s) for s in served]}"
        wait_until(
            "both replicas serving the one certificate",
            lambda: served_fingerprint(dep.ports[0]) == served_fingerprint(dep.ports[1]),
            15,
        )
        secrets_made = [
            s
            for s in client.list(SECRETS, dep.operator_ns)[0]
            if s["metadata"]["name"] == "ojs-operator-webhook-server-cert"
        ]
        assert len(secrets_made) == 1
    finally:
        stop(client, dep)


# ---------------------------------------------------------------- lite is one replica (design.md §exposure)
def test_lite_with_two_replicas_is_refused_by_cel_and_by_the_webhook(
    webhook: Deployment, off_ns: str, raw: Raw
) -> None:
    lite = cluster({"spec.backend": {"type": "lite"}, "spec.replicas": 2})
    by_webhook = raw.send(lite, webhook.on[0])
    by_cel = raw.send(lite, off_ns)
    for answer in (by_webhook, by_cel):
        assert answer.status in (400, 422), (answer.status, answer.message)
        assert "spec.replicas" in answer.message and "replicas must be 1" in answer.message, answer.message
    assert "admission webhook" not in by_cel.message
    scaled = cluster({"spec.backend": {"type": "lite"}, "spec.autoScaling": {"enabled": True}})
    for ns in (webhook.on[0], off_ns):
        answer = raw.send(scaled, ns)
        assert answer.status in (400, 422) and "cannot be autoscaled" in answer.message, answer.message
    assert (
        raw.send(cluster({"spec.backend": {"type": "lite"}, "spec.replicas": 1}), webhook.on[0]).status == 201
    )
