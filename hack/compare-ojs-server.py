#!/usr/bin/env python3
"""Compare the test double (tests/ojsserver) with a real ojs-backend-redis server, side by side.

Run by hand, never in CI:

    python3 hack/compare-ojs-server.py PATH [--with-stale] [--conformance]

PATH is an ``ojs-server`` binary built from ojs-backend-redis, or that repository's source directory
prepared as ``shared/reference/ojs-ecosystem.md`` says (the script then builds ``./ojs-server`` there with
``go build`` when it is missing; the project carries none of the server's code: see
``tests/ojsserver/README.md``). It starts Debian's ``redis-server`` on a free loopback port, the real server
on another (``OJS_PORT``, ``REDIS_URL``; commit 5b459da predates API keys, so both run without one), and the
double with the ``redis`` personality in its server-faithful settings (``strict_heartbeat``, one-page admin
queues). It then sends the same requests to both (health, manifest, enqueue, fetch, heartbeat with a list
and with an integer ``active_jobs``, admin workers, quiet then heartbeat, quiet on an unknown id, paging,
admin queues, queue stats, queue list, ack, admin stats, unrouted paths) and compares statuses, content
types and JSON shapes (keys and value types, not values). ``--with-stale`` also waits 61 s so the real
server marks a worker stale (the double's clock is advanced instead). ``--conformance`` also replays the
conformance cases of ``tests/unit/test_ojs_conformance.py`` against the real server and reports, per case,
whether it fails at the step the double's list of disagreements names. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ojsserver import OJSTestServer  # noqa: E402
from tests.ojsserver.replay import json_type as kind  # noqa: E402

Response = tuple[int, str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def call(base: str, method: str, path: str, body: Any = None, content_type: str | None = None) -> Response:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": content_type or "application/openjobspec+json"} if data is not None else {}
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            status, ctype, raw = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, raw = exc.code, exc.headers.get("Content-Type", ""), exc.read()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = {"<text>": raw[:60].decode(errors="replace")}
    return status, ctype.split(";")[0].strip(), parsed


def shape_diff(real: Any, double: Any, where: str = "$") -> list[str]:
    """Differences of keys and types (values are not compared)."""
    if kind(real) != kind(double):
        return [f"{where}: real {kind(real)}, double {kind(double)}"]
    out: list[str] = []
    if isinstance(real, dict):
        for key in sorted(set(real) | set(double)):
            if key not in double:
                out.append(f"{where}.{key}: only in real ({kind(real[key])})")
            elif key not in real:
                out.append(f"{where}.{key}: only in double ({kind(double[key])})")
            else:
                out += shape_diff(real[key], double[key], f"{where}.{key}")
    elif isinstance(real, list):
        if bool(real) != bool(double):
            out.append(f"{where}: real has {len(real)} items, double {len(double)}")
        elif real:
            out += shape_diff(real[0], double[0], f"{where}[0]")
    return out


class Side:
    """One server under test, with the job ids it handed out."""

    def __init__(self, name: str, base: str) -> None:
        self.name = name
        self.base = base
        self.jobs: list[str] = []

    def send(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Response:
        path = path.replace("{job0}", self.jobs[0] if self.jobs else "none")
        if isinstance(body, dict):
            body = json.loads(json.dumps(body).replace("{job0}", self.jobs[0] if self.jobs else "none"))
        return call(self.base, method, path, body, content_type)


def scenario(with_stale: bool) -> list[tuple[str, str, str, Any, str | None]]:
    """(label, method, path, body, content type) in order."""
    hb = "/ojs/v1/workers/heartbeat"
    steps: list[tuple[str, str, str, Any, str | None]] = [
        ("health", "GET", "/ojs/v1/health", None, None),
        ("manifest", "GET", "/ojs/manifest", None, None),
        ("list queues (none yet)", "GET", "/ojs/v1/queues", None, None),
        (
            "enqueue 1",
            "POST",
            "/ojs/v1/jobs",
            {"type": "cmp.job", "args": [1], "options": {"queue": "cmp"}},
            None,
        ),
        (
            "enqueue 2",
            "POST",
            "/ojs/v1/jobs",
            {"type": "cmp.job", "args": [2], "options": {"queue": "cmp"}},
            None,
        ),
        (
            "enqueue 3",
            "POST",
            "/ojs/v1/jobs",
            {"type": "cmp.job", "args": [3], "options": {"queue": "cmp"}},
            None,
        ),
        ("fetch", "POST", "/ojs/v1/workers/fetch", {"queues": ["cmp"], "worker_id": "w-1"}, None),
        ("admin workers before any heartbeat", "GET", "/ojs/v1/admin/workers", None, None),
        ("heartbeat active_jobs list", "POST", hb, {"worker_id": "w-1", "active_jobs": ["{job0}"]}, None),
        ("heartbeat idle (python shape)", "POST", hb, {"worker_id": "w-2", "active_jobs": []}, None),
        (
            "heartbeat active_jobs int (go sdk shape)",
            "POST",
            hb,
            {"worker_id": "worker_pod-a_1_1", "state": "running", "active_jobs": 1, "active_job_ids": ["x"]},
            None,
        ),
        ("heartbeat without worker_id", "POST", hb, {"active_jobs": []}, None),
        ("admin workers", "GET", "/ojs/v1/admin/workers", None, None),
        ("quiet w-1", "POST", "/ojs/v1/admin/workers/w-1/quiet", None, None),
        ("heartbeat after quiet", "POST", hb, {"worker_id": "w-1", "active_jobs": ["{job0}"]}, None),
        ("admin workers after quiet", "GET", "/ojs/v1/admin/workers", None, None),
        ("quiet unknown id", "POST", "/ojs/v1/admin/workers/ghost/quiet", None, None),
        ("admin workers after phantom quiet", "GET", "/ojs/v1/admin/workers", None, None),
        ("heartbeat w-3", "POST", hb, {"worker_id": "w-3", "active_jobs": []}, None),
        ("admin workers page 2 of 2 per page", "GET", "/ojs/v1/admin/workers?per_page=2&page=2", None, None),
        ("admin workers per_page 500", "GET", "/ojs/v1/admin/workers?per_page=500", None, None),
        ("admin queues", "GET", "/ojs/v1/admin/queues", None, None),
        ("queue stats", "GET", "/ojs/v1/queues/cmp/stats", None, None),
        ("queue stats unknown queue", "GET", "/ojs/v1/queues/nope/stats", None, None),
        ("list queues", "GET", "/ojs/v1/queues?limit=1&offset=5", None, None),
        ("ack", "POST", "/ojs/v1/workers/ack", {"job_id": "{job0}"}, None),
        ("queue stats after ack", "GET", "/ojs/v1/queues/cmp/stats", None, None),
        ("admin stats", "GET", "/ojs/v1/admin/stats", None, None),
        ("metrics", "GET", "/metrics", None, None),
        ("healthz (not routed on redis)", "GET", "/healthz", None, None),
        ("unrouted path", "GET", "/ojs/v1/nope", None, None),
        ("wrong method", "DELETE", "/ojs/v1/admin/workers", None, None),
        ("bad content type", "POST", hb, b'{"worker_id":"w-9"}', "text/plain"),
    ]
    if with_stale:
        steps.append(("admin workers after 61 s", "GET", "/ojs/v1/admin/workers", None, None))
    steps.append(("health with the backend down", "GET", "/ojs/v1/health", None, None))
    return steps


def replay_conformance(base: str) -> int:
    """Replay the double's conformance cases on the real server; count cases whose outcome differs."""
    import urllib3

    from tests.ojsserver.replay import run_case
    from tests.unit.test_ojs_conformance import CASES, DISAGREEMENTS

    http = urllib3.PoolManager()
    differing = 0
    for path in CASES:
        case = json.loads(path.read_text())
        failures = run_case(case, base, http)
        documented = DISAGREEMENTS.get(case["test_id"])
        first = failures[0] if failures else None
        if documented is None:
            ok = first is None
            outcome = "passes" if ok else f"FAILS at {first}"
        else:
            ok = first is not None and first[0] == documented[0]
            outcome = f"fails at {first[0]} as documented" if ok else f"UNEXPECTED: {first}"
        differing += not ok
        print(f"[{'same' if ok else 'DIFF'}] conformance {case['test_id']} on the real server: {outcome}")
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "path", help="ojs-server binary, or its source directory (built there as ./ojs-server when missing)"
    )
    parser.add_argument("--with-stale", action="store_true", help="wait 61 s and compare stale workers")
    parser.add_argument(
        "--conformance", action="store_true", help="replay the conformance cases on the real server"
    )
    args = parser.parse_args()
    binary = Path(args.path)
    if binary.is_dir():
        source, binary = binary, binary / "ojs-server"
        if not binary.exists() and (source / "go.mod").is_file():
            # The source tree prepared as shared/reference/ojs-ecosystem.md says (gRPC parts removed).
            print(f"building {binary} with go build ./cmd/ojs-server", file=sys.stderr)
            built = subprocess.run(
                ["go", "build", "-o", str(binary), "./cmd/ojs-server"],
                cwd=source,
                env={**os.environ, "GOFLAGS": "-mod=mod"},
                check=False,
            )
            if built.returncode != 0:
                print("go build failed (remove internal/grpc and its main.go lines first)", file=sys.stderr)
                return 2
    if not binary.is_file() or not os.access(binary, os.X_OK):
        print(
            f"{binary}: not an executable ojs-server (build it from ojs-backend-redis first)", file=sys.stderr
        )
        return 2
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server not found (Debian package redis-server)", file=sys.stderr)
        return 2

    procs: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.mkdtemp(prefix="ojs-compare-")
    double = OJSTestServer(backend="redis", strict_heartbeat=True, paginate_admin_queues=False)
    try:
        redis_port, ojs_port = free_port(), free_port()
        procs.append(
            subprocess.Popen(
                [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(redis_port)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "OJS_PORT": str(ojs_port),
            "OJS_GRPC_PORT": str(free_port()),
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        }
        log = open(os.path.join(workdir, "ojs-server.log"), "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([str(binary)], env=env, stdout=log, stderr=log))
        wait_port(ojs_port)
        double.start()
        real = Side("real", f"http://127.0.0.1:{ojs_port}")
        dbl = Side("double", double.base_url)

        differences = 0
        for label, method, path, body, ctype in scenario(args.with_stale):
            if label == "admin workers after 61 s":
                print("... waiting 61 s for the real server's stale threshold")
                time.sleep(61)
                double.advance(61)
            if label == "health with the backend down":
                if args.conformance:  # here: the cases leave queues and workers behind, and need redis up
                    differences += replay_conformance(real.base)
                procs[0].terminate()  # redis-server: the real server's PING fails
                procs[0].wait(timeout=10)
                double.set_healthy(False)
            r = real.send(method, path, body, ctype)
            d = dbl.send(method, path, body, ctype)
            for side, resp in ((real, r), (dbl, d)):
                if label.startswith("enqueue") and isinstance(resp[2], dict):
                    side.jobs.append(resp[2].get("job", {}).get("id", "none"))
            problems: list[str] = []
            if r[0] != d[0]:
                problems.append(f"status: real {r[0]}, double {d[0]}")
            if r[1] != d[1]:
                problems.append(f"content type: real {r[1]!r}, double {d[1]!r}")
            if label != "metrics":
                problems += shape_diff(r[2], d[2])
            mark = "same" if not problems else "DIFF"
            print(f"[{mark}] {method} {path} ({label}): real {r[0]}")
            if label.startswith(("admin workers", "heartbeat", "health with")):
                print(f"        real:   {json.dumps(r[2], sort_keys=True)[:300]}")
                print(f"        double: {json.dumps(d[2], sort_keys=True)[:300]}")
            for p in problems:
                print(f"        {p}")
            differences += len(problems)
        print(f"\n{differences} difference(s)")
        return 1 if differences else 0
    finally:
        double.stop()
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
