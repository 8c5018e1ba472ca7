"""Run a module under pyinstrument on every thread: `python -m bench.profiled --out F -m MODULE args...`

`python -m pyinstrument -m ojsctrl` samples only the main thread, and ojsctrl's main thread only waits
for a signal: the reconciles run in controller worker threads, the watches in informer threads. This
launcher starts a pyinstrument Profiler in every thread (by wrapping `threading.Thread.run`) and, at
exit, writes one text report per group of threads (thread names with their trailing number removed,
e.g. `ojscluster-worker`): its sampled time split into busy (running Python or C code), lock/queue
wait, sleep (the client's rate limiter, backoffs) and network (waiting for the API server); the busy
part as self and inclusive time per function, the waits by the ojsctrl frame that waited, and a call
tree of the reconcile workers' busy samples.

Threads still running at exit (daemons blocked in a read) are not in the report.
"""

from __future__ import annotations

import argparse
import re
import runpy
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

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


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.profiled")
    p.add_argument("--out", required=True)
    p.add_argument("-m", dest="module", required=True)
    args, rest = p.parse_known_args()
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profiler = Profiler(interval=0.002, async_mode="disabled")
    main_profiler.start()
    sys.argv = [args.module, *rest]
    code: Any = 0
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    finally:
        session = main_profiler.stop()
        with _lock:
            sessions = [*_sessions, ("main", session)]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(render(sessions))
    return int(code or 0) if isinstance(code, int | type(None)) else 1


if __name__ == "__main__":
    sys.exit(main())
