"""The secret ledger: what a test module planted, and the scan that proves none of it leaked.

A module-scoped fixture (``secret_ledger`` in tests/e2e/conftest.py) opens one ledger per test module and
makes it the active one; the harness registers into it every namespace made with ``ns_for`` and every
operator started with ``start_op``, and tests add the tokens and passwords they plant with
:meth:`SecretLedger.plant`. At the module's teardown the fixture calls :meth:`SecretLedger.scan`: every
value of every Secret in the registered namespaces, and every planted value, is searched for in every
registered operator's log and last /metrics, and in the events, OJS statuses and ConfigMaps of those
namespaces. A test file run alone therefore still scans everything it planted and started.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import CONFIGMAPS, EVENTS, SECRETS, ApiError, Client

if TYPE_CHECKING:
    from tests.harness.controlplane import ControlPlane
    from tests.harness.operator import OperatorProcess

# Shorter values are too common to be evidence of a leak (they match by chance).
MIN_NEEDLE = 6


def secret_values(client: Client, ns: str) -> set[str]:
    """Every value of every Secret in ns (service-account tokens aside), and the password of any URL."""
    out: set[str] = set()
    for s in client.list(SECRETS, ns)[0]:
        if s.get("type") == "kubernetes.io/service-account-token":
            continue
        for raw in (s.get("data") or {}).values():
            try:
                value = base64.b64decode(raw).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            if len(value) >= 8:
                out.add(value)
            try:
                pw = urlsplit(value).password
            except ValueError:
                pw = None
            if pw and len(pw) >= MIN_NEEDLE:
                out.add(pw)
    return out


@dataclass
class ScanResult:
    """What a scan searched for, where, and what it found (leaks name the place, never the value)."""

    needles: set[str]
    haystacks: dict[str, str]
    leaks: list[str]

    @property
    def log_bytes(self) -> int:
        return sum(len(t) for w, t in self.haystacks.items() if w.startswith("log "))


@dataclass
class SecretLedger:
    """The namespaces, operators and planted values of one test module."""

    planted: set[str] = field(default_factory=set)
    namespaces: list[tuple[ControlPlane, str]] = field(default_factory=list)
    operators: list[OperatorProcess] = field(default_factory=list)

    def plant(self, *values: str) -> None:
        """Values a test wrote somewhere the operator can read (tokens, passwords, API keys)."""
        self.planted.update(values)

    def empty(self) -> bool:
        return not (self.planted or self.namespaces or self.operators)

    def scan(self) -> ScanResult:
        """Search every secret value in every place the operator writes to or logs."""
        # Imported here: the driver client lives in kube.py, which imports this module.
        from tests.harness.kube import driver

        needles: set[str] = set(self.planted)
        haystacks: dict[str, str] = {}
        for plane, name in self.namespaces:
            c = driver(plane)
            try:
                needles |= secret_values(c, name)
                haystacks[f"{name}/events"] = json.dumps(c.list(EVENTS, name)[0])
                haystacks[f"{name}/configmaps"] = json.dumps(c.list(CONFIGMAPS, name)[0])
                for res in (OJSCLUSTERS, OJSWORKERS):
                    haystacks[f"{name}/{res.plural}.status"] = json.dumps(
                        [o.get("status") for o in c.list(res, name)[0]]
                    )
            except ApiError:
                continue
        for op in self.operators:
            haystacks[f"log {op.name}"] = op.logs()
            if op.proc.poll() is None:
                with contextlib.suppress(Exception):
                    haystacks[f"metrics {op.name}"] = op.metrics()
            saved = op.log_path.with_suffix(".metrics")
            if saved.exists():
                haystacks[f"metrics {op.name}"] = saved.read_text()
        needles = {n for n in needles if len(n) >= MIN_NEEDLE}
        leaks = [
            f"{where}: {needle[:4]}… ({len(needle)} chars)"
            for where, text in haystacks.items()
            for needle in needles
            if needle in text
        ]
        return ScanResult(needles, haystacks, leaks)


# The ledger of the test module that is running (pushed and popped by the `secret_ledger` fixture), so
# that harness helpers register what they make without every test passing the ledger along.
_ACTIVE: list[SecretLedger] = []


def activate(ledger: SecretLedger) -> None:
    """Make ledger the running module's (until :func:`deactivate`)."""
    _ACTIVE.append(ledger)


def deactivate(ledger: SecretLedger) -> None:
    _ACTIVE.remove(ledger)


def active() -> SecretLedger | None:
    """The running module's ledger (None outside the e2e suite, e.g. in a benchmark)."""
    return _ACTIVE[-1] if _ACTIVE else None


def plant(*values: str) -> None:
    """Register planted values with the running module's ledger."""
    if _ACTIVE:
        _ACTIVE[-1].plant(*values)


def register_namespace(plane: ControlPlane, name: str) -> None:
    if _ACTIVE:
        _ACTIVE[-1].namespaces.append((plane, name))


def register_operator(op: OperatorProcess) -> None:
    if _ACTIVE:
        _ACTIVE[-1].operators.append(op)
