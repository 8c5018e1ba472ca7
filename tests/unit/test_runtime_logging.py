"""Unit tests for ojsctrl.runtime.logging.configure."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from ojsctrl.runtime.logging import configure


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() replaces global structlog and root-logger state; put it back for other tests."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    saved_level = root.level
    saved_levels = {n: logging.getLogger(n).level for n in ("urllib3", "kubernetes")}
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_one_object_per_line_with_context() -> None:
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    log = structlog.get_logger("ojsctrl.test").bind(controller="ojscluster", key="ns/a")
    log.info("reconciled", duration=0.25)
    structlog.contextvars.bind_contextvars(reconcile_id="abc123")
    log.warning("second event")
    out = lines(stream)
    assert len(out) == 2
    first, second = out
    assert first["event"] == "reconciled"
    assert first["level"] == "info"
    assert first["controller"] == "ojscluster"
    assert first["key"] == "ns/a"
    assert first["duration"] == 0.25
    assert first["logger"] == "ojsctrl.test"
    stamp = dt.datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None
    assert second["level"] == "warning"
    assert second["reconcile_id"] == "abc123"


def test_level_filters() -> None:
    stream = io.StringIO()
    configure("warning", "json", stream=stream)
    log = structlog.get_logger("ojsctrl.test.levels")
    log.debug("d")
    log.info("i")
    log.error("e")
    assert [e["event"] for e in lines(stream)] == ["e"]


def test_stdlib_logging_is_routed_as_json() -> None:
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    logging.getLogger("some.library").info("hello %s", "world")
    # The transport's chatter stays at warning and above even at debug.
    logging.getLogger("urllib3").info("connection pool reset")
    out = lines(stream)
    assert len(out) == 1
    assert out[0]["event"] == "hello world"
    assert out[0]["level"] == "info"
    assert "timestamp" in out[0]


def test_exception_is_structured_in_json() -> None:
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    log = structlog.get_logger("ojsctrl.test.exc")
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("failed")
    (entry,) = lines(stream)
    assert entry["event"] == "failed"
    assert entry["level"] == "error"
    assert "bad thing" in json.dumps(entry["exception"])


def test_console_format_is_not_json() -> None:
    stream = io.StringIO()
    configure("info", "console", stream=stream)
    structlog.get_logger("ojsctrl.test.console").info("hello", key="ns/a")
    text = stream.getvalue()
    assert "hello" in text
    assert "key=ns/a" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize("level", ["DEBUG", "Info", "warn", "error"])
def test_levels_case_insensitive(level: str) -> None:
    configure(level, "json", stream=io.StringIO())


@pytest.mark.parametrize("level", ["verbose", "", "critical"])
def test_invalid_level_names_the_flag(level: str) -> None:
    with pytest.raises(ValueError, match="--log-level"):
        configure(level, "json", stream=io.StringIO())


@pytest.mark.parametrize("fmt", ["text", "JSON", ""])
def test_invalid_format_names_the_flag(fmt: str) -> None:
    with pytest.raises(ValueError, match="--log-format"):
        configure("info", fmt, stream=io.StringIO())
