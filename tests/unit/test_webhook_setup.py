"""Webhook flags, the wiring into a Manager, and the generated ValidatingWebhookConfiguration."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s_client

from ojsctrl.cli import build_parser
from ojsctrl.runtime.client import Client
from ojsctrl.runtime.manager import Manager
from ojsctrl.webhooks import CLUSTER_PATH, WORKER_PATH
from ojsctrl.webhooks.flags import DEFAULT_CERT_DIR, add_webhook_flags
from ojsctrl.webhooks.manifests import (
    MANIFEST_DIR,
    committed,
    dev_webhook_configuration,
    main,
    webhook_configuration,
)
from ojsctrl.webhooks.setup import service_dns_names, setup_webhooks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OJSCTRL_"):
            monkeypatch.delenv(name)


def parse(*argv: str) -> argparse.Namespace:
    parser = build_parser()
    if "--enable-webhooks" not in parser._option_string_actions:
        add_webhook_flags(parser)
    return parser.parse_args(list(argv))


def test_flag_defaults() -> None:
    args = parse()
    assert args.enable_webhooks is False
    assert args.webhook_port == 9443
    assert args.webhook_cert_dir == DEFAULT_CERT_DIR
    assert args.webhook_cert_mode == "self-managed"
    assert args.webhook_service_name == "ojs-operator-webhook-service"
    assert args.webhook_service_namespace == ""
    assert args.webhook_config_name == "ojs-operator-validating-webhook-configuration"
    assert args.webhook_host == ""
    assert args.webhook_cert_validity == dt.timedelta(days=365)


def test_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OJSCTRL_ENABLE_WEBHOOKS", "true")
    monkeypatch.setenv("OJSCTRL_WEBHOOK_PORT", "10443")
    monkeypatch.setenv("OJSCTRL_WEBHOOK_CERT_VALIDITY", "30s")
    args = parse("--webhook-cert-mode", "external", "--webhook-host", "127.0.0.1")
    assert args.enable_webhooks is True and args.webhook_port == 10443
    assert args.webhook_cert_mode == "external" and args.webhook_host == "127.0.0.1"
    assert args.webhook_cert_validity == dt.timedelta(seconds=30)
    assert parse("--webhook-cert-validity", "1h").webhook_cert_validity == dt.timedelta(hours=1)


@pytest.mark.parametrize(
    "argv",
    [
        ["--webhook-port", "0"],
        ["--webhook-port", "70000"],
        ["--webhook-cert-mode", "cert-manager"],
        ["--webhook-cert-validity", "5s"],
        ["--webhook-cert-validity", "1d"],
    ],
)
def test_bad_values_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_validity_flag_is_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    out = capsys.readouterr().out
    assert "--webhook-port" in out and "OJSCTRL_WEBHOOK_PORT" in out
    assert "--webhook-cert-validity" not in out


def _manager() -> Manager:
    cfg = k8s_client.Configuration()
    cfg.host = "https://127.0.0.1:1"
    return Manager(Client(cfg))


def test_setup_registers_nothing_when_disabled() -> None:
    manager = _manager()
    assert setup_webhooks(manager, parse()) is None
    assert manager.runnables == [] and "webhook" not in manager.readyz.checks


def test_setup_registers_server_certificates_and_readiness_on_every_replica(tmp_path: Path) -> None:
    manager = _manager()
    args = parse(
        "--enable-webhooks", "--webhook-cert-dir", str(tmp_path), "--webhook-service-namespace", "ops"
    )
    server = setup_webhooks(manager, args)
    assert server is not None
    assert sorted(server.handlers) == sorted([CLUSTER_PATH, WORKER_PATH])
    assert [(r.name, r.needs_leader) for r in manager.runnables] == [
        ("webhook-certificates", False),
        ("webhook-server", False),
    ]
    assert "webhook" in manager.readyz.checks
    assert manager.readyz.checks["webhook"]() is not None  # not serving yet
    # The clusters informer is the shared one the reconcilers use.
    assert [i.resource.plural for i in manager.informers.all()] == ["ojsclusters"]
    assert server.host == "127.0.0.1"  # out of a cluster
    # Idempotent.
    assert setup_webhooks(manager, args) is server and len(manager.runnables) == 2


def test_external_mode_has_no_certificate_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    manager = _manager()
    args = parse("--enable-webhooks", "--webhook-cert-mode", "external", "--webhook-cert-dir", str(tmp_path))
    server = setup_webhooks(manager, args)
    assert server is not None and server.host == "0.0.0.0"
    assert [r.name for r in manager.runnables] == ["webhook-server"]


def test_service_names() -> None:
    names = service_dns_names("svc", "ops")
    assert names[0] == "svc.ops.svc" and "svc.ops.svc.cluster.local" in names


# --------------------------------------------------------------------------- manifests
def test_committed_manifests_are_current() -> None:
    for name, text in committed().items():
        path = ROOT / MANIFEST_DIR / name
        assert path.read_text() == text, f"{path} is stale: python -m ojsctrl.webhooks.manifests --write ."


def test_configuration_choices() -> None:
    cfg = webhook_configuration()
    assert cfg["kind"] == "ValidatingWebhookConfiguration"
    assert [w["clientConfig"]["service"]["path"] for w in cfg["webhooks"]] == [CLUSTER_PATH, WORKER_PATH]
    for w in cfg["webhooks"]:
        assert w["sideEffects"] == "None"
        assert w["failurePolicy"] == "Fail"
        assert w["timeoutSeconds"] == 5
        assert w["admissionReviewVersions"] == ["v1"]
        assert w["clientConfig"]["service"]["namespace"] == "ojs-system"
        assert "caBundle" not in w["clientConfig"]
        (rule,) = w["rules"]
        assert rule["operations"] == ["CREATE", "UPDATE"]
        assert rule["apiGroups"] == ["ojs.openjobspec.dev"]
        # Only the main resources: never status or scale, so the operator's own writes never wait for it.
        assert rule["resources"] in (["ojsclusters"], ["ojsworkers"])


def test_dev_configuration_uses_a_loopback_url() -> None:
    cfg = dev_webhook_configuration(19443, ca_bundle=b"PEM", namespace_selector={"matchLabels": {"a": "b"}})
    urls = [w["clientConfig"]["url"] for w in cfg["webhooks"]]
    assert urls == [f"https://127.0.0.1:19443{CLUSTER_PATH}", f"https://127.0.0.1:19443{WORKER_PATH}"]
    assert all("service" not in w["clientConfig"] and w["clientConfig"]["caBundle"] for w in cfg["webhooks"])
    assert all(w["namespaceSelector"] == {"matchLabels": {"a": "b"}} for w in cfg["webhooks"])


def test_generator_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dev", "--port", "8443"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["webhooks"][0]["clientConfig"]["url"].startswith("https://127.0.0.1:8443/")
    assert main(["--service-namespace", "ops", "--failure-policy", "Ignore"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["webhooks"][1]["clientConfig"]["service"]["namespace"] == "ops"
    assert doc["webhooks"][1]["failurePolicy"] == "Ignore"


def test_the_app_registers_controllers_and_webhooks_side_by_side(tmp_path: Path) -> None:
    from ojsctrl.app import setup_operator

    manager = _manager()
    args = parse(
        "--enable-webhooks", "--webhook-cert-dir", str(tmp_path), "--webhook-service-namespace", "ops"
    )
    setup_operator(manager, args)
    names = [r.name for r in manager.runnables]
    assert {"ojs-stats-poller", "event-sender", "webhook-server", "webhook-certificates"} <= set(names)
    # The controllers come first, the webhooks after them (the webhooks share the clusters informer).
    assert names.index("event-sender") < names.index("webhook-server")
    assert "webhook" in manager.readyz.checks


def test_controllers_alone_register_no_webhook(tmp_path: Path) -> None:
    from ojsctrl.controllers.setup import setup_controllers

    manager = _manager()
    setup_controllers(manager, parse("--enable-webhooks", "--webhook-cert-dir", str(tmp_path)))
    assert not any(r.name.startswith("webhook") for r in manager.runnables)
    assert "webhook" not in manager.readyz.checks
