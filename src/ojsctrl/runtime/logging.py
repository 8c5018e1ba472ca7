"""structlog configuration: one JSON object per line (json) or human-readable lines (console)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Configure structlog and route the standard library's logging (urllib3, kubernetes) through it."""
    lvl = LEVELS.get(level.lower())
    if lvl is None:
        raise ValueError(f"--log-level must be one of {', '.join(sorted(LEVELS))}, not {level!r}")
    if fmt not in ("json", "console"):
        raise ValueError(f"--log-format must be json or console, not {fmt!r}")
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_logger_name,
    ]
    renderer: Any
    # Tracebacks never carry the frames' local variables: those hold credentials (API keys, backend URLs).
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # The transport's own chatter (connection pool resets) is noise at info level.
    logging.getLogger("urllib3").setLevel(max(lvl, logging.WARNING))
    logging.getLogger("kubernetes").setLevel(max(lvl, logging.WARNING))
