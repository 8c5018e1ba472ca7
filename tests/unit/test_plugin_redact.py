"""Redaction of the support report: every layer, on the shapes credentials hide in."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from ojsctrl.plugin.redact import (
    REDACTED,
    known_values,
    redact_object,
    redact_text,
    scrub_known,
    secret_like_name,
)
from ojsctrl.plugin.report import Report, write_tarball


@pytest.mark.parametrize(
    "name",
    [
        "API_KEY",
        "OJS_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "dbPassword",
        "authToken",
        "PGPASSWORD",
        "password",
        "token",
        "api-key",
        "client_secret",
        "GITHUB_TOKEN",
        "privateKey",
        "DSN",
    ],
)
def test_credential_names(name: str) -> None:
    assert secret_like_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "REDIS_URL",
        "apiKeySecretRef",
        "secretName",
        "tokenPath",
        "author",
        "KEY_PREFIX",
        "tokens",
        "OJS_QUEUES",
        "name",
        "urlSecretRef",
    ],
)
def test_names_that_are_not_credentials(name: str) -> None:
    assert not secret_like_name(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw123@host:6379/0", f"redis://:{REDACTED}@host:6379/0"),
        ("postgres://u:p%40ss@h/db?x=1", f"postgres://u:{REDACTED}@h/db?x=1"),
        ("https://tok123@github.com/x", f"https://{REDACTED}@github.com/x"),
        ("http://host:8080/path", "http://host:8080/path"),
        ("password=hunter2 next", f"password={REDACTED} next"),
        ('{"api_key": "abc123def"}', f'{{"api_key": "{REDACTED}"}}'),
        ("Bearer eyJhbGciOi.payload.sig", f"Bearer {REDACTED}"),
        ("plain words about tokens", "plain words about tokens"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_secret_keeps_keys_only() -> None:
    s = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "managedFields": [{"manager": "x"}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"stringData":{"k":"v4lue"}}'
            },
        },
        "type": "Opaque",
        "data": {"a": base64.b64encode(b"one").decode(), "b": "dHdv"},
        "stringData": {"c": "three"},
    }
    out = redact_object(s)
    assert out["data"] == {"a": REDACTED, "b": REDACTED}
    assert out["stringData"] == {"c": REDACTED}
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == REDACTED
    assert "managedFields" not in out["metadata"]
    assert out["type"] == "Opaque" and s["data"]["b"] == "dHdv", "the input is left alone"


def test_secret_like_objects_and_configmaps() -> None:
    sealed = {"kind": "SealedSecret", "spec": {"encryptedData": {"k": "AgB..."}}}
    assert redact_object(sealed)["spec"]["encryptedData"] == {"k": REDACTED}
    cm = {
        "kind": "ConfigMap",
        "data": {"config.yaml": "url: redis://:pw@r:6379\nlevel: info", "password": "x1y2"},
    }
    out = redact_object(cm)
    assert out["data"]["config.yaml"] == f"url: redis://:{REDACTED}@r:6379\nlevel: info"
    assert out["data"]["password"] == REDACTED


def test_env_values_by_name_and_references_kept() -> None:
    container = {
        "env": [
            {"name": "OJS_API_KEY", "value": "k-123456"},
            {"name": "OJS_ALLOW_INSECURE_NO_AUTH", "value": "true"},
            {"name": "OJS_URL", "value": "http://ojs:8080"},
            {"name": "DATABASE_URL", "value": "postgres://a:b-secret@db/x"},
            {
                "name": "OJS_AUTH_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "c-api-key", "key": "api-key"}},
            },
        ],
        "envFrom": [{"secretRef": {"name": "aws"}}],
    }
    env = {e["name"]: e for e in redact_object(container)["env"]}
    assert env["OJS_API_KEY"]["value"] == REDACTED
    assert env["OJS_ALLOW_INSECURE_NO_AUTH"]["value"] == "true"
    assert env["OJS_URL"]["value"] == "http://ojs:8080"
    assert env["DATABASE_URL"]["value"] == f"postgres://a:{REDACTED}@db/x"
    assert env["OJS_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "c-api-key", "key": "api-key"}}
    assert redact_object(container)["envFrom"] == [{"secretRef": {"name": "aws"}}]


def test_known_values_are_scrubbed_everywhere() -> None:
    secrets = [
        {"kind": "Secret", "data": {"api-key": base64.b64encode(b"the-api-key-42").decode(), "tiny": "YQ=="}},
        {"kind": "Secret", "stringData": {"x": "string-data-value"}},
    ]
    known = known_values(secrets)
    assert "the-api-key-42" in known and base64.b64encode(b"the-api-key-42").decode() in known
    assert "a" not in known, "one-letter values would redact everything"
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASC\n-----END KEY-----\n"
    lines = known_values([{"data": {"k": base64.b64encode(pem.encode()).decode(), "flag": "dHJ1ZQ=="}}])
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEF" in lines and "AASC" not in lines
    assert "true" not in lines, "a short value like true is left to the other layers"
    text = "note: the-api-key-42 and string-data-value and " + base64.b64encode(b"the-api-key-42").decode()
    assert scrub_known(text, known) == f"note: {REDACTED} and {REDACTED} and {REDACTED}"


def test_tarball_has_every_file_scrubbed(tmp_path: Path) -> None:
    rep = Report()
    rep.secrets = [{"kind": "Secret", "data": {"k": base64.b64encode(b"leaky-value-1").decode()}}]
    rep.add_list("namespaces/a/configmaps.yaml", [{"kind": "ConfigMap", "data": {"note": "leaky-value-1"}}])
    rep.add_text(
        "operator/logs/p_c.log", "started with key leaky-value-1, Authorization: Bearer abcdef123456\n"
    )
    path = tmp_path / "r.tar.gz"
    names = write_tarball(rep, str(path))
    assert names == ["ojs-report/namespaces/a/configmaps.yaml", "ojs-report/operator/logs/p_c.log"]
    with tarfile.open(path) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers())  # type: ignore[union-attr]
    assert b"leaky-value-1" not in blob and b"abcdef123456" not in blob
    assert blob.count(REDACTED.encode()) >= 3
    assert isinstance(io.BytesIO(blob), io.BytesIO)


def test_service_fields_stay_readable() -> None:
    svc = {"kind": "Service", "spec": {"sessionAffinity": "None", "type": "ClusterIP"}}
    assert redact_object(svc) == svc
    assert secret_like_name("SIGNING_KEY") and secret_like_name("SESSION_SECRET")


def test_error_lines_are_short() -> None:
    from kubernetes.client.exceptions import ApiException

    from ojsctrl.plugin.report import Report

    rep = Report()

    def fail() -> None:
        e = ApiException(status=404, reason="Not Found")
        e.body = '{"kind":"Status","message":"pods \\"p\\" not found"}'
        raise e

    assert rep.attempt("logs of pod a/p", fail) is None
    assert rep.errors == ['logs of pod a/p: 404 Not Found: pods "p" not found']
