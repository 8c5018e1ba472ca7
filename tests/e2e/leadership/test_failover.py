"""Leadership lost mid-storm (the leader killed, or stopped with SIGTERM) and an operator restarted
mid-storm: every child is written once, none is orphaned or duplicated.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
import uuid

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import (
    FULL,
    MUTATING,
    AuditLog,
    by_operator,
    driver,
    holder,
    ns_for,
    size,
    ts,
    wait_until,
)
from tests.harness.operator import (
    OperatorProcess,
    identity_of,
    leader_election_args,
    start_op,
    unexpected_failures,
)
from tests.harness.storm import (
    CHILD_RESOURCES,
    MANAGED,
    child_problems,
    run_storm,
    storm_bodies,
    wait_converged,
)

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)


def test_leader_loss_kill_and_sigterm_mid_storm(crds: ControlPlane, ops: list[OperatorProcess]) -> None:
    plane = crds
    n = size(30, 200)
    ns = ns_for(plane, "rel-leader")
    client = driver(plane)
    audit = AuditLog(plane)
    lease = f"rel-{uuid.uuid4().hex[:6]}"
    lease_s, retry_s = 6.0, 1.0
    common = (
        *leader_election_args(lease, ns, watch=False),
        "--lease-duration",
        f"{lease_s:.0f}s",
        "--renew-deadline",
        "4s",
        "--retry-period",
        f"{retry_s:.0f}s",
    )
    a = start_op(plane, *common, name="leader-a", namespaces=[ns], started=ops)
    wait_until(
        "a leads", lambda: holder(client, ns, lease) != "" and identity_of(a) == holder(client, ns, lease), 60
    )
    b = start_op(plane, *common, name="leader-b", namespaces=[ns], started=ops)
    wait_until("b ready (warm standby)", b.ready, 60)

    def work(suffix: str) -> int:
        """Requests of that operator other than its leader election's (which never stop)."""
        return sum(
            (e.get("objectRef") or {}).get("resource") != "leases"
            for e in by_operator(audit.events(ns), suffix)
        )

    # Phase 1: kill -9 of the leader while half the storm is being created.
    first = storm_bodies(ns, n // 2, "k")
    storm = threading.Thread(target=run_storm, args=(client, ns, first))
    storm.start()
    wait_until("the leader is at work", lambda: work("leader-a") > 20, 60, 0.2)
    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until("b leads", lambda: holder(client, ns, lease) == identity_of(b), 30, 0.05)
    kill_takeover = time.monotonic() - killed
    storm.join(120)
    wait_converged(client, ns, 2 * (n // 2), size(180, 900))
    assert kill_takeover <= lease_s + 2 * retry_s + 2, f"takeover took {kill_takeover:.1f}s"

    # Phase 2: graceful SIGTERM of the new leader mid-storm; a third replica takes over.
    c = start_op(plane, *common, name="leader-c", namespaces=[ns], started=ops)
    wait_until("c ready (warm standby)", c.ready, 60)
    second = storm_bodies(ns, n - n // 2, "t")
    storm = threading.Thread(target=run_storm, args=(client, ns, second))
    mark = work("leader-b")
    storm.start()
    wait_until(
        "b at work on the second storm",
        lambda: work("leader-b") > mark + 20,
        60,
        0.2,
    )
    b.signal(signal.SIGTERM)
    termed = time.monotonic()
    wait_until("c leads", lambda: holder(client, ns, lease) == identity_of(c), 30, 0.05)
    term_takeover = time.monotonic() - termed
    assert b.wait(40) == 0
    storm.join(120)
    took = wait_converged(client, ns, 2 * n, size(180, 900))
    problems = child_problems(client, ns)
    assert problems == [], problems[:20]

    # The audit log: once the new leader holds the lease, the old one writes nothing more.
    events = audit.events()

    def took_over_at(suffix: str) -> float:
        writes = [
            e
            for e in by_operator(events, suffix)
            if (e.get("objectRef") or {}).get("resource") == "leases"
            and (e.get("objectRef") or {}).get("name") == lease
            and e.get("verb") in ("create", "update", "patch")
            and (e.get("responseStatus") or {}).get("code", 0) < 300
        ]
        return min(ts(e["stageTimestamp"]) for e in writes)

    def late_writes(old: str, since: float) -> list[str]:
        return [
            f"{e['verb']} {e['requestURI']} at {e['requestReceivedTimestamp']}"
            for e in by_operator(events, old)
            if e.get("verb") in MUTATING and ts(e["requestReceivedTimestamp"]) > since
        ]

    b_at, c_at = took_over_at("leader-b"), took_over_at("leader-c")
    assert late_writes("leader-a", b_at) == []
    assert late_writes("leader-b", c_at) == []
    for op in (b, c):
        assert unexpected_failures(op) == []
    last_a = max(
        ts(e["requestReceivedTimestamp"]) for e in by_operator(events, "leader-a") if e["verb"] in MUTATING
    )
    last_b = max(
        ts(e["requestReceivedTimestamp"]) for e in by_operator(events, "leader-b") if e["verb"] in MUTATING
    )
    figure(
        "leader_loss",
        objects=2 * n,
        lease_duration_s=lease_s,
        retry_period_s=retry_s,
        kill9_takeover_s=round(kill_takeover, 1),
        sigterm_takeover_s=round(term_takeover, 1),
        old_leader_writes_after_takeover=0,
        a_last_write_before_b_took_over_s=round(b_at - last_a, 2),
        b_last_write_before_c_took_over_s=round(c_at - last_b, 2),
        converged_after_second_handover_s=round(took, 1),
    )


# =========================================================================== 5. operator restart
def test_operator_restart_mid_storm_writes_each_child_once(
    crds: ControlPlane, ops: list[OperatorProcess]
) -> None:
    plane = crds
    n = size(30, 200)
    ns = ns_for(plane, "rel-oprestart")
    client = driver(plane)
    audit = AuditLog(plane)
    first = start_op(plane, name="restart-1", namespaces=[ns], started=ops)
    wait_until("first operator ready", first.ready, 60)
    bodies = storm_bodies(ns, n, "o")
    storm = threading.Thread(target=run_storm, args=(client, ns, bodies))
    storm.start()
    wait_until(
        "first operator at work", lambda: len(by_operator(audit.events(ns), "restart-1")) > 3 * n, 120, 0.2
    )
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = start_op(plane, name="restart-2", namespaces=[ns], started=ops)
    storm.join(120)
    took = wait_converged(client, ns, 2 * n, size(180, 900))
    problems = child_problems(client, ns)
    assert problems == [], problems[:20]
    time.sleep(3)  # let late writes land before counting

    # Writes that succeeded. A request cut off by the kill -9 is logged with 504 whether or not it was
    # applied; those are counted apart.
    all_writes = [e for e in by_operator(audit.events(ns)) if e.get("verb") in MUTATING]
    events = [e for e in all_writes if (e.get("responseStatus") or {}).get("code", 0) < 300]
    interrupted = {
        f"{(e.get('objectRef') or {}).get('resource')}/{(e.get('objectRef') or {}).get('name')}"
        for e in all_writes
        if (e.get("responseStatus") or {}).get("code") == 504
    }
    applies: collections.Counter[str] = collections.Counter()
    creates: collections.Counter[str] = collections.Counter()
    status_writes: collections.Counter[str] = collections.Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        key = f"{ref.get('resource')}/{ref.get('name')}"
        if ref.get("resource") == "events":
            continue
        if ref.get("subresource") == "status":
            status_writes[key] += 1
        elif e["verb"] == "patch":
            applies[key] += 1
        elif e["verb"] == "create":
            creates[key] += 1
    children = {
        f"{res.plural}/{o['metadata']['name']}"
        for res in CHILD_RESOURCES
        for o in client.list(res, ns, label_selector=MANAGED)[0]
    }
    twice = {k: v for k, v in applies.items() if v > 1}
    assert twice == {}, f"children applied more than once: {sorted(twice.items())[:20]}"
    secrets_created = {k: v for k, v in creates.items() if k.startswith("secrets/")}
    assert all(v == 1 for v in secrets_created.values()), secrets_created
    written = set(applies) | set(secrets_created)
    assert children - written <= interrupted, sorted(children - written - interrupted)[:10]
    assert written <= children, sorted(written - children)[:10]
    by_second = by_operator(audit.events(ns), "restart-2")
    figure(
        "operator_restart",
        objects=2 * n,
        children=len(children),
        child_applies=sum(applies.values()),
        max_applies_per_child=max(applies.values()),
        secret_creates=sum(secrets_created.values()),
        status_writes=sum(status_writes.values()),
        max_status_writes_per_object=max(status_writes.values()),
        second_operator_mutations=len([e for e in by_second if e.get("verb") in MUTATING]),
        writes_cut_off_by_the_kill=len(interrupted),
        converged_after_restart_s=round(took, 1),
    )
    assert unexpected_failures(second) == []
