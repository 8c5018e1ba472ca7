"""The --ojs-url-template flag: the pure template checks and the flag that calls them."""

from __future__ import annotations

import pytest

from ojsctrl import cli
from ojsctrl.ojs.urls import DEFAULT_URL_TEMPLATE, url_for, validate_url_template


def test_url_for_default_and_custom() -> None:
    assert url_for(DEFAULT_URL_TEMPLATE, "c1", "ns") == "http://c1-server.ns.svc.cluster.local:8080"
    assert url_for("http://127.0.0.1:{port}/", "c1", "ns", port=9000) == "http://127.0.0.1:9000"
    assert (
        url_for("https://{name}.{namespace}.example/ojs-{service}", "c", "n")
        == "https://c.n.example/ojs-c-server"
    )


@pytest.mark.parametrize(
    "template",
    [
        "http://{svc}.{namespace}",
        "http://{name.__class__}",
        "http://{port:>6}",
        "http://{name!r}",
        "ftp://{service}",
        "{service}",
        "http://{",
    ],
)
def test_url_template_rejects(template: str) -> None:
    with pytest.raises(ValueError, match="--ojs-url-template"):
        validate_url_template(template)


def test_the_flag_refuses_a_bad_template_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--ojs-url-template", "http://{svc}.{namespace}"])
    assert "unknown placeholder {svc}" in capsys.readouterr().err


def test_the_flag_takes_a_good_template_and_defaults_to_the_full_name() -> None:
    args = cli.build_parser().parse_args(["--ojs-url-template", "https://{service}.{namespace}:{port}"])
    assert args.ojs_url_template == "https://{service}.{namespace}:{port}"
    assert cli.build_parser().parse_args([]).ojs_url_template == DEFAULT_URL_TEMPLATE


def test_a_bad_template_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OJSCTRL_OJS_URL_TEMPLATE", "ftp://{service}")
    with pytest.raises(SystemExit):
        cli.build_parser()
    err = capsys.readouterr().err
    assert "OJSCTRL_OJS_URL_TEMPLATE" in err and "http:// or https://" in err
