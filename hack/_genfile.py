"""The command line the gen_*.py scripts share: write one generated file, or with ``--check`` only say
whether the committed one is stale (exit 1). Not a script; each gen_*.py imports it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_or_check(
    argv: list[str] | None, doc: str | None, out: Path, render: Callable[[], str], *, check_help: str
) -> int:
    """A script's main: parse ``[--check]`` from argv (the --help text is the first line of the script's
    docstring, doc), render the text, then compare it with ``out`` or write it there."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help=check_help)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out.relative_to(REPO)} is stale: run `make manifests`", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0
