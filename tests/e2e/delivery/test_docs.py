"""The docs' shell blocks marked `<!-- tested: e2e -->` run against a fresh plane, in DOC_ORDER.

Conventions of the delivery tests: tests/e2e/delivery/conftest.py.
"""

from __future__ import annotations

import os
import subprocess

from tests.harness import binaries
from tests.harness.delivery import DOC_ORDER, doc_blocks, inert_webhooks
from tests.harness.kube import ROOT
from tests.harness.planes import start_plane, stop_plane

# Preconditions a docs page's tested commands assume, set up by the test (not by the reader).
DOC_SETUP: dict[str, list[list[str]]] = {
    "troubleshooting.md": [
        ["make", "install"],
        ["make", "deploy"],
        ["kubectl", "apply", "-f", "deploy/samples/readme-minimal-cluster.yaml"],
        ["kubectl", "apply", "-f", "deploy/samples/readme-multi-worker.yaml"],
    ],
    "autoscaling.md": [
        ["make", "install"],
        ["kubectl", "apply", "-f", "deploy/samples/readme-multi-worker.yaml"],
    ],
    "production-checklist.md": [["make", "install"], ["make", "deploy"]],
}


def test_docs_commands_run_against_a_plane() -> None:
    cp = start_plane("ojsctrl-e2e-docs")
    try:
        bin_dir = binaries.bin_dir()
        env = {
            **os.environ,
            "KUBECONFIG": str(cp.kubeconfig),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        ran = 0
        for rel in DOC_ORDER:
            path = ROOT / rel
            blocks = [b for marker, b in doc_blocks(path) if marker == "e2e"]
            if not blocks:
                continue
            for step in DOC_SETUP.get(path.name, []):
                subprocess.run(step, cwd=ROOT, env=env, check=True, capture_output=True, timeout=240)
                inert_webhooks(cp)
            for block in blocks:
                proc = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", block],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                inert_webhooks(cp)
                assert proc.returncode == 0, (
                    f"{rel}:\n{block}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
                )
                ran += 1
        assert ran >= 5
    finally:
        stop_plane(cp)
