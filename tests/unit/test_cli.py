"""Unit tests for ojsctrl.cli: duration/boolean parsing, flag defaults, env-var defaults and precedence."""

from __future__ import annotations

import argparse
import os

import pytest

from ojsctrl import __version__
from ojsctrl.cli import build_parser, parse_bool, parse_duration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OJSCTRL_* variable from the outer environment may leak into a test."""
    for name in list(os.environ):
        if name.startswith("OJSCTRL_"):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2.5s", 2.5),
        ("500ms", 0.5),
        ("10", 10.0),
        ("0.25", 0.25),
        ("0s", 0.0),
        (" 15s ", 15.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "-1", "-1m30s", "abc", "", " ", "s", "1x", "1m 30s", "1s2", "15sec"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["nan", "inf"])
def test_parse_duration_rejects_non_finite(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["true", "TRUE", "1", "yes", "on", "t", "y", " True "])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "False", "0", "no", "off", "f", "n"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "maybe", "2", "truthy"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool(text)


# ------------------------------------------------------------------------ defaults (design.md §manager-flags)
def test_defaults_match_spec() -> None:
    args = build_parser().parse_args([])
    assert args.metrics_bind_address == ":8080"
    assert args.health_probe_bind_address == ":8081"
    assert args.leader_elect is False
    assert args.leader_election_id == "ojs-k8s-operator.openjobspec.dev"
    assert args.leader_election_namespace == ""
    assert args.lease_duration == 15.0
    assert args.renew_deadline == 10.0
    assert args.retry_period == 2.0
    assert args.watch_namespace == []
    assert args.kube_api_qps == 50.0
    assert args.kube_api_burst == 100
    assert args.watch_inactivity_timeout == 70.0
    assert args.log_level == "info"
    assert args.log_format == "json"
    assert args.kubeconfig is None


def test_flags_parse_durations() -> None:
    args = build_parser().parse_args(
        ["--lease-duration", "1m", "--renew-deadline=45s", "--retry-period", "5"]
    )
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (60.0, 45.0, 5.0)


def test_bad_flag_value_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--lease-duration", "soon"])
    assert exc.value.code == 2
    assert "--lease-duration" in capsys.readouterr().err


# --------------------------------------------------------------------------- booleans
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], False),
        (["--leader-elect"], True),
        (["--leader-elect=true"], True),
        (["--leader-elect=false"], False),
        (["--leader-elect", "false"], False),
        (["--leader-elect", "--metrics-bind-address", "0"], True),
    ],
)
def test_boolean_flag_forms(argv: list[str], expected: bool) -> None:
    assert build_parser().parse_args(argv).leader_elect is expected


def test_boolean_flag_rejects_garbage() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--leader-elect=perhaps"])


# --------------------------------------------------------------------------- environment
def test_env_sets_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OJSCTRL_LEADER_ELECT", "true")
    monkeypatch.setenv("OJSCTRL_WATCH_NAMESPACE", "a, b,")
    monkeypatch.setenv("OJSCTRL_LEASE_DURATION", "30s")
    monkeypatch.setenv("OJSCTRL_METRICS_BIND_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv("OJSCTRL_KUBE_API_BURST", "7")
    args = build_parser().parse_args([])
    assert args.leader_elect is True
    assert args.watch_namespace == ["a", "b"]
    assert args.lease_duration == 30.0
    assert args.metrics_bind_address == "127.0.0.1:9999"
    assert args.kube_api_burst == 7


def test_command_line_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OJSCTRL_LEADER_ELECT", "true")
    monkeypatch.setenv("OJSCTRL_WATCH_NAMESPACE", "a,b")
    monkeypatch.setenv("OJSCTRL_LEASE_DURATION", "30s")
    args = build_parser().parse_args(
        ["--leader-elect=false", "--watch-namespace", "c", "--lease-duration", "20s"]
    )
    assert args.leader_elect is False
    assert args.watch_namespace == ["c"]
    assert args.lease_duration == 20.0


def test_env_false_and_flag_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OJSCTRL_LEADER_ELECT", "false")
    assert build_parser().parse_args([]).leader_elect is False
    assert build_parser().parse_args(["--leader-elect"]).leader_elect is True


def test_watch_namespace_repeatable() -> None:
    args = build_parser().parse_args(["--watch-namespace", "a", "--watch-namespace=b"])
    assert args.watch_namespace == ["a", "b"]


def test_repeatable_default_is_not_shared_between_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OJSCTRL_WATCH_NAMESPACE", "a")
    parser = build_parser()
    first = parser.parse_args([])
    first.watch_namespace.append("mutated")
    assert parser.parse_args([]).watch_namespace == ["a"]


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("OJSCTRL_LEASE_DURATION", "soon"),
        ("OJSCTRL_LEADER_ELECT", "perhaps"),
        ("OJSCTRL_KUBE_API_BURST", "0"),
        ("OJSCTRL_KUBE_API_QPS", "fast"),
    ],
)
def test_bad_env_value_exits_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit) as exc:
        build_parser()
    assert exc.value.code == 2
    assert env in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ojsctrl {__version__}"


def test_help_names_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "OJSCTRL_LEADER_ELECT" in out
    assert "OJSCTRL_WATCH_NAMESPACE" in out


# --------------------------------------------------------------------------- --server-image
def test_server_image_defaults_to_the_pinned_table() -> None:
    assert build_parser().parse_args([]).server_image is None


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            ["--server-image", "mirror.example/ojs-backend-{backend}:{tag}"],
            None,
            "mirror.example/ojs-backend-{backend}:{tag}",
        ),
        ([], "mirror.example/{backend}:v1", "mirror.example/{backend}:v1"),
        ([], "", None),  # an empty variable (Helm's unset serverImage) keeps the pinned images
        (["--server-image=a/{backend}"], "b/{backend}", "a/{backend}"),
    ],
)
def test_server_image_template(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, expected: str | None
) -> None:
    if env is not None:
        monkeypatch.setenv("OJSCTRL_SERVER_IMAGE", env)
    assert build_parser().parse_args(argv).server_image == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("ghcr.io/openjobspec/ojs-server:v0.5.0", "lacks the placeholder {backend}"),
        ("x/{backend}:{version}", "unknown placeholder {version}"),
    ],
)
def test_bad_server_image_template_exits_with_the_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--server-image", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--server-image" in err and says in err
    monkeypatch.setenv("OJSCTRL_SERVER_IMAGE", value)
    with pytest.raises(SystemExit):
        build_parser()
    err = capsys.readouterr().err
    assert "OJSCTRL_SERVER_IMAGE" in err and says in err
