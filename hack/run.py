"""`make run [ARGS='manager flags']`: the operator in the foreground, out-of-cluster.

With a kubeconfig ($KUBECONFIG or ~/.kube/config) it installs or updates the CRDs there and runs the
manager against that cluster. Without one it first starts the local control plane (.dev/), applies
the samples and prints how to watch them.

- Manager flags come from ARGS (``make run ARGS='--log-level debug --max-concurrent-reconciles 8'``);
  ``ojsctrl --help`` lists them with their defaults.
- /metrics and /healthz bind 127.0.0.1 (:8080 and :8081) unless ARGS names other addresses.
- Admission webhooks: on by default against the local control plane, whose API server runs on this
  machine and so can call back to 127.0.0.1; against another cluster only with ``--enable-webhooks``
  (its API server must be able to reach this machine). A URL-mode ValidatingWebhookConfiguration named
  ``ojs-operator-dev-webhooks`` is installed once the manager is ready, with a CA made for this run, and
  removed again on the way out, so a stopped operator never leaves admission failing. It has its own
  name, so it never collides with an installed operator's configuration.
- Ctrl-C, SIGTERM and SIGHUP stop everything it started (the manager and the local plane); if this
  process is killed outright, its children get SIGTERM from the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import binaries  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.devcluster import prepare_dev_dir  # noqa: E402
from tests.harness.pki import CertificateAuthority  # noqa: E402

DEV_WEBHOOK_CONFIG = "ojs-operator-dev-webhooks"
DEFAULT_METRICS = "127.0.0.1:8080"
DEFAULT_HEALTH = "127.0.0.1:8081"
_PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """SIGTERM or SIGHUP arrived: unwind and stop what was started."""


def say(msg: str) -> None:
    print(f"run: {msg}", file=sys.stderr, flush=True)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent goes away (Linux only; harmless elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def kubectl_bin() -> str:
    built = binaries.bin_dir() / "kubectl"
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    if found:
        return found
    binaries.ensure_built()
    return str(built)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [kubectl_bin(), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:2])}: {proc.stderr.strip()}")
    return proc.stdout


def apply_dir(kubeconfig: Path, directory: Path) -> None:
    files = sorted(p for p in directory.glob("*.yaml"))
    if not files:
        return
    args = ["apply", "--server-side", "--field-manager=ojsctrl-install", "--force-conflicts"]
    for f in files:
        args += ["-f", str(f)]
    kubectl(kubeconfig, *args)


def sample_namespaces(directory: Path) -> list[str]:
    """The namespaces the manifests in directory name in their metadata (sorted, without duplicates)."""
    import yaml

    found = set()
    for path in directory.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and (doc.get("metadata") or {}).get("namespace"):
                found.add(str(doc["metadata"]["namespace"]))
    return sorted(found)


def flag_value(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in args (the last one wins, as argparse does)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def with_loopback_defaults(args: Sequence[str]) -> list[str]:
    """ARGS plus 127.0.0.1 bind addresses for /metrics and /healthz where ARGS names none: a laptop's
    operator should not serve its metrics to the network it sits on."""
    out = list(args)
    if flag_value(args, "--metrics-bind-address") is None:
        out += ["--metrics-bind-address", DEFAULT_METRICS]
    if flag_value(args, "--health-probe-bind-address") is None:
        out += ["--health-probe-bind-address", DEFAULT_HEALTH]
    return out


def strip_flag(args: Sequence[str], name: str) -> list[str]:
    """args without ``--name``, ``--name=V`` and ``--name V`` (V not itself a flag)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith(name + "="):
            continue
        if arg == name:
            skip = i + 1 < len(args) and not args[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def webhooks_wanted(args: Sequence[str], local_plane: bool) -> bool:
    """``--enable-webhooks[=BOOL]`` in ARGS decides; without it, on for the local plane only."""
    raw = flag_value(args, "--enable-webhooks")
    if raw is not None:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if "--enable-webhooks" in args:
        return True
    return local_plane


def health_port(args: Sequence[str]) -> int | None:
    address = flag_value(args, "--health-probe-bind-address") or DEFAULT_HEALTH
    port = address.rsplit(":", 1)[-1]
    return int(port) if port.isdigit() and port != "0" else None


def wait_ready(proc: subprocess.Popen[bytes], port: int | None, timeout: float = 120.0) -> bool:
    """True once /readyz answers 200; False when the manager exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if port is None:
            return True
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r,
        ):
            if r.status == 200:
                return True
        time.sleep(0.5)
    return proc.poll() is None


@contextlib.contextmanager
def dev_webhooks(kubeconfig: Path, cert_dir: Path, port: int) -> Iterator[list[str]]:
    """Serving certificate for 127.0.0.1 and the flags that serve it; the configuration is applied by
    :func:`install_webhook_config` and always removed on the way out."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(common_name="ojsctrl-make-run-ca", days=7)
    pair = ca.issue("127.0.0.1", dns_names=("localhost",), ips=("127.0.0.1",), server=True, days=7)
    tmp = Path(tempfile.mkdtemp(dir=cert_dir))
    pair.write(tmp, "tls")
    for name in ("tls.crt", "tls.key"):
        os.replace(tmp / name, cert_dir / name)
    tmp.rmdir()
    (cert_dir / "ca.crt").write_bytes(ca.pair.cert_pem)
    flags = [
        "--enable-webhooks",
        "--webhook-cert-mode",
        "external",
        "--webhook-cert-dir",
        str(cert_dir),
        "--webhook-host",
        "127.0.0.1",
        "--webhook-port",
        str(port),
        "--webhook-config-name",
        "",
    ]
    try:
        yield flags
    finally:
        with contextlib.suppress(Exception):
            kubectl(
                kubeconfig,
                "delete",
                "validatingwebhookconfiguration",
                DEV_WEBHOOK_CONFIG,
                "--ignore-not-found",
                "--wait=false",
            )
            say(f"removed ValidatingWebhookConfiguration {DEV_WEBHOOK_CONFIG}")


def install_webhook_config(kubeconfig: Path, cert_dir: Path, port: int) -> None:
    from ojsctrl.webhooks.manifests import dev_webhook_configuration

    config = dev_webhook_configuration(port=port, host="127.0.0.1", name=DEV_WEBHOOK_CONFIG)
    bundle = base64.b64encode((cert_dir / "ca.crt").read_bytes()).decode()
    for webhook in config["webhooks"]:
        webhook["clientConfig"]["caBundle"] = bundle
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--field-manager=ojsctrl-make-run",
        "--force-conflicts",
        "-f",
        "-",
        stdin=json.dumps(config),
    )
    say(
        f"admission webhooks served on https://127.0.0.1:{port} "
        f"(ValidatingWebhookConfiguration {DEV_WEBHOOK_CONFIG}, removed on exit)"
    )


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 35.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        say("the manager did not stop in time: killing it")
        proc.kill()
        return proc.wait(timeout=10)


def wait_then_stop(proc: subprocess.Popen[bytes], grace: float = 35.0) -> int:
    """Wait for a manager that already has a stop signal; stop it ourselves if it outlives grace."""
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return stop_process(proc)


def run_manager(kubeconfig: Path, args: Sequence[str], *, local_plane: bool) -> int:
    """Run the manager in the foreground; returns its exit code."""
    apply_dir(kubeconfig, REPO / "manifests" / "crds")
    manager_args = with_loopback_defaults(args)
    env = dict(os.environ)
    env.setdefault("OJSCTRL_LOG_FORMAT", "console")
    if not env.get("OJSCTRL_OJS_URL_TEMPLATE"):
        env.pop("OJSCTRL_OJS_URL_TEMPLATE", None)

    with contextlib.ExitStack() as stack:
        webhook_port = None
        if webhooks_wanted(args, local_plane):
            webhook_port = int(flag_value(args, "--webhook-port") or 9443)
            cert_dir = REPO / ".dev" / "webhook-certs"
            manager_args = strip_flag(manager_args, "--enable-webhooks")
            manager_args += stack.enter_context(dev_webhooks(kubeconfig, cert_dir, webhook_port))
        cmd = [sys.executable, "-m", "ojsctrl", "--kubeconfig", str(kubeconfig), *manager_args]
        proc = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent)  # noqa: PLW1509
        try:
            if webhook_port is not None:
                if not wait_ready(proc, health_port(manager_args)):
                    return proc.wait()
                install_webhook_config(kubeconfig, REPO / ".dev" / "webhook-certs", webhook_port)
            return proc.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the whole group: the manager has it too and shuts down
            # gracefully. Another signal now would be its "second signal; exiting now", so only wait; a
            # manager still running after the grace period did not get the first one: SIGTERM then.
            return wait_then_stop(proc)
        except Stop as e:
            say(f"{e}: stopping the manager")
            return stop_process(proc)
        finally:
            if proc.poll() is None:
                stop_process(proc)
    return 0


def main(argv: Sequence[str]) -> int:
    die_with_parent()
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    env_kc = os.environ.get("KUBECONFIG")
    home_kc = Path.home() / ".kube" / "config"
    try:
        if env_kc:
            return run_manager(Path(env_kc.split(os.pathsep)[0]), argv, local_plane=False)
        if home_kc.exists():
            return run_manager(home_kc, argv, local_plane=False)
    except (KeyboardInterrupt, Stop):
        return 0

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
            # The samples' own namespaces (readme-production-cluster.yaml is in ojs-apps) must exist first.
            for ns in ("ojs-system", *sample_namespaces(samples)):
                plane.kubectl("create", "namespace", ns, check=False)
            apply_dir(kubeconfig, samples)
        # kubectl watches one kind at a time (`-w` on the category answers "you may only specify a single
        # resource type"): list both, then follow each kind.
        say(
            f"ready: in another shell, export KUBECONFIG={kubeconfig}; .dev/bin/kubectl get openjobspec -A "
            "lists both kinds; follow one with .dev/bin/kubectl get ojs -A -w (or ojsw)"
        )
        return run_manager(kubeconfig, argv, local_plane=True)
    except (KeyboardInterrupt, Stop):
        return 0
    finally:
        # A second signal while the plane stops must not cut the stop short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        say("stopping the local control plane")
        plane.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
