"""The OLM bundle (deploy/olm) passes every validator of operator-framework/api, the library behind
`operator-sdk bundle validate` (operator-sdk itself is not on the Go module proxy).

hack/olm-validate wraps the library's pkg/validation (all validators, OperatorHub's with the pinned
Kubernetes version); `make deps` (hack/install-deps.sh -> hack/build-olm-validate.sh) builds it into
~/.cache/ojsctrl/tools. Under CI=true a missing binary fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import missing_tool
from tests.harness import binaries

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "deploy" / "olm"


@pytest.fixture(scope="module")
def olm_validate() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-olm-validate.sh"), "--print"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    path = Path(out.stdout.strip())
    if not path.exists():
        missing_tool(f"{path} is not built: run `make deps` (hack/build-olm-validate.sh)")
    return path


def _k8s_minor() -> str:
    major, minor = binaries.versions()["KUBERNETES_VERSION"].lstrip("v").split(".")[:2]
    return f"{major}.{minor}"


def _run(binary: Path, bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), str(bundle), _k8s_minor()], capture_output=True, text=True, check=False, timeout=120
    )


def test_every_validator_passes_the_bundle(olm_validate: Path) -> None:
    out = _run(olm_validate, BUNDLE)
    assert out.returncode == 0, out.stdout + out.stderr
    # All eight validators ran, and the OperatorGroup of the install example was among the objects.
    assert re.search(r"olm-validate: 8 validators, \d+ results, 0 problems", out.stderr), out.stderr


def test_the_validators_find_a_broken_bundle(olm_validate: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "olm"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "manifests" / "ojs.openjobspec.dev_ojsworkers.yaml").unlink()
    annotations = bundle / "metadata" / "annotations.yaml"
    annotations.write_text(annotations.read_text().replace("channels.v1: fast", "channels.v1: beta"))
    out = _run(olm_validate, bundle)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'owned CRD "ojs.openjobspec.dev/v1alpha1, Kind=OJSWorker" not found' in out.stdout
    assert 'channel(s) ["beta"] are not following the recommended naming convention' in out.stdout


def test_the_pin_agrees_with_the_go_module() -> None:
    pinned = binaries.versions()["OPERATOR_FRAMEWORK_API_VERSION"]
    go_mod = (ROOT / "hack" / "olm-validate" / "go.mod").read_text()
    assert re.search(
        rf"^\s*(require\s+)?github\.com/operator-framework/api {re.escape(pinned)}$", go_mod, re.M
    )
    assert (
        f"github.com/operator-framework/api {pinned}/go.mod"
        in (ROOT / "hack" / "olm-validate" / "go.sum").read_text()
    )


def test_the_install_docs_command_runs(olm_validate: Path) -> None:
    """docs/install.md's block, as written (its default Kubernetes version is the pinned one's minor)."""
    text = (ROOT / "docs" / "install.md").read_text()
    start = text.index("```sh\n", text.index("The bundle passes every validator")) + 6
    body = text[start : text.index("\n```", start)]
    assert "olm-validate" in body
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"checking APIs against Kubernetes version : {_k8s_minor()}" in out.stderr
    assert "0 problems" in out.stderr
