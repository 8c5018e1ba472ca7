"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, started as local processes for tests, benchmarks and `make dev-cluster`.

Every process runs in its own process group and is stopped on `stop()`, also when start-up fails
half-way. Logs stay in the plane's folder; `log_tails()` shows the end of each for a failed test.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from . import binaries
from .pki import CertificateAuthority, service_account_keys

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
NODE_NAME = "kwok-node-0"
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/general/pod-create.yaml",
    "pod/general/pod-ready.yaml",
    "pod/general/pod-complete.yaml",
    "pod/general/pod-delete.yaml",
)

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child before exec: its own process group, and SIGTERM if the harness dies."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartError(RuntimeError):
    """The plane did not come up; the message says which component and shows its log tail."""


class ManagedProcess:
    """One component process with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - owned for the process's life
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the harness starts these from one thread
            env=env,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal to the component's whole process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group (after SIGCONT, in case a test left it stopped), then SIGKILL after grace."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Children that outlived the leader of the group still get the KILL.
        self.signal(signal.SIGKILL)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            data = self.log_path.read_bytes()[-64_000:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


class AdminClient:
    """A minimal HTTPS client for the harness's own checks, independent of the operator's client."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext, user_agent: str) -> None:
        self.host, self.port, self.ctx, self.user_agent = host, port, ssl_context, user_agent

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON or text)."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        try:
            headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        return body

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        status, body = self.request("POST", path, obj)
        if status not in (200, 201):
            raise RuntimeError(f"POST {path}: {status} {body}")
        return body

    def delete(self, path: str) -> int:
        status, _ = self.request("DELETE", path)
        return status


class ControlPlane:
    """A local Kubernetes control plane. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        watch_cache: bool = True,
        name: str = "ojsctrl-local",
        node_pods: int = 10_000,
        ready_timeout: float = 120.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.watch_cache = watch_cache
        self.node_pods = node_pods
        self.ready_timeout = ready_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ojsctrl-plane-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin = binaries.bin_dir()
        self.processes: dict[str, ManagedProcess] = {}
        self._log = log or (lambda msg: None)
        self.etcd_port = self.etcd_peer_port = self.apiserver_port = 0
        self.kubeconfig = self.workdir / "kubeconfig"
        self.client: AdminClient | None = None
        self.started_at = 0.0
        self.ready_at = 0.0

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def start(self) -> None:
        """Start all five components and wait until a node is Ready; stops everything on failure."""
        self.started_at = time.monotonic()
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            self._start_kwok()
            self._create_node()
            self.ready_at = time.monotonic()
            self._log(f"control plane ready in {self.ready_at - self.started_at:.1f}s at {self.server}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component (reverse start order). Safe to call twice; keeps the logs."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        if self._own_workdir:
            # Data is throwaway; logs stay for post-mortems under the workdir's logs/.
            shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for name, proc in self.processes.items():
            state = "running" if proc.alive() else f"exited {proc.proc.returncode}"
            parts.append(f"----- {name} ({state}) {proc.log_path} -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- helpers
    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        proc = ManagedProcess(name, argv, logs / f"{name}.log")
        self.processes[name] = proc
        return proc

    def _wait(self, what: str, check: Callable[[], bool], proc: ManagedProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StartError(
                    f"{proc.name} exited with {proc.proc.returncode} while waiting for {what}:\n{proc.tail()}"
                )
            try:
                if check():
                    return
            except Exception as e:
                last_error = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
        raise StartError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error}):\n{proc.tail()}")

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        self.ca = CertificateAuthority(f"{self.name}-ca")
        self.ca_crt, self.ca_key = self.ca.pair.write(pki, "ca")
        self.apiserver_port = free_port()
        serving = self.ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.96.0.1"),
            server=True,
        )
        self.serving_crt, self.serving_key = serving.write(pki, "apiserver")
        sa = service_account_keys()
        self.sa_pub, self.sa_key = sa.write(pki, "sa")
        self.users = {
            "admin": self.ca.issue("ojsctrl-admin", organizations=("system:masters",), client=True),
            "controller-manager": self.ca.issue("system:kube-controller-manager", client=True),
            "scheduler": self.ca.issue("system:kube-scheduler", client=True),
            "kwok": self.ca.issue("kwok-controller", organizations=("system:masters",), client=True),
        }
        for user, pair in self.users.items():
            self.write_kubeconfig(self.workdir / f"{user}.kubeconfig", pair)
        self.write_kubeconfig(self.kubeconfig, self.users["admin"])
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        ctx = ssl.create_default_context(cafile=str(self.ca_crt))
        admin_crt, admin_key = self.users["admin"].write(pki, "admin")
        ctx.load_cert_chain(str(admin_crt), str(admin_key))
        self.ssl_context = ctx
        self.client = AdminClient("127.0.0.1", self.apiserver_port, ctx, "ojsctrl-harness")

    def write_kubeconfig(self, path: Path, pair: Any, context: str | None = None) -> Path:
        """A kubeconfig with the CA and the user's certificate embedded (portable, no file paths)."""
        ctx_name = context or self.name
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": ctx_name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(self.ca.pair.cert_pem).decode(),
                    },
                }
            ],
            "users": [
                {
                    "name": ctx_name,
                    "user": {
                        "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
                        "client-key-data": base64.b64encode(pair.key_pem).decode(),
                    },
                }
            ],
            "contexts": [{"name": ctx_name, "context": {"cluster": ctx_name, "user": ctx_name}}],
            "current-context": ctx_name,
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    def _start_etcd(self) -> None:
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name",
                "plane",
                "--data-dir",
                str(self.workdir / "etcd-data"),
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"plane={peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(4 * 1024**3),
            ],
        )

        def healthy() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=2)
            try:
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        self._wait("etcd /health", healthy, proc, self.ready_timeout)

    def _start_apiserver(self) -> None:
        argv = [
            str(self.bin / "kube-apiserver"),
            "--etcd-servers",
            self.etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            str(self.apiserver_port),
            "--endpoint-reconciler-type",
            "none",
            "--tls-cert-file",
            str(self.serving_crt),
            "--tls-private-key-file",
            str(self.serving_key),
            "--client-ca-file",
            str(self.ca_crt),
            # Front-proxy settings the controllers' delegated authentication expects to find.
            "--requestheader-client-ca-file",
            str(self.ca_crt),
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--requestheader-username-headers",
            "X-Remote-User",
            "--requestheader-group-headers",
            "X-Remote-Group",
            "--requestheader-extra-headers-prefix",
            "X-Remote-Extra-",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            str(self.sa_pub),
            "--service-account-signing-key-file",
            str(self.sa_key),
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--authorization-mode",
            "Node,RBAC",
            "--allow-privileged=true",
            "--audit-policy-file",
            str(self.workdir / "audit-policy.yaml"),
            "--audit-log-path",
            str(self.audit_log_path),
            "--audit-log-maxsize",
            "0",
            "--profiling=false",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--max-requests-inflight",
            "800",
            "--max-mutating-requests-inflight",
            "400",
        ]
        self._apiserver_argv = argv
        proc = self._spawn("kube-apiserver", argv)
        self._wait_apiserver(proc)

    def _wait_apiserver(self, proc: ManagedProcess) -> None:
        assert self.client is not None
        client = self.client

        def ready() -> bool:
            status, _ = client.request("GET", "/readyz", timeout=3)
            if status != 200:
                return False
            status, _ = client.request("GET", "/api/v1/namespaces/default", timeout=3)
            return status == 200

        self._wait("kube-apiserver /readyz and namespace default", ready, proc, self.ready_timeout)

    @property
    def audit_log_path(self) -> Path:
        return self.workdir / "logs" / "audit.log"

    def _start_controllers(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                "--kubeconfig",
                str(self.workdir / "controller-manager.kubeconfig"),
                "--authentication-kubeconfig",
                str(self.workdir / "controller-manager.kubeconfig"),
                "--authorization-kubeconfig",
                str(self.workdir / "controller-manager.kubeconfig"),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
                "--service-account-private-key-file",
                str(self.sa_key),
                "--root-ca-file",
                str(self.ca_crt),
                "--cluster-signing-cert-file",
                str(self.ca_crt),
                "--cluster-signing-key-file",
                str(self.ca_key),
                "--use-service-account-credentials=true",
                "--controllers",
                "*",
                "--kube-api-qps",
                "200",
                "--kube-api-burst",
                "400",
                "--concurrent-deployment-syncs",
                "10",
                "--concurrent-replicaset-syncs",
                "10",
                "--concurrent-gc-syncs",
                "40",
            ],
        )
        sched_cfg = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {
                "kubeconfig": str(self.workdir / "scheduler.kubeconfig"),
                "qps": 200,
                "burst": 400,
            },
            "leaderElection": {"leaderElect": False},
        }
        cfg_path = self.workdir / "scheduler-config.yaml"
        cfg_path.write_text(yaml.safe_dump(sched_cfg))
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                "--config",
                str(cfg_path),
                "--authentication-kubeconfig",
                str(self.workdir / "scheduler.kubeconfig"),
                "--authorization-kubeconfig",
                str(self.workdir / "scheduler.kubeconfig"),
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
            ],
        )

    def _start_kwok(self) -> None:
        docs: list[dict[str, Any]] = [
            {
                "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
                "kind": "KwokConfiguration",
                # Spelled out: kwok applies its defaults only to some ways of loading configuration.
                "options": {
                    "podPlayStageParallelism": 8,
                    "nodePlayStageParallelism": 2,
                    "nodeLeaseParallelism": 2,
                    "podsOnNodeSyncParallelism": 2,
                    "enablePodsOnNodeSyncListPager": True,
                    "enablePodsOnNodeSyncStreamWatch": False,
                    "enableDebuggingHandlers": False,
                    "enableProfilingHandler": False,
                    "enableContentionProfiling": False,
                },
            }
        ]
        for rel in KWOK_STAGES:
            docs.extend(d for d in yaml.safe_load_all((binaries.stages_dir() / rel).read_text()) if d)
        cfg = self.workdir / "kwok.yaml"
        cfg.write_text(yaml.safe_dump_all(docs))
        self._spawn(
            "kwok",
            [
                str(self.bin / "kwok"),
                "--kubeconfig",
                str(self.workdir / "kwok.kubeconfig"),
                "--config",
                str(cfg),
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds",
                "40",
                "--cidr",
                POD_CIDR,
                "--node-ip",
                "10.244.0.1",
                "--server-address",
                f"127.0.0.1:{free_port()}",
            ],
        )

    def _create_node(self) -> None:
        assert self.client is not None
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": "zone-a",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": str(self.node_pods)},
                "capacity": {"cpu": "1000", "memory": "4Ti", "pods": str(self.node_pods)},
            },
        }
        self.client.create("/api/v1/nodes", node)

        def node_ready() -> bool:
            assert self.client is not None
            obj = self.client.get(f"/api/v1/nodes/{NODE_NAME}")
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in obj.get("status", {}).get("conditions", [])
            )
            tainted = any(
                t.get("key") == "node.kubernetes.io/not-ready"
                for t in obj.get("spec", {}).get("taints", []) or []
            )
            return ready and not tainted

        self._wait(
            f"node {NODE_NAME} Ready without the not-ready taint",
            node_ready,
            self.processes["kwok"],
            self.ready_timeout,
        )

    # ----------------------------------------------------------------- for tests
    def restart_apiserver(self, *, kill: bool = True, down_for: float = 0.0) -> None:
        """Kill (-9) or stop the apiserver, keep it down for a while, start it again and wait for ready."""
        old = self.processes["kube-apiserver"]
        if kill:
            old.signal(signal.SIGKILL)
            old.proc.wait(timeout=10)
        else:
            old.stop()
        time.sleep(down_for)
        proc = self._spawn("kube-apiserver", self._apiserver_argv)
        self._wait_apiserver(proc)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the plane's kubectl against it with the admin kubeconfig."""
        return subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def wait_for(
        self, what: str, check: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2
    ) -> None:
        """Poll check() until it returns true; raise with what was awaited after timeout."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as e:
                last = f" (last error: {type(e).__name__}: {e})"
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{last}")

    def create_namespace(self, name: str) -> None:
        """Create a namespace and wait for its default service account (pods need it)."""
        assert self.client is not None
        self.client.create(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        client = self.client
        self.wait_for(
            f"service account default in {name}",
            lambda: client.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
        )

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Every audit event written so far."""
        with open(self.audit_log_path, encoding="utf-8") as f:
            for raw in f:
                line = raw.strip()
                if line:
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    def etcd_compact(self) -> int:
        """Compact etcd to its current revision; returns that revision."""

        def post(path: str, body: dict[str, Any]) -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=10)
            try:
                conn.request(
                    "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                return json.loads(resp.read())
            finally:
                conn.close()

        rev = int(post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev
