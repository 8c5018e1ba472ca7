"""`make run`: the operator in the foreground, out-of-cluster.

With a kubeconfig ($KUBECONFIG or ~/.kube/config) it installs or updates the CRDs there and runs the
manager against that cluster. Without one it first starts the local control plane (.dev/), applies
the samples and prints how to watch them. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import binaries  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.devcluster import prepare_dev_dir  # noqa: E402


def say(msg: str) -> None:
    print(f"run: {msg}", file=sys.stderr, flush=True)


def kubectl_bin() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    binaries.ensure_built()
    return str(binaries.bin_dir() / "kubectl")


def apply_dir(kubeconfig: Path, directory: Path) -> None:
    files = sorted(p for p in directory.glob("*.yaml"))
    if not files:
        return
    args = [
        kubectl_bin(),
        "--kubeconfig",
        str(kubeconfig),
        "apply",
        "--server-side",
        "--field-manager=ojsctrl-install",
        "--force-conflicts",
    ]
    for f in files:
        args += ["-f", str(f)]
    subprocess.run(args, check=True)


def run_manager(kubeconfig: Path) -> int:
    """Run the manager in the foreground; returns its exit code."""
    apply_dir(kubeconfig, REPO / "manifests" / "crds")
    try:
        import ojsctrl.cli  # noqa: F401
    except ImportError:
        say("the operator's manager is not built yet; the cluster is up for you to use. Ctrl-C stops it.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        return 0
    cmd = [sys.executable, "-m", "ojsctrl", "--kubeconfig", str(kubeconfig), *sys.argv[1:]]
    env = dict(os.environ)
    env.setdefault("OJSCTRL_LOG_FORMAT", "console")
    env.setdefault("OJSCTRL_OJS_URL_TEMPLATE", env.get("OJSCTRL_OJS_URL_TEMPLATE", ""))
    if not env["OJSCTRL_OJS_URL_TEMPLATE"]:
        del env["OJSCTRL_OJS_URL_TEMPLATE"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return 1


def main() -> int:
    env_kc = os.environ.get("KUBECONFIG")
    home_kc = Path.home() / ".kube" / "config"
    if env_kc:
        return run_manager(Path(env_kc.split(os.pathsep)[0]))
    if home_kc.exists():
        return run_manager(home_kc)

    say(
        "no kubeconfig found: starting the local control plane (first run builds it from the Go module proxy)"
    )
    binaries.ensure_built()
    dev = REPO / ".dev"
    plane = ControlPlane(prepare_dev_dir(dev), log=say)
    try:
        plane.start()
        kubeconfig = dev / "kubeconfig"
        shutil.copyfile(plane.kubeconfig, kubeconfig)
        apply_dir(kubeconfig, REPO / "manifests" / "crds")
        samples = REPO / "deploy" / "samples"
        if samples.is_dir() and any(samples.glob("*.yaml")):
            plane.kubectl("create", "namespace", "ojs-system", check=False)
            apply_dir(kubeconfig, samples)
        say(f"ready: in another shell, export KUBECONFIG={kubeconfig}; .dev/bin/kubectl get ojs -A -w")
        return run_manager(kubeconfig)
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping the local control plane")
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
