"""docs/design.md is the behaviour contract: references to it resolve, and none point elsewhere.

Code cites a section as ``design.md §<anchor>`` (several as ``design.md §a, §b``), documents link to
``design.md#<anchor>``; the anchors are the ``<a id="...">`` markers in docs/design.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
# Spelled in two parts so that this file does not match itself.
OLD_MARK = "SPEC " + "§"
# "design.md §a" and any ", §b" that follows it.
CITE = re.compile(r"design\.md §([a-z0-9-]+)((?:, §[a-z0-9-]+)*)")
LINK = re.compile(r"design\.md#([a-z0-9-]+)")


def _tracked() -> list[Path]:
    """The repository's tracked text files (untracked ones too, unless git ignores them)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = []
    for rel in out:
        path = ROOT / rel
        # This file's docstring shows the reference forms with placeholder names.
        if path == Path(__file__).resolve():
            continue
        if path.is_file() and path.suffix not in (".png", ".svg", ".gz", ".tgz", ".whl", ".ico"):
            files.append(path)
    return files


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""


def anchors() -> list[str]:
    return re.findall(r'<a id="([a-z0-9-]+)"></a>', DESIGN.read_text())


def test_design_anchors_are_unique_and_each_heads_a_section() -> None:
    found = anchors()
    assert len(found) >= 30
    assert len(found) == len(set(found)), sorted(a for a in found if found.count(a) > 1)
    lines = DESIGN.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith('<a id="'):
            assert lines[i + 1].startswith("#"), f"anchor on line {i + 1} is not followed by a heading"


def test_every_design_reference_resolves() -> None:
    known = set(anchors())
    broken = []
    cited = 0
    for path in _tracked():
        text = _text(path)
        for m in CITE.finditer(text):
            names = [m.group(1), *re.findall(r"§([a-z0-9-]+)", m.group(2))]
            cited += len(names)
            broken += [f"{path.relative_to(ROOT)}: §{n}" for n in names if n not in known]
        for m in LINK.finditer(text):
            cited += 1
            if m.group(1) not in known:
                broken.append(f"{path.relative_to(ROOT)}: #{m.group(1)}")
    assert broken == []
    assert cited > 30  # the references exist (the test would pass vacuously otherwise)


def test_no_reference_to_the_old_specification_remains() -> None:
    left = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _tracked()
        for n, line in enumerate(_text(path).splitlines(), 1)
        if OLD_MARK in line
    ]
    assert left == [], f"{len(left)} references to the old specification: {left[:20]}"
