"""`make run` as a newcomer runs it: admission on, loopback only, and nothing left behind after SIGTERM.

The plane is the suite's shared one, reached through KUBECONFIG (the path a developer with a cluster
takes); `--enable-webhooks` asks for the local webhooks that the no-kubeconfig path turns on by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ojsctrl.runtime.certs import VALIDATING_WEBHOOK_CONFIGURATIONS as WEBHOOK_CONFIGS
from ojsctrl.runtime.client import ApiError
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import create, driver, namespace, ojs_worker, wait_until

ROOT = Path(__file__).resolve().parents[3]
DEV_CONFIG = "ojs-operator-dev-webhooks"


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def test_make_run_admission_and_sigterm_leave_nothing_behind(crds: ControlPlane, tmp_path: Path) -> None:
    client = driver(crds)
    ns = namespace(crds, "make-run")
    health, metrics, webhook = free_port(), free_port(), free_port()
    args = (
        f"--health-probe-bind-address 127.0.0.1:{health} --metrics-bind-address 127.0.0.1:{metrics} "
        f"--enable-webhooks --webhook-port {webhook} --watch-namespace {ns}"
    )
    env = {**os.environ, "KUBECONFIG": str(crds.kubeconfig), "HOME": str(tmp_path)}
    log = (tmp_path / "make-run.log").open("wb")
    proc = subprocess.Popen(
        ["make", "-s", "run", f"ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    seen: set[int] = set()
    try:

        def ready() -> bool:
            seen.update(descendants(proc.pid))
            assert proc.poll() is None, (tmp_path / "make-run.log").read_text()
            return _get(health, "/readyz") == 200

        wait_until("make run ready", ready, 120, 0.5)

        def webhook_installed() -> bool:
            seen.update(descendants(proc.pid))
            try:
                client.get(WEBHOOK_CONFIGS, DEV_CONFIG)
            except ApiError:
                return False
            return True

        wait_until("dev webhook configuration installed", webhook_installed, 60, 0.5)
        bad = ojs_worker(
            ns,
            "bad-env",
            {
                "clusterRef": "c",
                "image": "example.invalid/w:1",
                "jobTypes": ["t.run"],
                "env": [{"name": "A=B", "value": "x"}],
            },
        )

        def refused_by_webhook() -> bool:
            try:
                create(client, bad, ns)
            except ApiError as e:
                assert "admission webhook" in str(e), str(e)
                return "env" in str(e)
            pytest.fail("a worker with env name 'A=B' was admitted")

        # The API server may need a moment to use a configuration it just stored.
        wait_until("the webhook refuses a bad env name", refused_by_webhook, 30, 0.5)
        seen.update(descendants(proc.pid))
        manager = [p for p in seen if alive(p) and b"ojsctrl" in _cmdline(p)]
        assert manager, f"no manager process among {sorted(seen)}"
        assert _get(metrics, "/metrics") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for p in descendants(proc.pid):
                os.kill(p, signal.SIGKILL)
            proc.kill()
            pytest.fail("make run did not exit within 60 s of SIGTERM")
        finally:
            log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in seen):
        time.sleep(0.2)
    left = sorted(p for p in seen if alive(p))
    assert not left, f"processes left after SIGTERM to make run: {left}"
    with pytest.raises(ApiError) as gone:
        client.get(WEBHOOK_CONFIGS, DEV_CONFIG)
    assert gone.value.status == 404
