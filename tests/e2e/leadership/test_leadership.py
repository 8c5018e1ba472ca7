"""Never two leaders: a leader whose lease renewals hang stops writing before a standby starts.

Two managers run the mirror app. The leader talks to the API server through a loopback TLS proxy that
can stall only Lease requests (its other requests keep flowing, so a leader that still believed it led
would keep writing). The standby takes over once the lease expires; the API server's audit log must
show no write by the old leader after the standby's first write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import select
import signal
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from ojsctrl.runtime.client import CONFIGMAPS, NotFoundError
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import configmap, driver, holder, namespace, size, wait_until
from tests.harness.operator import OperatorProcess, leader_election_args

APP = "tests.e2e.apps.mirror"
SOURCE = {"ojsctrl-test/source": "true"}
WRITES = ("create", "update", "patch", "delete")


class LeaseStallingProxy:
    """TLS in (the plane's serving certificate), TLS out (the admin client certificate). While `stall`
    is set, a Lease request is held unanswered (and its connection with it); other requests flow."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.port = free_port()
        self.stall = threading.Event()
        self.stalled = 0
        self._closed = threading.Event()
        self._server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_ctx.load_cert_chain(str(plane.serving_crt), str(plane.serving_key))
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="lease-proxy").start()

    def kubeconfig(self, path: Path) -> Path:
        cfg = yaml.safe_load(Path(self.plane.kubeconfig).read_text())
        for cluster in cfg["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            down = self._server_ctx.wrap_socket(raw, server_side=True)
            up_raw = socket.create_connection(("127.0.0.1", self.plane.apiserver_port), timeout=10)
            up = self.plane.ssl_context.wrap_socket(up_raw, server_hostname="127.0.0.1")
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self._socks += [down, up]
        try:
            while not self._closed.is_set():
                ready = [s for s in (down, up) if s.pending()]
                if not ready:
                    ready, _, _ = select.select([down, up], [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is down:
                        # Per request, not per connection: a shared client's pooled connection that once
                        # carried a Lease request carries other requests later, and those must flow.
                        if self.stall.is_set() and b"/leases" in data:
                            self.stalled += 1
                            self._closed.wait()  # hold the request: no answer, no close
                            return
                        up.sendall(data)
                    else:
                        down.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (down, up):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


def _when(ts: str) -> float:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def _configmap_writes(plane: ControlPlane, ns: str, identity: str) -> list[float]:
    """Arrival times of the manager's ConfigMap writes in ns, from the API server's audit log."""
    out = []
    for e in plane.audit_events():
        if (
            e.get("userAgent", "").split(" ")[0] == f"ojsctrl-test/{identity}"
            and e.get("verb") in WRITES
            and f"/namespaces/{ns}/configmaps" in e.get("requestURI", "")
            and e.get("requestReceivedTimestamp")
        ):
            out.append(_when(e["requestReceivedTimestamp"]))
    return sorted(out)


def test_a_leader_whose_renewals_hang_stops_writing_before_the_standby_starts(
    plane: ControlPlane, procs: list[OperatorProcess]
) -> None:
    ns = namespace(plane, "lead")
    client = driver(plane)
    lease = f"mirror-{uuid.uuid4().hex[:6]}"
    lease_duration, renew_deadline, retry = 6.0, 4.0, 1.0
    common = (
        *leader_election_args(lease, ns),
        "--lease-duration",
        f"{lease_duration:g}s",
        "--renew-deadline",
        f"{renew_deadline:g}s",
        "--retry-period",
        f"{retry:g}s",
        "--log-level",
        "debug",
    )
    proxy = LeaseStallingProxy(plane)
    try:
        kubeconfig = proxy.kubeconfig(plane.workdir / f"proxy-{lease}.kubeconfig")
        a = OperatorProcess(plane, APP, "--identity", "a", *common, "--kubeconfig", str(kubeconfig), name="a")
        procs.append(a)
        wait_until("a leads", lambda: holder(client, ns, lease) == "a", 60)
        b = OperatorProcess(plane, APP, "--identity", "b", *common, name="b")
        procs.append(b)
        wait_until("b ready (warm standby)", b.ready, 60)

        sources = size(4, 16)
        for i in range(sources):
            client.create(CONFIGMAPS, configmap(ns, f"src-{i}", SOURCE, n="0"))
        wait_until(
            "a mirrors every source",
            lambda: all(_writer(client, ns, f"src-{i}-mirror") == "a" for i in range(sources)),
            60,
        )

        # Keep the leader busy: every change of a source is a write for whoever leads.
        stop_churn = threading.Event()

        def churn() -> None:
            n = 0
            while not stop_churn.is_set():
                n += 1
                with contextlib.suppress(Exception):
                    client.patch(CONFIGMAPS, f"src-{n % sources}", {"data": {"n": str(n)}}, ns)
                stop_churn.wait(0.05)

        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        try:
            time.sleep(1.0)
            proxy.stall.set()
            stalled_at = time.monotonic()
            wait_until("b leads", lambda: holder(client, ns, lease) == "b", 60, 0.05)
            takeover = time.monotonic() - stalled_at
            # The takeover bound of design.md §leader-election, counted from the last renewal, which came
            # before the stall.
            assert takeover <= lease_duration + 2 * retry + 2 + 1, f"takeover took {takeover:.1f}s"
            # Give a stale leader every chance to show itself.
            time.sleep(3.0)
        finally:
            stop_churn.set()
            churner.join(5)
        assert proxy.stalled > 0, "no Lease request was stalled: the test proved nothing"
        time.sleep(1.0)  # the audit log is written as requests complete
        by_a = _configmap_writes(plane, ns, "a")
        by_b = _configmap_writes(plane, ns, "b")
        assert by_a, "the old leader never wrote: the test proved nothing"
        assert by_b, "the new leader never wrote"
        late = [t for t in by_a if t >= by_b[0]]
        assert not late, (
            f"{len(late)} write(s) by the old leader after the new leader's first write "
            f"(last {max(late) - by_b[0]:.2f}s after it)"
        )
        assert a.wait(30) == 1, "the old leader did not exit after losing the lease"
        assert "leadership lost" in a.logs()
    finally:
        proxy.close()
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0


def _writer(client: Any, ns: str, name: str) -> str:
    try:
        return str(client.get(CONFIGMAPS, name, ns).get("data", {}).get("writer", ""))
    except NotFoundError:
        return ""
