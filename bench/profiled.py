"""Run a module under a profiler on every thread: `python -m bench.profiled [--clock C] --out F -m MODULE ...`

`python -m pyinstrument -m ojsctrl` samples only the main thread, and ojsctrl's main thread only waits
for a signal: the reconciles run in controller worker threads, the watches in informer threads. This
launcher starts a pyinstrument Profiler in every thread (by wrapping `threading.Thread.run`) and, at
exit, writes one text report per group of threads (thread names with their trailing number removed,
e.g. `ojscluster-worker`): its sampled time split into busy (running Python or C code), lock/queue
wait, sleep (the client's rate limiter, backoffs) and network (waiting for the API server); the busy
part as self and inclusive time per function, the waits by the ojsctrl frame that waited, and a call
tree of the reconcile workers' busy samples.

Threads still running at exit (daemons blocked in a read) are not in the report.

`--clock wall` (the default) is the pyinstrument mode above. Wall-clock sampling cannot say where the CPU
goes: a thread waiting for the GIL is sampled in the C call that takes it back (`openssl_sha256`,
`lock.__enter__`), so GIL waits look like work. `--clock cpu` runs yappi instead, with its CPU clock
(each thread's own CPU time) on every thread and C functions profiled too, and writes at exit: the
process's CPU seconds as yappi saw them (the sum over threads, next to the OS's figure for the process);
CPU seconds per thread group; the top 40 functions over all threads by self CPU time (tsub) and by
inclusive CPU time (ttot), each with seconds, share of the total, calls and `file:line function`; and the
top 25 by self CPU time within each reconcile worker group (`ojscluster-worker`, `ojsworker-worker`).
yappi traces every call, so the profiled process runs several times slower than without it; compare
shares between functions, not seconds with an unprofiled run. Threads still running at exit are in this
report, but yappi adds a call's time when it returns: a frame still open at exit (a worker's loop, its
`run`) shows only its finished callees, and the report says how much CPU that leaves unattributed.

`--clock mem` traces allocations (tracemalloc, 12 frames) and writes its report when the process gets
SIGUSR1 (the bench sends it at convergence, before it stops the operator): the bytes each informer's
cache holds, per object and per kind (a walk of the cached dicts, lists and strings, each counted once);
the live traced bytes by the ojsctrl line that allocated them (the innermost ojsctrl frame of each
allocation's traceback); and the top lines over all frames.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyinstrument.session import Session

# Each mode imports its own profiler, so that the other one need not be installed.

# Leaf frames that are not work. pyinstrument records a blocking C call as a `<built-in>` leaf.
LOCK_WAIT = {
    "lock.acquire",
    "SimpleQueue.get",
    "Condition.wait",
    "Event.wait",
    "Thread.join",
    "Thread._wait_for_tstate_lock",
}
SLEEP = {"sleep"}
NETWORK = {
    "recv_into",
    "_SSLSocket.read",
    "read",
    "select",
    "poll",
    "epoll.poll",
    "accept",
    "connect",
    "do_handshake",
    "_SSLSocket.do_handshake",
    "socket.recv_into",
    "socket.accept",
    "getaddrinfo",
}
_sessions: list[tuple[str, Session]] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.002, async_mode="disabled")
    profiler.start()
    try:
        _original_run(self)
    finally:
        session = profiler.stop()
        with _lock:
            _sessions.append((self.name, session))


def _group(name: str) -> str:
    return re.sub(r"[-_]?\d+$", "", name) or name


def _parts(ident: str) -> tuple[str, str, str]:
    """(display name, file, line) of a pyinstrument frame identifier."""
    head, *attrs = ident.split("\x01")
    func, file, line = ([*head.split("\x00"), "", ""])[:3]
    cls = next((a[1:] for a in attrs if a.startswith("c")), "")
    return (f"{cls}.{func}" if cls and "." not in func else func), file, line


def _label(ident: str) -> str:
    name, file, line = _parts(ident)
    if file == "<built-in>":
        return f"{name} <built-in>"
    short = re.sub(r"^.*/(site-packages|lib/python3\.\d+|src)/", "", file)
    return f"{name}  {short}:{line}"


def _category(stack: list[str]) -> str:
    name, file, _ = _parts(stack[-1])
    if name in LOCK_WAIT:
        return "lock/queue wait"
    if file != "<built-in>":
        return "busy"
    if name in SLEEP:
        return "sleep"
    if name in NETWORK or name.endswith((".recv_into", ".read", ".poll", ".select")):
        return "network"
    return "busy"


def _first_own(stack: list[str]) -> str:
    """The innermost frame of our code (ojsctrl or bench) in a stack: who asked for the wait."""
    for ident in reversed(stack):
        _, file, _ = _parts(ident)
        if "/ojsctrl/" in file and "/runtime/client.py" not in file:
            return _label(ident)
    for ident in reversed(stack):
        if "/ojsctrl/" in _parts(ident)[1]:
            return _label(ident)
    return _label(stack[-1])


def _report(name: str, records: list[tuple[list[str], float]], top: int = 40) -> list[str]:
    cats: dict[str, float] = defaultdict(float)
    self_t: dict[str, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)
    waits: dict[tuple[str, str], float] = defaultdict(float)
    for raw, t in records:
        stack = [f for f in raw if "\x00<thread>\x00" not in f]
        if not stack:
            continue
        cat = _category(stack)
        cats[cat] += t
        if cat != "busy":
            waits[(cat, _first_own(stack))] += t
            continue
        self_t[_label(stack[-1])] += t
        for ident in {_label(f) for f in stack}:
            incl[ident] += t
    total = sum(cats.values())
    out = [f"======== {name}: {total:.2f} s sampled ========"]
    out.append("  " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])))
    busy = cats.get("busy", 0.0)
    if busy < 0.02:
        return out
    out.append(f"  -- busy: self time (top {top}) --")
    for k, v in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {v:8.2f} s {100 * v / busy:5.1f}%  {k}")
    out.append(f"  -- busy: inclusive time (top {top}) --")
    for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {v:8.2f} s {100 * v / busy:5.1f}%  {k}")
    out.append("  -- waiting: where (innermost ojsctrl frame) --")
    for (cat, where), v in sorted(waits.items(), key=lambda kv: -kv[1])[:15]:
        out.append(f"  {v:8.2f} s  {cat:16s} {where}")
    return out


def render(sessions: list[tuple[str, Session]]) -> str:
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    groups: dict[str, list[tuple[list[str], float]]] = defaultdict(list)
    busy_sessions: dict[str, Session] = {}
    for name, session in sessions:
        g = _group(name)
        groups[g].extend((list(r[0]), r[1]) for r in session.frame_records)
        busy_sessions[g] = session if g not in busy_sessions else Session.combine(busy_sessions[g], session)

    def busy(g: str) -> float:
        return sum(t for stack, t in groups[g] if stack and _category(stack) == "busy")

    order = sorted(groups, key=lambda g: -busy(g))
    out = [
        "# pyinstrument on every thread (wall clock); 'busy' = samples not in a lock wait, sleep or socket",
        "",
    ]
    out.append("busy seconds by thread group (sum over the group's threads):")
    for g in order:
        out.append(f"  {g:45s} {busy(g):9.2f} s")
    for g in order:
        if busy(g) < 0.05:
            continue
        out.append("")
        out.extend(_report(g, groups[g]))
    # A call tree of the reconcile workers' busy samples, pyinstrument's own rendering.
    for g in order:
        if not g.endswith("-worker") or busy(g) < 0.05:
            continue
        session = busy_sessions[g]
        session.frame_records = [r for r in session.frame_records if r[0] and _category(list(r[0])) == "busy"]
        out.append("")
        out.append(f"======== {g}: call tree of busy samples ========")
        tree = ConsoleRenderer(unicode=False, color=False, processor_options={"filter_threshold": 0.005})
        out.append(tree.render(session))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------- CPU clock
_REPO = Path(__file__).resolve().parents[1]
# The reconcile workers: their own per-function table in the CPU report.
CPU_WORKER_GROUPS = ("ojscluster-worker", "ojsworker-worker")


@dataclass(frozen=True)
class CpuThread:
    """One thread as yappi saw it: its context id, name and CPU seconds."""

    ctx: int
    name: str
    cpu: float


@dataclass(frozen=True)
class CpuFunc:
    """One function's CPU time in one thread: calls, inclusive (ttot) and self (tsub) seconds."""

    ctx: int
    label: str
    calls: int
    ttot: float
    tsub: float


def _thread_name() -> str | None:
    """yappi's context name callback: the thread's name (yappi's own gives the class name, `Thread`)."""
    # threading._active rather than current_thread(): this runs inside the profiler hook, and
    # current_thread() may build a _DummyThread under threading's own lock there (yappi issue 48).
    # None (a thread not registered yet) makes yappi ask again at the thread's next call.
    thread = threading._active.get(threading.get_ident())
    return thread.name if thread is not None else None


def _short_path(file: str) -> str:
    """A source path relative to site-packages, the repo (src/ included) or the stdlib."""
    # site-packages first: the venv may live inside the repo.
    if "/site-packages/" in file:
        return file.rsplit("/site-packages/", 1)[1]
    for root in (_REPO / "src", _REPO):
        prefix = f"{root}/"
        if file.startswith(prefix):
            return file[len(prefix) :]
    return re.sub(r"^.*/(lib/python3\.\d+|src)/", "", file)


def _cpu_label(module: str, lineno: int, name: str, builtin: bool) -> str:
    if builtin:
        return f"{module}.{name} <built-in>"
    return f"{_short_path(module)}:{lineno} {name}"


def cpu_stats() -> tuple[list[CpuThread], list[CpuFunc]]:
    """The stopped yappi profiler's threads and per-thread function stats."""
    import yappi

    threads = [CpuThread(t.id, t.name or "?", t.ttot) for t in yappi.get_thread_stats()]
    funcs: list[CpuFunc] = []

    def keep(stat: Any) -> bool:
        # yappi merges a function's entries of all threads by name; this sees each thread's own entry
        # first (ctx_id=0 is the main thread, and get_func_stats(ctx_id=0) would mean all threads).
        label = _cpu_label(stat.module, stat.lineno, stat.name, bool(stat.builtin))
        funcs.append(CpuFunc(stat.ctx_id, label, stat.ncall, stat.ttot, stat.tsub))
        return False

    yappi.get_func_stats(filter_callback=keep)
    return threads, funcs


def _cpu_table(funcs: list[CpuFunc], key: Callable[[CpuFunc], float], total: float, top: int) -> list[str]:
    merged: dict[str, list[float]] = {}
    for f in funcs:
        m = merged.setdefault(f.label, [0.0, 0.0, 0.0])
        m[0] += f.calls
        m[1] += f.ttot
        m[2] += f.tsub
    rows = [CpuFunc(-1, label, int(c), ttot, tsub) for label, (c, ttot, tsub) in merged.items()]
    out = [f"  {'seconds':>10s} {'share':>6s} {'calls':>10s}  function"]
    for r in sorted(rows, key=lambda r: -key(r))[:top]:
        v = key(r)
        share = 100 * v / total if total > 0 else 0.0
        out.append(f"  {v:8.3f} s {share:5.1f}% {r.calls:10d}  {r.label}")
    return out


def render_cpu(
    threads: list[CpuThread],
    funcs: list[CpuFunc],
    process_cpu: float,
    wall: float,
    top: int = 40,
    group_top: int = 25,
) -> str:
    """The CPU-clock report: totals, CPU by thread group, top functions overall and per worker group."""
    total = sum(t.cpu for t in threads)
    groups: dict[str, list[CpuThread]] = defaultdict(list)
    for t in threads:
        groups[_group(t.name)].append(t)
    cpu_of = {g: sum(t.cpu for t in ts) for g, ts in groups.items()}
    out = [
        "# yappi on every thread (CPU clock: each thread's own CPU time; C functions included)",
        f"# total CPU {total:.3f} s as yappi saw it (sum over its {len(threads)} thread(s)); the OS counted "
        f"{process_cpu:.3f} s for the process over {wall:.1f} s wall while profiling",
        # yappi adds a call's time when it returns: a frame still open at exit (the loop of a thread
        # still running) counts for its finished callees only.
        f"# finished calls account for {sum(f.tsub for f in funcs):.3f} s of it; the rest ran in frames "
        "still open at exit (the loops of threads still running)",
        "",
        "CPU seconds by thread group (sum over the group's threads):",
    ]
    for g in sorted(groups, key=lambda g: -cpu_of[g]):
        share = 100 * cpu_of[g] / total if total > 0 else 0.0
        n = len(groups[g])
        out.append(f"  {g:45s} {cpu_of[g]:9.3f} s {share:5.1f}%  {n} thread{'s' if n != 1 else ''}")
    out += ["", f"======== all threads: self CPU time (tsub), top {top} ========"]
    out += _cpu_table(funcs, lambda f: f.tsub, total, top)
    out += ["", f"======== all threads: inclusive CPU time (ttot), top {top} ========"]
    out += _cpu_table(funcs, lambda f: f.ttot, total, top)
    for g in CPU_WORKER_GROUPS:
        if g not in groups:
            continue
        ctxs = {t.ctx for t in groups[g]}
        head = f"{g}: self CPU time (tsub), top {group_top}; shares of the group's {cpu_of[g]:.3f} s"
        out += ["", f"======== {head} ========"]
        out += _cpu_table([f for f in funcs if f.ctx in ctxs], lambda f: f.tsub, cpu_of[g], group_top)
    return "\n".join(out) + "\n"


def _run_module(module: str, rest: list[str]) -> Any:
    """Run the module as __main__ with its arguments; its exit code."""
    sys.argv = [module, *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code
    return 0


def _exit_code(code: Any) -> int:
    return int(code or 0) if isinstance(code, int | type(None)) else 1


def _main_cpu(out: Path, module: str, rest: list[str]) -> int:
    import yappi

    yappi.set_clock_type("cpu")
    yappi.set_context_name_callback(_thread_name)
    cpu0, wall0 = time.process_time(), time.monotonic()
    # builtins=True: the C functions (hashing, JSON, SSL) get their own CPU time instead of adding it
    # to the Python function that called them.
    yappi.start(builtins=True, profile_threads=True)
    code: Any = 0
    try:
        code = _run_module(module, rest)
    finally:
        yappi.stop()
        process_cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        threads, funcs = cpu_stats()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_cpu(threads, funcs, process_cpu, wall))
        pstat = os.environ.get("OJSCTRL_BENCH_PSTAT")
        if pstat:
            # Callers and callees, for pstats (python -m pstats FILE): what the text report leaves out.
            yappi.get_func_stats().save(pstat, type="pstat")
    return _exit_code(code)


def _deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of a JSON-like value: dicts, lists, strings and numbers, each object counted once."""
    size = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        size += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple):
            stack.extend(o)
    return size


def render_mem(snapshot: Any) -> str:
    """The memory report of `--clock mem` (module docstring)."""
    import gc

    from ojsctrl.runtime.informer import Informer

    lines = ["# tracemalloc (12 frames) and the informers' caches, at SIGUSR1", ""]
    lines.append("Informer caches (deep size of the cached objects, each Python object counted once):")
    lines.append(f"  {'kind':<32} {'selector/mode':<44} {'objects':>8} {'bytes/object':>13} {'MB':>8}")
    seen: set[int] = set()
    total = 0
    for inf in [o for o in gc.get_objects() if isinstance(o, Informer)]:
        objs = inf.store.objects()
        size = sum(_deep_size(o, seen) for o in objs)
        total += size
        mode = ("metadata " if inf.metadata_only else "") + (inf.label_selector or "all")
        per = size / len(objs) if objs else 0
        lines.append(
            f"  {inf.resource.kind:<32} {mode[:44]:<44} {len(objs):>8} {per:>13.0f} {size / 1e6:>8.2f}"
        )
    lines.append(f"  total {total / 1e6:.2f} MB")
    stats = snapshot.statistics("traceback")
    traced = sum(st.size for st in stats)
    by_line: dict[str, list[int]] = {}
    for st in stats:
        where = "(no ojsctrl frame)"
        for frame in reversed(st.traceback):  # innermost last in tracemalloc's order
            if "/ojsctrl/" in frame.filename:
                where = f"{frame.filename.split('/src/')[-1]}:{frame.lineno}"
                break
        acc = by_line.setdefault(where, [0, 0])
        acc[0] += st.size
        acc[1] += st.count
    lines += ["", f"Live traced memory {traced / 1e6:.2f} MB, by the innermost ojsctrl line (top 40):"]
    for where, (size, count) in sorted(by_line.items(), key=lambda kv: -kv[1][0])[:40]:
        lines.append(f"  {size / 1e6:8.2f} MB {count:>9} blocks  {where}")
    lines += ["", "By allocating line, any file (top 25):"]
    for st in snapshot.statistics("lineno")[:25]:
        frame = st.traceback[0]
        lines.append(f"  {st.size / 1e6:8.2f} MB {st.count:>9} blocks  {frame.filename}:{frame.lineno}")
    return "\n".join(lines) + "\n"


def _main_mem(out: Path, module: str, rest: list[str]) -> int:
    import signal
    import tracemalloc

    tracemalloc.start(12)

    def report(signum: int, frame: Any) -> None:
        snapshot = tracemalloc.take_snapshot()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_mem(snapshot))

    signal.signal(signal.SIGUSR1, report)
    return _exit_code(_run_module(module, rest))


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.profiled")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--clock",
        choices=("wall", "cpu", "mem"),
        default="wall",
        help="wall: pyinstrument, sampled time split busy/wait (default); cpu: yappi, CPU time per function; "
        "mem: tracemalloc and the informers' cache sizes, reported on SIGUSR1",
    )
    p.add_argument("-m", dest="module", required=True)
    args, rest = p.parse_known_args()
    if args.clock == "cpu":
        return _main_cpu(Path(args.out), args.module, rest)
    if args.clock == "mem":
        return _main_mem(Path(args.out), args.module, rest)
    from pyinstrument import Profiler

    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profiler = Profiler(interval=0.002, async_mode="disabled")
    main_profiler.start()
    code: Any = 0
    try:
        code = _run_module(args.module, rest)
    finally:
        session = main_profiler.stop()
        with _lock:
            sessions = [*_sessions, ("main", session)]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(render(sessions))
    return _exit_code(code)


if __name__ == "__main__":
    sys.exit(main())
