"""kubectl's rules for the kubeconfig, context and namespace, on real kubeconfig files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ojsctrl.plugin.kube import ConfigError, connect


def kubeconfig(tmp_path: Path) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t0ken-for-tests"}}],
        "contexts": [
            {"name": "apps", "context": {"cluster": "c", "user": "u", "namespace": "ojs-apps"}},
            {"name": "plain", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "apps",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_namespace_from_the_current_context(tmp_path: Path) -> None:
    conn = connect(str(kubeconfig(tmp_path)), None, None)
    assert (conn.namespace, conn.context) == ("ojs-apps", "apps")
    assert conn.client.host == "https://127.0.0.1:6443"


def test_context_flag_and_namespace_flag(tmp_path: Path) -> None:
    path = str(kubeconfig(tmp_path))
    assert connect(path, "plain", None).namespace == "default"
    assert connect(path, "plain", "x").namespace == "x"
    assert connect(path, None, "y").namespace == "y"


def test_kubeconfig_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path)))
    assert connect(None, None, None).namespace == "ojs-apps"


def test_unknown_context_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"--context: no context 'nope' in the kubeconfig \(have: apps, plain\)"
    ):
        connect(str(kubeconfig(tmp_path)), "nope", None)
    with pytest.raises(ConfigError, match="cannot"):
        connect(str(tmp_path / "missing"), None, None)
