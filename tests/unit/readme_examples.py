"""The YAML examples of the reference README, read from the samples that ship them (deploy/samples/).

design.md §api: they must apply unchanged. The unit tests that parse, validate and build the README
examples take them from here, so they test what is shipped; tests/unit/test_api_models.py checks the samples
against the reference README itself when it is available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "samples"
# In the README's order.
README_SAMPLES = ("readme-minimal-cluster.yaml", "readme-production-cluster.yaml", "readme-multi-worker.yaml")


# The one deliberate difference between a sample and the README: the README puts its production cluster in
# ojs-system, the operator's own namespace; the shipped sample uses a user namespace (issue 18).
NAMESPACE_MOVED = {"readme-production-cluster.yaml": ("namespace: ojs-apps", "namespace: ojs-system")}


def _example(name: str) -> str:
    """A sample's YAML without the comment lines it starts with: the README's text."""
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    text = "\n".join(lines).strip()
    if name in NAMESPACE_MOVED:
        shipped, readme = NAMESPACE_MOVED[name]
        assert text.count(shipped) == 1, f"{name}: expected one {shipped!r}"
        text = text.replace(shipped, readme)
    return text


README_EXAMPLES = [_example(name) for name in README_SAMPLES]


def readme_documents() -> list[dict[str, Any]]:
    """Every document of every README example, in order (parsed afresh on each call)."""
    return [doc for example in README_EXAMPLES for doc in yaml.safe_load_all(example)]
