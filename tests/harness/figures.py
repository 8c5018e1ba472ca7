"""Figures of the reliability tests (times, counts, memory), printed and written to one JSON file.

Each test records its figures with :func:`figure`; the e2e conftest writes them all at the end of the session
to ``$OJSCTRL_RELIABILITY_FIGURES`` (default: <tmp>/ojsctrl-reliability-figures.json); docs/reliability.md
summarises a run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tests.harness.kube import FULL

FIGURES: dict[str, dict[str, Any]] = {}


def figure(test: str, **values: Any) -> None:
    """Record (and print) figures of a test under its short name."""
    FIGURES.setdefault(test, {}).update(values)
    print(f"[figures] {test}: {json.dumps(values, default=str)}")


def write() -> Path | None:
    """Write what was recorded (nothing when no test recorded a figure)."""
    if not FIGURES:
        return None
    out = Path(
        os.environ.get(
            "OJSCTRL_RELIABILITY_FIGURES", Path(tempfile.gettempdir()) / "ojsctrl-reliability-figures.json"
        )
    )
    out.write_text(json.dumps({"full": FULL, "figures": FIGURES}, indent=2, default=str))
    return out
