"""The docs' shell commands are all accounted for, and their links resolve.

Every fenced shell block in README.md and docs/*.md is preceded by a marker comment saying who runs it:
  <!-- tested: e2e -->     tests/e2e/delivery/test_docs.py runs it against a real control plane;
  <!-- tested: ci -->      CI runs it (`make test`);
  <!-- tested: syntax -->  it needs something this machine lacks (a registry, OLM, a real node); its syntax
                           is checked here with `bash -n`, and the reason follows the marker.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!--\s*tested:\s*(e2e|syntax|ci)\b([^>]*)-->\s*$")
SHELL = {"sh", "bash", "shell", "console"}
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def blocks(path: Path) -> list[tuple[int, str, str, str | None, str]]:
    """(line, language, body, marker, reason) for every fenced block."""
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").splitlines()
        mark = MARK.search(before[-1]) if before else None
        out.append(
            (
                line,
                m.group(1),
                m.group(2),
                mark.group(1) if mark else None,
                (mark.group(2).strip() if mark else ""),
            )
        )
    return out


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_shell_block_is_marked(path: Path) -> None:
    for line, lang, _body, marker, reason in blocks(path):
        if lang in SHELL:
            assert marker, f"{path.name}:{line}: a shell block without a <!-- tested: ... --> marker"
            if marker == "syntax":
                assert reason, f"{path.name}:{line}: say why this block cannot run in the tests"
        else:
            assert marker is None, f"{path.name}:{line}: a marker on a {lang or 'plain'} block"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_shell_blocks_parse(path: Path) -> None:
    for line, lang, body, _marker, _reason in blocks(path):
        if lang in SHELL:
            out = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True, check=False)
            assert out.returncode == 0, f"{path.name}:{line}: {out.stderr}"


def test_commands_in_code_blocks_are_shell_blocks() -> None:
    """A command shown in a non-shell block would escape the tests: kubectl/make/helm only in sh blocks."""
    for path in DOCS:
        for line, lang, body, _marker, _reason in blocks(path):
            if lang in SHELL or lang in ("yaml", "json"):
                continue
            for cmd in ("kubectl ", "helm ", "make "):
                assert not any(row.lstrip().startswith(cmd) for row in body.splitlines()), (
                    f"{path.name}:{line}: `{cmd.strip()}` in a {lang or 'plain'} block"
                )


def test_the_quick_start_is_the_two_commands() -> None:
    readme = blocks(ROOT / "README.md")
    quick = next(b for b in readme if b[1] == "sh")
    assert [row.split("#")[0].strip() for row in quick[2].splitlines()] == ["make run", "make test"]


def test_e2e_runs_every_doc_with_e2e_blocks() -> None:
    from tests.harness.delivery import DOC_ORDER

    with_e2e = {str(p.relative_to(ROOT)) for p in DOCS if any(b[3] == "e2e" for b in blocks(p))}
    assert with_e2e <= set(DOC_ORDER)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", path.read_text()))  # not inside code
    for m in LINK.finditer(text):
        target = m.group(1)
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_docs_cover_what_the_spec_asks() -> None:
    names = {p.name for p in DOCS}
    assert {
        "install.md",
        "crd-reference.md",
        "autoscaling.md",
        "troubleshooting.md",
        "production-checklist.md",
    } <= names
    troubleshooting = (ROOT / "docs" / "troubleshooting.md").read_text()
    for command in (
        "kubectl logs -n ojs-system -l control-plane=controller-manager",
        "kubectl get events -n ojs-system --sort-by='.lastTimestamp'",
        "kubectl get pods -l app.kubernetes.io/component=backend",
        "kubectl get ojsclusters",
        "kubectl get clusterrole ojs-operator-manager-role -o yaml",
        "kubectl get clusterrolebinding ojs-operator-manager-rolebinding -o yaml",
        """-p '{"metadata":{"finalizers":null}}' --type=merge""",
    ):
        assert command in troubleshooting, command
