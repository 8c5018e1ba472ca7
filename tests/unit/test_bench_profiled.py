"""The CPU-clock mode of the benchmark launcher (bench/profiled.py --clock cpu), run on a tiny module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profiled import _short_path

REPO = Path(__file__).resolve().parents[2]

# One thread burns 0.3 s of its own CPU in a function of its own, the other sleeps 0.3 s. They carry
# the names of the operator's reconcile workers so that the per-worker-group tables are written too.
MODULE = """
import sys
import threading
import time


def burn_cpu_here(seconds):
    start = time.thread_time()
    deadline = time.monotonic() + 10  # a bound on a starved machine
    x = 0
    while time.thread_time() - start < seconds and time.monotonic() < deadline:
        for i in range(2000):
            x += i * i
    return x


def nap(seconds):
    time.sleep(seconds)


if __name__ == "__main__":
    burner = threading.Thread(target=burn_cpu_here, args=(0.3,), name="ojscluster-worker-0")
    sleeper = threading.Thread(target=nap, args=(0.3,), name="ojsworker-worker-0")
    burner.start()
    sleeper.start()
    burner.join()
    sleeper.join()
    sys.exit(3)
"""

_ROW = re.compile(r"^\s+([\d.]+) s\s+([\d.]+)%\s+(\d+)\s+(.+)$")
_GROUP = re.compile(r"^  (\S+)\s+([\d.]+) s\s+([\d.]+)%\s+(\d+) threads?$")


def sections(report: str) -> dict[str, list[tuple[float, int, str]]]:
    """Section title -> its rows (seconds, calls, function)."""
    found: dict[str, list[tuple[float, int, str]]] = {}
    rows: list[tuple[float, int, str]] = []
    for line in report.splitlines():
        if line.startswith("======== "):
            rows = found.setdefault(line.strip("= "), [])
        elif m := _ROW.match(line):
            rows.append((float(m.group(1)), int(m.group(3)), m.group(4)))
    return found


def section(found: dict[str, list[tuple[float, int, str]]], start: str) -> list[tuple[float, int, str]]:
    titles = [t for t in found if t.startswith(start)]
    assert len(titles) == 1, f"no single section {start!r} in {list(found)}"
    return found[titles[0]]


def seconds_of(rows: list[tuple[float, int, str]], func: str) -> float | None:
    hits = [s for s, _, label in rows if label.endswith(f" {func}") and "cpuburn_mod.py:" in label]
    return hits[0] if hits else None


def test_cpu_mode_attributes_cpu_time_not_wall_time(tmp_path: Path) -> None:
    # yappi is in the `bench` extra, not in the dev lock: without it there is nothing to run.
    pytest.importorskip("yappi")
    (tmp_path / "cpuburn_mod.py").write_text(MODULE)
    out = tmp_path / "results" / "profile-cpu.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench.profiled", "--clock", "cpu", "--out", str(out), "-m", "cpuburn_mod"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr  # the module's own exit code
    report = out.read_text()

    total = re.search(r"^# total CPU ([\d.]+) s as yappi saw it", report, re.M)
    assert total, report
    # The burner's 0.3 s plus start-up work of the main thread; far from the seconds a wall clock would add.
    assert 0.25 <= float(total.group(1)) <= 3.0, report

    groups = {m.group(1): float(m.group(2)) for m in map(_GROUP.match, report.splitlines()) if m}
    assert groups["ojscluster-worker"] >= 0.25, report
    # Asleep for 0.3 s: a wall clock would give it 0.3 s, the CPU clock next to nothing.
    assert groups["ojsworker-worker"] < 0.05, report

    found = sections(report)
    top_self = section(found, "all threads: self CPU time")
    burn = seconds_of(top_self[:3], "burn_cpu_here")
    assert burn is not None and burn >= 0.2, report
    sleep_rows = [s for s, _, label in top_self if "sleep" in label]
    assert all(s < 0.05 for s in sleep_rows), report
    burn_incl = seconds_of(section(found, "all threads: inclusive CPU time"), "burn_cpu_here")
    assert burn_incl is not None and burn_incl >= burn, report

    # The worker groups' own tables: the burner's function in its group, the sleeper's group idle.
    cluster = section(found, "ojscluster-worker: self CPU time")
    assert cluster and cluster[0][2].endswith(" burn_cpu_here"), report
    worker = section(found, "ojsworker-worker: self CPU time")
    assert sum(s for s, _, _ in worker) < 0.05, report
    nap = seconds_of(worker, "nap")
    assert nap is not None and nap < 0.05, report


def test_report_paths_are_short() -> None:
    # site-packages wins over the repo: the venv may sit inside the repo.
    assert _short_path(f"{REPO}/.venv/lib/python3.11/site-packages/pydantic/main.py") == "pydantic/main.py"
    assert _short_path(f"{REPO}/src/ojsctrl/runtime/apply.py") == "ojsctrl/runtime/apply.py"
    assert _short_path(f"{REPO}/bench/profiled.py") == "bench/profiled.py"
    assert _short_path("/usr/lib/python3.11/threading.py") == "threading.py"
    # A snapshot of the sources elsewhere (PYTHONPATH=/snap/src) still shows ojsctrl/...
    assert _short_path("/snap/src/ojsctrl/cli.py") == "ojsctrl/cli.py"
    assert _short_path("/tmp/x/mod.py") == "/tmp/x/mod.py"
