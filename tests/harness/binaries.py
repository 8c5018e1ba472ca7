"""Where the control plane binaries live, and building them when they are missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "hack" / "versions.env"
BUILD_SCRIPT = REPO / "hack" / "build-controlplane.sh"
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")


def versions() -> dict[str, str]:
    """The pinned versions from hack/versions.env (the one place they are set)."""
    out: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def bin_dir() -> Path:
    """The folder holding the binaries: $OJSCTRL_CONTROLPLANE_BIN, else the versioned cache folder."""
    override = os.environ.get("OJSCTRL_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(out)


def servicemonitor_crd() -> Path:
    """The real ServiceMonitor CRD from the pinned prometheus-operator module."""
    return bin_dir() / "crds" / "monitoring.coreos.com_servicemonitors.yaml"


def stages_dir() -> Path:
    """The kwok stage definitions copied out of the kwok module at build time."""
    return bin_dir() / "kwok-stages"


def missing() -> list[str]:
    """Names of required binaries that are not there yet."""
    d = bin_dir()
    out = [b for b in REQUIRED if not os.access(d / b, os.X_OK)]
    if not servicemonitor_crd().exists():
        out.append("crds/monitoring.coreos.com_servicemonitors.yaml")
    return out


def ensure_built() -> Path:
    """Build the binaries if any is missing (prints the build's progress); returns their folder."""
    if missing():
        if os.environ.get("OJSCTRL_CONTROLPLANE_BIN"):
            raise RuntimeError(f"$OJSCTRL_CONTROLPLANE_BIN={bin_dir()} lacks {', '.join(missing())}")
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return bin_dir()
