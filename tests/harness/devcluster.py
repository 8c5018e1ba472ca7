"""`make dev-cluster`: the local control plane in the foreground for a person.

Writes .dev/kubeconfig, puts the plane's binaries in .dev/bin, prints one `ready` line, and stops
everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from . import binaries
from .controlplane import ControlPlane


def prepare_dev_dir(dev: Path) -> Path:
    """Fresh .dev/plane, and .dev/bin linking every plane binary."""
    plane_dir = dev / "plane"
    shutil.rmtree(plane_dir, ignore_errors=True)
    plane_dir.mkdir(parents=True)
    bindir = dev / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    src = binaries.bin_dir()
    for name in (*binaries.REQUIRED, "helm"):
        target = src / name
        link = bindir / name
        if target.exists():
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    return plane_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev-dir", default=str(binaries.REPO / ".dev"))
    parser.add_argument("--watch-cache", default="true", choices=["true", "false"])
    args = parser.parse_args(argv)

    binaries.ensure_built()
    dev = Path(args.dev_dir).resolve()
    plane_dir = prepare_dev_dir(dev)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    plane = ControlPlane(
        plane_dir,
        watch_cache=args.watch_cache == "true",
        log=lambda m: print(f"dev-cluster: {m}", file=sys.stderr, flush=True),
    )
    try:
        plane.start()
        kubeconfig = dev / "kubeconfig"
        shutil.copyfile(plane.kubeconfig, kubeconfig)
        os.chmod(kubeconfig, 0o600)
        rel = os.path.relpath(dev, Path.cwd())
        print(
            f"ready: export KUBECONFIG={kubeconfig}; {rel}/bin/kubectl get nodes "
            f"(logs in {plane_dir}/logs; Ctrl-C stops the cluster)",
            flush=True,
        )
        while not stop.wait(1.0):
            dead = [n for n, p in plane.processes.items() if not p.alive()]
            if dead:
                print(f"dev-cluster: {', '.join(dead)} exited:\n{plane.log_tails()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("dev-cluster: stopping", file=sys.stderr, flush=True)
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
