"""The README's first command, `make run`, from a clean clone, as a newcomer runs it.

tests/e2e/test_make_run.py covers `make run` in this checkout against the shared plane (admission on
with --enable-webhooks, SIGTERM leaves nothing behind). Here the checkout is a fresh `git clone` (so
the virtualenv is made by `make run` itself, and nothing ignored by git helps), and:

- without a kubeconfig, `make run` starts the local control plane, applies deploy/samples, every sample
  OJSCluster and OJSWorker reaches phase Running, and Ctrl-C (SIGINT to the make's process group, as a
  terminal sends it) stops every process it started and frees every port they listened on;
- with KUBECONFIG naming a running plane, it installs the CRDs there, runs the manager against it (a
  cluster created there gets Running), starts no plane of its own, and Ctrl-C again leaves nothing.

The pinned control-plane binaries are reused (OJSCTRL_CONTROLPLANE_BIN), never built again; HOME is a
temporary folder so no ~/.kube/config of the machine's user is found.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import sample, wait_until
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane, free_port

ROOT = Path(__file__).resolve().parents[3]
# The first `make run` of a clone makes its virtualenv (minutes on a busy machine).
pytestmark = pytest.mark.timeout(1800)
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
MINIMAL = ROOT / "deploy" / "samples" / "readme-minimal-cluster.yaml"
KINDS = "ojsclusters.ojs.openjobspec.dev,ojsworkers.ojs.openjobspec.dev"


# ------------------------------------------------------------------------------------ processes, ports
def _ppids() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _ppids(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _listening() -> dict[int, int]:
    """Socket inode -> port of every listening TCP socket of this network namespace."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                out[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return out


def listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports these processes listen on."""
    inodes = _listening()
    ports = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    ports.add(inodes[inode])
    return ports


def ports_still_listening(ports: set[int]) -> set[int]:
    return ports & set(_listening().values())


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean clone of this checkout's committed state."""
    dest = tmp_path_factory.mktemp("newcomer") / "ojsctrl"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=300)
    assert not (dest / ".venv").exists() and not (dest / ".dev").exists()
    return dest


def newcomer_env(home: Path, **extra: str) -> dict[str, str]:
    drop = {"KUBECONFIG", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "OJSCTRL_OJS_URL_TEMPLATE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    home.mkdir(parents=True, exist_ok=True)
    real_home = Path(os.environ.get("HOME", str(Path.home())))
    env.update(
        HOME=str(home),
        # The binaries built for the suite, and pip's download cache: a clean clone, not a clean machine.
        OJSCTRL_CONTROLPLANE_BIN=str(binaries.bin_dir()),
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")),
        **extra,
    )
    return env


class MakeRun:
    """`make run ARGS=...` in its own process group, as a shell runs a foreground job."""

    def __init__(self, clone: Path, env: dict[str, str], log: Path) -> None:
        self.health, self.metrics, self.webhook = free_port(), free_port(), free_port()
        # Free ports instead of :8080/:8081/:9443, which other processes on a shared machine may hold;
        # ARGS is the README's way of passing manager flags.
        args = (
            f"--health-probe-bind-address 127.0.0.1:{self.health} "
            f"--metrics-bind-address 127.0.0.1:{self.metrics} --webhook-port {self.webhook}"
        )
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            ["make", "run", f"ARGS={args}"],
            cwd=clone,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.seen: set[int] = set()
        self.ports: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def observe(self) -> None:
        tree = descendants(self.proc.pid)
        self.seen |= tree
        self.ports |= listening_ports(tree)

    def running(self) -> bool:
        self.observe()
        assert self.proc.poll() is None, f"make run exited early:\n{self.log()[-4000:]}"
        return True

    def ready(self) -> bool:
        return self.running() and _get(self.health, "/readyz") == 200

    def ctrl_c(self, timeout: float = 120.0) -> int:
        """SIGINT to the whole process group, then wait for make."""
        self.observe()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"make run did not exit within {timeout:.0f}s of Ctrl-C:\n{self.log()[-4000:]}")
        finally:
            self._log.close()

    def stop_with_ctrl_c(self) -> None:
        """Ctrl-C ends make as a shell sees it (make re-raises SIGINT on itself once its recipe is done),
        the manager drains gracefully on the one SIGINT, and nothing is left behind."""
        code = self.ctrl_c()
        log = self.log()
        assert code in (0, -signal.SIGINT), f"make exited {code}:\n{log[-3000:]}"
        assert "] Error" not in log, f"the recipe failed:\n{log[-3000:]}"
        assert "shutting down: draining controllers" in log, log[-3000:]
        assert "second signal" not in log, f"the manager got a second signal:\n{log[-3000:]}"
        self.assert_nothing_left()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in self.seen):
            time.sleep(0.2)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in self.seen if alive(p)}
        assert not left, f"processes left after Ctrl-C: {left}"
        assert not ports_still_listening(self.ports), f"ports still listening: {self.ports}"


def _objects(kubectl: list[str]) -> list[dict[str, object]]:
    out = subprocess.run(
        [*kubectl, "get", KINDS, "-A", "-o", "json"], capture_output=True, text=True, check=True, timeout=60
    )
    items: list[dict[str, object]] = json.loads(out.stdout)["items"]
    return items


def _phases(kubectl: list[str]) -> dict[str, str | None]:
    return {
        f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}": (o.get("status") or {}).get(
            "phase"
        )  # type: ignore[index,union-attr]
        for o in _objects(kubectl)
    }


# ---------------------------------------------------------------------------------------------- tests
def test_make_run_without_kubeconfig_brings_up_the_local_plane_and_ctrl_c_leaves_nothing(
    clone: Path, tmp_path: Path
) -> None:
    run = MakeRun(clone, newcomer_env(tmp_path / "home"), tmp_path / "make-run.log")
    try:
        # The first `make run` of a clone also makes the virtualenv.
        wait_until("make run ready", run.ready, 900, 1.0)
        assert "no kubeconfig found: starting the local control plane" in run.log()
        kubeconfig = clone / ".dev" / "kubeconfig"
        assert kubeconfig.exists()
        kubectl = [str(clone / ".dev" / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig)]

        expected = {
            f"{d['kind']} {d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}"
            for path in sorted((ROOT / "deploy" / "samples").glob("*.yaml"))
            for d in sample(path.name)
            if d["kind"] in ("OJSCluster", "OJSWorker")
        }
        assert len(expected) >= 8

        def all_running() -> bool:
            run.running()
            phases = _phases(kubectl)
            return set(phases) == expected and all(p == "Running" for p in phases.values())

        try:
            wait_until("every sample Running", all_running, 300, 2.0)
        except AssertionError:
            pytest.fail(f"samples not Running: {_phases(kubectl)}\n{run.log()[-3000:]}")
        # The README's way of looking at them works too.
        out = subprocess.run(
            [*kubectl, "get", "openjobspec", "-A"], capture_output=True, text=True, check=True, timeout=60
        )
        assert "ojs-minimal" in out.stdout and "email-worker" in out.stdout
        assert _get(run.metrics, "/metrics") == 200
        run.observe()
        # The manager, etcd and the API server at least, each listening.
        assert len(run.ports) >= 4, run.ports
        assert run.health in run.ports and run.metrics in run.ports
    except BaseException:
        run.kill()
        raise
    run.stop_with_ctrl_c()


@pytest.fixture(scope="module")
def own_plane() -> Iterator[ControlPlane]:
    """A running plane without the CRDs, as a developer's cluster would be."""
    binaries.ensure_built()
    cp = ControlPlane(name="ojsctrl-e2e-newcomer")
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def test_make_run_with_kubeconfig_uses_that_plane_and_installs_the_crds(
    clone: Path, own_plane: ControlPlane, tmp_path: Path
) -> None:
    kubectl = [str(binaries.bin_dir() / "kubectl"), "--kubeconfig", str(own_plane.kubeconfig)]
    crds = subprocess.run([*kubectl, "get", "crd", "-o", "name"], capture_output=True, text=True, check=True)
    assert "ojs.openjobspec.dev" not in crds.stdout
    env = newcomer_env(tmp_path / "home", KUBECONFIG=str(own_plane.kubeconfig))
    run = MakeRun(clone, env, tmp_path / "make-run.log")
    try:
        wait_until("make run ready", run.ready, 900, 1.0)
        assert "no kubeconfig found" not in run.log()
        for crd in ("ojsclusters.ojs.openjobspec.dev", "ojsworkers.ojs.openjobspec.dev"):
            out = subprocess.run(
                [*kubectl, "get", "crd", crd, "-o", ESTABLISHED],
                capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
            assert out.stdout == "True", crd
        # The manager works on this plane: the README's minimal cluster gets Running.
        subprocess.run([*kubectl, "create", "namespace", "newcomer"], check=True, capture_output=True)
        subprocess.run(
            [*kubectl, "apply", "-n", "newcomer", "-f", str(MINIMAL)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(
            "ojs-minimal Running on the given plane",
            lambda: run.running() and _phases(kubectl).get("OJSCluster newcomer/ojs-minimal") == "Running",
            120,
            1.0,
        )
        # Webhooks stay off against a cluster that is not the local plane (its API server may not reach
        # this machine), and no local plane was started.
        assert run.webhook not in run.ports
        assert not any(b"etcd" in Path(f"/proc/{p}/cmdline").read_bytes() for p in run.seen if alive(p))
    except BaseException:
        run.kill()
        raise
    run.stop_with_ctrl_c()
    # The plane it used is untouched by the stop: still serving, CRDs still there.
    out = subprocess.run([*kubectl, "get", "crd", "-o", "name"], capture_output=True, text=True, check=True)
    assert "ojsclusters.ojs.openjobspec.dev" in out.stdout
