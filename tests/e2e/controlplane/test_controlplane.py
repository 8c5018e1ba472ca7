"""The local control plane behaves like Kubernetes: scheduling, GC, audit, CEL, webhooks, teardown."""

from __future__ import annotations

import base64
import http.server
import json
import os
import ssl
import threading
import time
import uuid
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane, StartError
from tests.harness.pki import CertificateAuthority


def _ns(plane: ControlPlane, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    plane.create_namespace(name)
    return name


def test_deployment_pods_run_on_the_kwok_node(plane: ControlPlane) -> None:
    ns = _ns(plane, "deploy")
    assert plane.client
    labels = {"app": "web"}
    plane.client.create(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]},
                },
            },
        },
    )
    client = plane.client
    plane.wait_for(
        "deployment web readyReplicas 3",
        lambda: (
            client.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web")
            .get("status", {})
            .get("readyReplicas")
            == 3
        ),
        90,
    )
    rs = client.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    assert len(rs) == 1 and rs[0]["metadata"]["ownerReferences"][0]["name"] == "web"
    pods = client.get(f"/api/v1/namespaces/{ns}/pods")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"] == "kwok-node-0"
        assert pod["status"]["phase"] == "Running"
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def test_garbage_collection_and_namespace_deletion(plane: ControlPlane) -> None:
    ns = _ns(plane, "gc")
    assert plane.client
    client = plane.client
    owner = client.create(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    client.create(
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
        },
    )
    assert client.delete(f"/api/v1/namespaces/{ns}/configmaps/owner") == 200
    plane.wait_for(
        "child garbage-collected",
        lambda: client.request("GET", f"/api/v1/namespaces/{ns}/configmaps/child")[0] == 404,
        60,
    )
    assert client.delete(f"/api/v1/namespaces/{ns}") == 200
    plane.wait_for(
        f"namespace {ns} gone", lambda: client.request("GET", f"/api/v1/namespaces/{ns}")[0] == 404, 90
    )


def test_audit_log_records_requests_by_user_agent(plane: ControlPlane) -> None:
    assert plane.client
    marker = f"audit-{uuid.uuid4().hex[:8]}"
    plane.client.request("GET", f"/api/v1/namespaces/default/configmaps/{marker}")

    def seen() -> bool:
        return any(
            e.get("userAgent") == "ojsctrl-harness"
            and marker in e.get("requestURI", "")
            and e.get("responseStatus", {}).get("code") == 404
            for e in plane.audit_events()
        )

    plane.wait_for("audit event for the marker request", seen, 10)


def test_crd_cel_rule_rejects_with_its_message(plane: ControlPlane) -> None:
    assert plane.client
    client = plane.client
    group = "harness.ojsctrl.dev"
    client.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "x-kubernetes-validations": [
                                            {"rule": "self.max >= self.min", "message": "max must be >= min"}
                                        ],
                                        "properties": {
                                            "min": {"type": "integer"},
                                            "max": {"type": "integer"},
                                        },
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        },
    )
    plane.wait_for(
        "widgets served",
        lambda: client.request("GET", f"/apis/{group}/v1/namespaces/default/widgets")[0] == 200,
        30,
    )
    path = f"/apis/{group}/v1/namespaces/default/widgets"
    status, body = client.request(
        "POST",
        path,
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "bad"},
            "spec": {"min": 5, "max": 1},
        },
    )
    assert status == 422, body
    assert "max must be >= min" in body["message"]
    status, _ = client.request(
        "POST",
        path,
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "good"},
            "spec": {"min": 1, "max": 5},
        },
    )
    assert status == 201


class _Webhook(http.server.BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Webhook.calls.append(review)
        obj = review["request"]["object"]
        allowed = obj.get("data", {}).get("verdict") != "deny"
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": allowed,
                    "status": {"code": 403, "message": "denied by the harness webhook"},
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_apiserver_calls_a_webhook_on_loopback(plane: ControlPlane, tmp_path: Any) -> None:
    assert plane.client
    ca = CertificateAuthority("webhook-ca")
    crt, key = ca.issue("webhook", ips=("127.0.0.1",), server=True).write(tmp_path, "serving")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ns = _ns(plane, "webhook")
    name = f"harness-{uuid.uuid4().hex[:6]}"
    try:
        plane.client.create(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": name},
                "webhooks": [
                    {
                        "name": "configmaps.harness.ojsctrl.dev",
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{server.server_address[1]}/validate",
                            "caBundle": base64.b64encode(ca.pair.cert_pem).decode(),
                        },
                        "rules": [
                            {
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["configmaps"],
                            }
                        ],
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 5,
                    }
                ],
            },
        )
        client = plane.client
        path = f"/api/v1/namespaces/{ns}/configmaps"
        deny = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x"},
            "data": {"verdict": "deny"},
        }
        # The apiserver picks up a new webhook configuration asynchronously.
        plane.wait_for("webhook denies", lambda: client.request("POST", path, deny)[0] == 403, 30)
        status, body = client.request(
            "POST",
            path,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}, "data": {"verdict": "ok"}},
        )
        assert status == 201, body
        assert any(c["request"]["name"] == "y" for c in _Webhook.calls)
    finally:
        plane.client.delete(f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}")
        server.shutdown()
        server.server_close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill 0; it is gone once reaped, which Popen.wait did.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_two_planes_run_at_once_and_teardown_leaves_no_process(plane: ControlPlane) -> None:
    with ControlPlane(name="teardown") as cp:
        pids = cp.pids()
        assert len(pids) == 5 and all(_pid_alive(p) for p in pids)
        assert cp.apiserver_port != plane.apiserver_port
        assert cp.client and plane.client
        assert cp.client.get("/api/v1/nodes")["items"][0]["metadata"]["name"] == "kwok-node-0"
        assert plane.client.request("GET", "/readyz")[0] == 200
    deadline = time.monotonic() + 5
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _pid_alive(p)]


def test_failed_start_leaves_no_process() -> None:
    class Broken(ControlPlane):
        def _create_node(self) -> None:
            raise StartError("injected failure after every component started")

    cp = Broken(name="broken")
    with pytest.raises(StartError, match="injected"):
        cp.start()
    pids = cp.pids()
    assert len(pids) == 5
    assert not [p for p in pids if _pid_alive(p)]
