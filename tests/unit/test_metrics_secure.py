"""--metrics-secure: TokenReview + SubjectAccessReview on /metrics (cached), HTTPS with a self-signed or a
directory certificate, and the flags that turn it on. The e2e half (real reviews against the real API server)
is in tests/e2e/security/test_metrics_auth.py."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client import CollectorRegistry, Counter

from ojsctrl.runtime.certs import CertConfig, issue
from ojsctrl.runtime.client import TransportError
from ojsctrl.runtime.httpserver import Checks, EndpointServer, MetricsAuthorizer, ServingCertificate

pytestmark = pytest.mark.timeout(60)

TR = "/apis/authentication.k8s.io/v1/tokenreviews"
SAR = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class FakeApi:
    """Answers TokenReviews and SubjectAccessReviews from tables; records every call."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.allowed: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: set[str] = set()

    def request(self, method: str, path: str, *, body: Any = None, timeout: float | None = None) -> Any:
        assert method == "POST"
        self.calls.append((path, body))
        if path in self.fail:
            raise TransportError(0, "TransportError", "connection refused", method="POST", target=path)
        if path == TR:
            user = self.users.get(body["spec"]["token"])
            return {"status": {"authenticated": user is not None, **({"user": user} if user else {})}}
        if path == SAR:
            return {"status": {"allowed": body["spec"]["user"] in self.allowed}}
        raise AssertionError(path)

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.calls if p == path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> FakeApi:
    a = FakeApi()
    a.users["good"] = {
        "username": "system:serviceaccount:mon:prometheus",
        "uid": "u-1",
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["prom-0"]},
    }
    a.users["nobody"] = {"username": "system:serviceaccount:mon:nobody", "groups": []}
    a.allowed.add("system:serviceaccount:mon:prometheus")
    return a


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==", "good"])
def test_no_bearer_token_is_401_without_asking_the_api(api: FakeApi, header: str | None) -> None:
    auth = MetricsAuthorizer(api)
    d = auth.check(header)
    assert (d.status, d.allowed) == (401, False)
    assert api.calls == []


def test_oversized_token_is_refused_locally(api: FakeApi) -> None:
    d = MetricsAuthorizer(api).check("Bearer " + "x" * (MetricsAuthorizer.MAX_TOKEN_BYTES + 1))
    assert d.status == 401 and api.calls == []


def test_allowed_user_reviews_once_then_cached_until_ttl(api: FakeApi) -> None:
    clock = Clock()
    auth = MetricsAuthorizer(api, allowed_ttl=60, denied_ttl=10, clock=clock)
    for _ in range(5):
        assert auth.check("Bearer good").status == 200
    assert (api.count(TR), api.count(SAR)) == (1, 1)
    sar = next(b for p, b in api.calls if p == SAR)["spec"]
    assert sar["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"}
    assert sar["user"] == "system:serviceaccount:mon:prometheus"
    assert sar["uid"] == "u-1"
    assert sar["groups"] == ["system:serviceaccounts", "system:authenticated"]
    assert sar["extra"] == {"authentication.kubernetes.io/pod-name": ["prom-0"]}
    clock.now += 59
    assert auth.check("Bearer good").status == 200
    assert api.count(TR) == 1
    clock.now += 2
    assert auth.check("Bearer good").status == 200
    assert (api.count(TR), api.count(SAR)) == (2, 2)


def test_forbidden_user_is_403_and_cached_for_the_shorter_ttl(api: FakeApi) -> None:
    clock = Clock()
    auth = MetricsAuthorizer(api, allowed_ttl=60, denied_ttl=10, clock=clock)
    d = auth.check("Bearer nobody")
    assert d.status == 403 and "system:serviceaccount:mon:nobody" in d.reason and "/metrics" in d.reason
    assert auth.check("Bearer nobody").status == 403
    assert api.count(SAR) == 1
    # RBAC granted meanwhile: noticed once the denial expires.
    api.allowed.add("system:serviceaccount:mon:nobody")
    clock.now += 11
    assert auth.check("Bearer nobody").status == 200


def test_unknown_token_is_401_and_cached(api: FakeApi) -> None:
    clock = Clock()
    auth = MetricsAuthorizer(api, clock=clock)
    assert auth.check("Bearer forged").status == 401
    assert auth.check("Bearer forged").status == 401
    assert (api.count(TR), api.count(SAR)) == (1, 0)


def test_api_errors_are_not_cached(api: FakeApi) -> None:
    auth = MetricsAuthorizer(api)
    api.fail = {TR}
    assert auth.check("Bearer good").status == 401
    api.fail = {SAR}
    assert auth.check("Bearer good").status == 500
    api.fail = set()
    assert auth.check("Bearer good").status == 200
    assert api.count(TR) == 3


def test_the_token_itself_is_never_a_cache_key(api: FakeApi) -> None:
    auth = MetricsAuthorizer(api)
    auth.check("Bearer good")
    keys = list(auth._cache.keys())
    assert keys and all("good" not in k and len(k) == 64 for k in keys)


def test_cache_is_bounded(api: FakeApi) -> None:
    auth = MetricsAuthorizer(api, max_entries=8)
    for i in range(50):
        auth.check(f"Bearer t{i}")
    assert len(auth._cache) <= 8


# --------------------------------------------------------------------------- the HTTPS listener
class Scraper:
    def __init__(self, port: int) -> None:
        self.port = port
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=5)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def peer_cert(self) -> x509.Certificate:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            self.ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der
        return x509.load_der_x509_certificate(der)


@pytest.fixture
def secure(api: FakeApi) -> Iterator[tuple[EndpointServer, Scraper]]:
    registry = CollectorRegistry()
    Counter("ojsctrl_unit_scrapes", "A test counter.", registry=registry).inc(7)
    cert = ServingCertificate()
    srv = EndpointServer(
        ("127.0.0.1", 0),
        registry=registry,
        healthz=Checks(),
        tls=cert.context,
        authorizer=MetricsAuthorizer(api),
        name="metrics",
    )
    srv.start()
    try:
        yield srv, Scraper(srv.port)
    finally:
        srv.stop()


def test_https_scrapes_are_authorised(secure: tuple[EndpointServer, Scraper]) -> None:
    _, s = secure
    assert s.get("/metrics")[0] == 401
    assert s.get("/metrics", "forged")[0] == 401
    status, body = s.get("/metrics", "nobody")
    assert status == 403 and "Forbidden" in body
    status, body = s.get("/metrics", "good")
    assert status == 200 and "ojsctrl_unit_scrapes_total 7.0" in body
    # Only /metrics is protected; health checks on the same listener stay open (probes carry no token).
    assert s.get("/healthz")[0] == 200


def test_plain_http_on_the_tls_port_gets_no_answer(secure: tuple[EndpointServer, Scraper]) -> None:
    srv, _ = secure
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/metrics")
        conn.getresponse()
    conn.close()


def test_self_signed_certificate_names_loopback(secure: tuple[EndpointServer, Scraper]) -> None:
    _, s = secure
    cert = s.peer_cert()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=30)


def _write_pair(folder: Path, cn: str) -> str:
    cfg = CertConfig(namespace="", secret_name="", dns_names=(cn,))
    _, pair = issue(cfg, dt.datetime.now(dt.UTC))
    tmp_crt, tmp_key = folder / ".tls.crt.tmp", folder / ".tls.key.tmp"
    tmp_crt.write_bytes(pair.cert_pem)
    tmp_key.write_bytes(pair.key_pem)
    os.replace(tmp_key, folder / "tls.key")
    os.replace(tmp_crt, folder / "tls.crt")
    return pair.cert.fingerprint(hashes.SHA256()).hex()


def test_certificate_from_a_directory_is_reloaded_when_it_changes(tmp_path: Path, api: FakeApi) -> None:
    first = _write_pair(tmp_path, "metrics-one")
    cert = ServingCertificate(str(tmp_path), check_interval=0.0)
    srv = EndpointServer(
        ("127.0.0.1", 0), registry=CollectorRegistry(), tls=cert.context, authorizer=MetricsAuthorizer(api)
    )
    srv.start()
    try:
        s = Scraper(srv.port)
        assert s.peer_cert().fingerprint(hashes.SHA256()).hex() == first
        second = _write_pair(tmp_path, "metrics-two")
        assert s.peer_cert().fingerprint(hashes.SHA256()).hex() == second
        assert s.get("/metrics", "good")[0] == 200
    finally:
        srv.stop()


def test_missing_certificate_directory_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"tls\.crt"):
        ServingCertificate(str(tmp_path / "absent"))


# --------------------------------------------------------------------------- flags
def test_flags_reach_the_manager_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ojsctrl.cli import build_manager, build_parser

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    args = build_parser().parse_args(["--kubeconfig", str(kubeconfig)])
    assert (args.metrics_secure, args.metrics_cert_dir) == (False, "")
    mgr = build_manager(args)
    assert mgr.options.metrics_secure is False and mgr.options.informer_stall_timeout == 300.0
    assert mgr.client.options.user_agent.startswith("ojsctrl/")

    args = build_parser().parse_args(
        [
            "--kubeconfig",
            str(kubeconfig),
            "--metrics-secure",
            "--metrics-cert-dir",
            "/certs",
            "--informer-stall-timeout",
            "20s",
            "--user-agent-suffix",
            "replica-b",
        ]
    )
    mgr = build_manager(args)
    assert mgr.options.metrics_secure is True and mgr.options.metrics_cert_dir == "/certs"
    assert mgr.options.informer_stall_timeout == 20.0
    assert mgr.client.options.user_agent.startswith("ojsctrl/") and mgr.client.options.user_agent.endswith(
        " replica-b"
    )

    monkeypatch.setenv("OJSCTRL_METRICS_SECURE", "true")
    monkeypatch.setenv("OJSCTRL_INFORMER_STALL_TIMEOUT", "1m")
    args = build_parser().parse_args([])
    assert args.metrics_secure is True and args.informer_stall_timeout == 60.0


def test_test_only_flags_are_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    from ojsctrl.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--metrics-secure" in out and "--metrics-cert-dir" in out
    assert "--informer-stall-timeout" not in out and "--user-agent-suffix" not in out
