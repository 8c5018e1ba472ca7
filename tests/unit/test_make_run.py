"""`make run`'s argument handling (hack/run.py): loopback by default, ARGS passed through, webhooks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ojsctrl.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hack_run", REPO / "hack" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hack_run"] = module
    spec.loader.exec_module(module)
    return module


def test_binds_loopback_unless_told(run: ModuleType) -> None:
    args = build_parser().parse_args(run.with_loopback_defaults([]))
    assert args.metrics_bind_address.startswith("127.0.0.1")
    assert args.health_probe_bind_address.startswith("127.0.0.1")
    mine = run.with_loopback_defaults(["--metrics-bind-address=:9000", "--log-level", "debug"])
    args = build_parser().parse_args(mine)
    assert args.metrics_bind_address.endswith(":9000") and not args.metrics_bind_address.startswith("127")
    assert args.health_probe_bind_address.startswith("127.0.0.1")
    assert args.log_level == "debug"


@pytest.mark.parametrize(
    ("args", "local", "want"),
    [
        ([], True, True),
        ([], False, False),
        (["--enable-webhooks"], False, True),
        (["--enable-webhooks", "--log-level", "debug"], False, True),
        (["--enable-webhooks=false"], True, False),
        (["--enable-webhooks", "false"], True, False),
        (["--enable-webhooks=true"], False, True),
    ],
)
def test_webhooks_on_for_the_local_plane_or_when_asked(
    run: ModuleType, args: list[str], local: bool, want: bool
) -> None:
    assert run.webhooks_wanted(args, local) is want


def test_strip_flag_keeps_the_others(run: ModuleType) -> None:
    args = ["--enable-webhooks", "--log-level", "debug", "--enable-webhooks=true", "--enable-webhooks", "no"]
    assert run.strip_flag(args, "--enable-webhooks") == ["--log-level", "debug"]


def test_help_shows_defaults() -> None:
    text = build_parser().format_help()
    assert "(default: 10h)" in text  # --sync-period
    assert "(default: 15s)" in text  # --lease-duration
    assert "(default: 50.0)" in text  # --kube-api-qps
    assert "(default: false)" in text  # a boolean
