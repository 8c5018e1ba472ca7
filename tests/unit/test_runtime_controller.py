"""Unit tests for ojsctrl.runtime.controller: a real RateLimitingQueue and plain reconcile functions."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from ojsctrl.runtime.client import Client, Resource
from ojsctrl.runtime.controller import (
    Controller,
    Request,
    Result,
    generation_changed,
    not_status_only,
    resource_version_changed,
)
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.workqueue import (
    ItemExponentialFailureRateLimiter,
    RateLimitingQueue,
)

pytestmark = pytest.mark.timeout(30)

JSON = dict[str, Any]
DEADLINE = 5.0
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"test-{prefix}-{next(_names)}-{time.monotonic_ns()}"


def wait_for(cond: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


class Recording:
    """A reconcile function: records calls, and answers from a script (exception, Result or None)."""

    def __init__(self, script: Callable[[Request, int], Result | None] | None = None) -> None:
        self.calls: list[tuple[Request, float]] = []
        self._lock = threading.Lock()
        self._script = script

    def __call__(self, request: Request) -> Result | None:
        with self._lock:
            self.calls.append((request, time.monotonic()))
            n = len(self.calls)
        return self._script(request, n) if self._script else None

    def count(self) -> int:
        with self._lock:
            return len(self.calls)


@pytest.fixture
def controllers() -> Iterator[Callable[..., Controller]]:
    made: list[Controller] = []

    def make(name: str, reconciler: Any, **kwargs: Any) -> Controller:
        c = Controller(name, reconciler, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop(timeout=5)


REQ = Request("ns", "a")


# --------------------------------------------------------------------------- Request
def test_request_str_and_for_object() -> None:
    assert str(Request("ns", "a")) == "ns/a"
    assert str(Request("", "node")) == "node"
    assert Request.for_object({"metadata": {"namespace": "ns", "name": "a"}}) == Request("ns", "a")
    assert Request.for_object({"metadata": {"name": "n"}}) == Request("", "n")
    assert Request.for_object({}) == Request("", "")


# --------------------------------------------------------------------------- reconcile outcomes
def test_success_forgets_and_counts(controllers: Callable[..., Controller]) -> None:
    name = unique("success")
    rec = Recording()
    c = controllers(name, rec)
    c.start()
    c.queue.add(REQ)
    assert wait_for(
        lambda: sample("controller_runtime_reconcile_total", controller=name, result="success") == 1
    )
    assert rec.calls[0][0] == REQ
    assert c.queue.num_requeues(REQ) == 0
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 0
    assert sample("controller_runtime_max_concurrent_reconciles", controller=name) == 1


def test_error_is_counted_and_retried_with_backoff_until_success(
    controllers: Callable[..., Controller],
) -> None:
    name = unique("retry")

    def script(_: Request, n: int) -> Result | None:
        if n <= 3:
            raise RuntimeError(f"failure {n}")
        return None

    rec = Recording(script)
    queue: RateLimitingQueue[Request] = RateLimitingQueue(
        name, rate_limiter=ItemExponentialFailureRateLimiter(0.02, 1.0)
    )
    c = controllers(name, rec, queue=queue)
    c.start()
    c.queue.add(REQ)
    assert wait_for(
        lambda: sample("controller_runtime_reconcile_total", controller=name, result="success") == 1
    )
    assert rec.count() == 4
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 3
    assert sample("controller_runtime_reconcile_total", controller=name, result="error") == 3
    assert sample("workqueue_retries_total", name=name, controller=name) == 3
    # Backoff: 0.02, 0.04, 0.08 s between attempts (lower bounds only; a loaded machine may be slower).
    times = [t for _, t in rec.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.015
    assert gaps[1] >= 0.035
    assert gaps[2] >= 0.075
    # Success forgot the failure history.
    assert c.queue.num_requeues(REQ) == 0
    # No further attempts after success.
    time.sleep(0.2)
    assert rec.count() == 4


def test_default_queue_retries_errors(controllers: Callable[..., Controller]) -> None:
    name = unique("default-retry")

    def script(_: Request, n: int) -> Result | None:
        if n <= 2:
            raise RuntimeError("transient")
        return None

    rec = Recording(script)
    c = controllers(name, rec)
    c.start()
    c.queue.add(REQ)
    assert wait_for(
        lambda: sample("controller_runtime_reconcile_total", controller=name, result="success") == 1
    )
    assert rec.count() == 3
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 2


def test_worker_survives_exceptions(controllers: Callable[..., Controller]) -> None:
    name = unique("survive")
    seen: list[Request] = []

    def reconcile(req: Request) -> Result | None:
        seen.append(req)
        if req.name == "bad":
            raise KeyError(req.name)
        if req.name == "bad-runtime":
            raise RuntimeError("expected failure")
        return None

    queue: RateLimitingQueue[Request] = RateLimitingQueue(
        name, rate_limiter=ItemExponentialFailureRateLimiter(10.0, 10.0)
    )
    c = controllers(name, reconcile, queue=queue)
    c.start()
    c.queue.add(Request("ns", "bad"))
    c.queue.add(Request("ns", "bad-runtime"))
    c.queue.add(Request("ns", "good"))
    assert wait_for(lambda: Request("ns", "good") in seen)
    assert wait_for(lambda: sample("controller_runtime_reconcile_errors_total", controller=name) == 2)
    assert all(t.is_alive() for t in c._threads)
    # Still serving after the failures.
    c.queue.add(Request("ns", "good-2"))
    assert wait_for(lambda: Request("ns", "good-2") in seen)


def test_requeue_after_reconciles_again(controllers: Callable[..., Controller]) -> None:
    name = unique("requeue-after")

    def script(_: Request, n: int) -> Result | None:
        return Result(requeue_after=0.05) if n < 3 else None

    rec = Recording(script)
    c = controllers(name, rec)
    c.start()
    c.queue.add(REQ)
    assert wait_for(lambda: rec.count() == 3)
    times = [t for _, t in rec.calls]
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(times))
    assert sample("controller_runtime_reconcile_total", controller=name, result="requeue_after") == 2
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 0
    assert c.queue.num_requeues(REQ) == 0
    time.sleep(0.2)
    assert rec.count() == 3


def test_a_low_result_comes_back_at_once_but_behind_the_requests_waiting(
    controllers: Callable[..., Controller],
) -> None:
    """Result(low=True): the object is looked at again with no delay, as bookkeeping: a request added
    meanwhile at normal priority goes first."""
    name = unique("low-result")
    other = Request("ns", "b")

    def script(req: Request, n: int) -> Result | None:
        if n == 1:
            c.queue.add(other)  # a decision asked while the first reconcile runs
            return Result(low=True)
        return None

    rec = Recording(script)
    c = controllers(name, rec, max_concurrent_reconciles=1)
    c.start()
    c.queue.add(REQ)
    assert wait_for(lambda: rec.count() == 3)
    assert [r for r, _ in rec.calls] == [REQ, other, REQ]
    assert sample("controller_runtime_reconcile_total", controller=name, result="requeue") == 1


def test_a_success_drops_the_requeue_an_earlier_reconcile_asked_for(
    controllers: Callable[..., Controller],
) -> None:
    """Reconciles are level-triggered: the first asks to come back in 1 s, a change wakes the object at once,
    and that reconcile's success (nothing more to do) covers the earlier ask: no third reconcile."""
    name = unique("supersede")

    def script(_: Request, n: int) -> Result | None:
        return Result(requeue_after=1.0) if n == 1 else None

    rec = Recording(script)
    c = controllers(name, rec)
    c.start()
    c.queue.add(REQ)
    assert wait_for(lambda: rec.count() == 1)
    assert wait_for(
        lambda: sample("controller_runtime_reconcile_total", controller=name, result="requeue_after") == 1
    )
    c.queue.add(REQ)  # a change
    assert wait_for(lambda: rec.count() == 2)
    time.sleep(1.5)
    assert rec.count() == 2


def test_a_requeue_asked_during_a_reconcile_is_kept(controllers: Callable[..., Controller]) -> None:
    """A delayed add asked while a reconcile runs (an event it may not have seen) still comes."""
    name = unique("keep-during")

    def script(_: Request, n: int) -> Result | None:
        if n == 1:
            c.queue.add_after(REQ, 0.3)  # as a watch handler's coalesced status step would
        return None

    rec = Recording(script)
    c = controllers(name, rec)
    c.start()
    c.queue.add(REQ)
    assert wait_for(lambda: rec.count() == 2)


def test_stop_waits_for_in_flight_reconcile(controllers: Callable[..., Controller]) -> None:
    name = unique("drain")
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    seen: list[Request] = []

    def reconcile(req: Request) -> Result | None:
        seen.append(req)
        entered.set()
        release.wait(10)
        finished.set()
        return None

    c = controllers(name, reconcile)
    c.start()
    c.queue.add(REQ)
    assert entered.wait(DEADLINE)
    assert c.active() == 1
    finished_when_stopped: list[bool] = []

    def stopper() -> None:
        c.stop(timeout=10)
        finished_when_stopped.append(finished.is_set())

    t = threading.Thread(target=stopper)
    t.start()
    # The reconcile is blocked, so stop() cannot have returned, however long this takes.
    time.sleep(0.2)
    assert t.is_alive()
    assert not finished_when_stopped
    # No new work is taken while draining.
    c.queue.add(Request("ns", "late"))
    release.set()
    t.join(DEADLINE)
    assert not t.is_alive()
    assert finished_when_stopped == [True]
    assert not any(w.is_alive() for w in c._threads)
    assert c.active() == 0
    assert seen == [REQ]
    assert sample("controller_runtime_reconcile_total", controller=name, result="success") == 1


def test_stop_takes_no_item_from_the_backlog(controllers: Callable[..., Controller]) -> None:
    name = unique("backlog")
    entered = threading.Event()
    release = threading.Event()
    seen: list[Request] = []

    def reconcile(req: Request) -> Result | None:
        seen.append(req)
        entered.set()
        release.wait(10)
        return None

    c = controllers(name, reconcile)
    c.start()
    c.queue.add(REQ)
    assert entered.wait(DEADLINE)
    for i in range(5):
        c.queue.add(Request("ns", f"queued-{i}"))
    stopped: list[bool] = []
    t = threading.Thread(target=lambda: stopped.append(c.stop(timeout=10)))
    t.start()
    time.sleep(0.1)
    release.set()
    t.join(DEADLINE)
    assert stopped == [True]
    # The running reconcile finished; nothing queued behind it was started during shutdown.
    assert seen == [REQ]


def test_stop_reports_a_reconcile_still_running(controllers: Callable[..., Controller]) -> None:
    release = threading.Event()
    entered = threading.Event()

    def reconcile(req: Request) -> Result | None:
        entered.set()
        release.wait(10)
        return None

    c = controllers(unique("stuck"), reconcile)
    c.start()
    c.queue.add(REQ)
    assert entered.wait(DEADLINE)
    started = time.monotonic()
    assert c.stop(timeout=0.3) is False
    assert time.monotonic() - started < 2
    release.set()


def test_workers_take_no_item_without_leadership(controllers: Callable[..., Controller]) -> None:
    leading = [True]
    rec = Recording()
    c = controllers(unique("gate"), rec)
    c.leader_gate = lambda: leading[0]
    c.start()
    c.queue.add(REQ)
    assert wait_for(lambda: rec.count() == 1)
    leading[0] = False
    c.queue.add(Request("ns", "after-loss"))
    time.sleep(0.5)
    assert rec.count() == 1, "an item was reconciled after leadership ended"
    leading[0] = True
    assert wait_for(lambda: rec.count() == 2)


def test_concurrent_workers_never_share_a_key(controllers: Callable[..., Controller]) -> None:
    name = unique("concurrent")
    lock = threading.Lock()
    running: set[Request] = set()
    overlaps: list[Request] = []
    done: list[Request] = []

    def reconcile(req: Request) -> Result | None:
        with lock:
            if req in running:
                overlaps.append(req)
            running.add(req)
        time.sleep(0.01)
        with lock:
            running.discard(req)
            done.append(req)
        return None

    c = controllers(name, reconcile, max_concurrent_reconciles=4)
    c.start()
    reqs = [Request("ns", f"o{i}") for i in range(8)]
    for _ in range(3):
        for r in reqs:
            c.queue.add(r)
    assert wait_for(lambda: set(done) == set(reqs))
    assert not overlaps
    assert sample("controller_runtime_max_concurrent_reconciles", controller=name) == 4


# --------------------------------------------------------------------------- predicates
def m(generation: int | None = None, rv: str | None = None) -> JSON:
    meta: JSON = {"name": "a", "namespace": "ns"}
    if generation is not None:
        meta["generation"] = generation
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"metadata": meta}


SAME = m(1, "5")


@pytest.mark.parametrize(
    ("event", "old", "new", "expected"),
    [
        ("add", None, m(1, "1"), True),
        ("delete", m(1, "1"), None, True),
        ("update", m(1, "1"), m(2, "2"), True),
        ("update", m(1, "1"), m(1, "2"), False),  # status-only change
        ("update", m(1, "1"), m(1, "1"), False),
        ("update", m(None, "1"), m(None, "2"), False),
        ("update", m(None, "1"), m(1, "2"), True),
        ("update", SAME, SAME, True),  # resync: the same object
        ("update", None, m(1, "1"), True),
    ],
)
def test_generation_changed(event: str, old: JSON | None, new: JSON | None, expected: bool) -> None:
    assert generation_changed(event, old, new) is expected


@pytest.mark.parametrize(
    ("event", "old", "new", "expected"),
    [
        ("add", None, m(1, "1"), True),
        ("delete", m(1, "1"), None, True),
        ("update", m(1, "1"), m(1, "2"), True),
        ("update", m(1, "1"), m(2, "1"), False),
        ("update", m(1, "1"), m(1, "1"), False),  # an equal copy is not a resync
        ("update", SAME, SAME, True),  # resync: the same object
        ("update", {}, {"metadata": None}, False),
    ],
)
def test_resource_version_changed(event: str, old: JSON | None, new: JSON | None, expected: bool) -> None:
    assert resource_version_changed(event, old, new) is expected


def obj(rv: str, *, status: Any = None, spec: Any = None, **meta: Any) -> JSON:
    return {
        "metadata": {"resourceVersion": rv, "managedFields": [rv], **meta},
        "spec": spec,
        "status": status,
    }


PRIMARY = obj("1", status={"phase": "Running"}, spec={"replicas": 1})


@pytest.mark.parametrize(
    ("event", "old", "new", "expected"),
    [
        ("add", None, PRIMARY, True),
        ("delete", PRIMARY, None, True),
        ("update", PRIMARY, PRIMARY, True),  # resync: the same object
        # Our own status write: only status, resourceVersion and managedFields moved.
        ("update", PRIMARY, obj("2", status={"phase": "Scaling"}, spec={"replicas": 1}), False),
        ("update", PRIMARY, obj("2", status={"phase": "Running"}, spec={"replicas": 1}), False),
        ("update", PRIMARY, obj("2", status={"phase": "Running"}, spec={"replicas": 2}), True),
        (
            "update",
            PRIMARY,
            obj("2", status={"phase": "Running"}, spec={"replicas": 1}, labels={"a": "b"}),
            True,
        ),
        (
            "update",
            PRIMARY,
            obj(
                "2",
                status={"phase": "Running"},
                spec={"replicas": 1},
                annotations={"ojs.openjobspec.dev/autoscaling-paused": "true"},
            ),
            True,
        ),
        (
            "update",
            PRIMARY,
            obj("2", status={"phase": "Running"}, spec={"replicas": 1}, finalizers=["x"]),
            True,
        ),
        (
            "update",
            PRIMARY,
            obj(
                "2",
                status={"phase": "Running"},
                spec={"replicas": 1},
                deletionTimestamp="2026-12-05T00:00:00Z",
            ),
            True,
        ),
    ],
)
def test_not_status_only(event: str, old: JSON | None, new: JSON | None, expected: bool) -> None:
    assert not_status_only(event, old, new) is expected


# --------------------------------------------------------------------------- watches
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
OWNER_API = "ojs.openjobspec.dev/v1alpha1"
OWNER_KIND = "OJSCluster"


def child(name: str, refs: list[JSON], rv: str = "1", generation: int = 1) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "namespace": "team-a",
            "name": name,
            "resourceVersion": rv,
            "generation": generation,
            "ownerReferences": refs,
        },
    }


def ref(
    kind: str = OWNER_KIND, name: str = "owner", *, api: str = OWNER_API, controller: bool = True
) -> JSON:
    return {"apiVersion": api, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": controller}


def informer() -> Informer:
    # The client is only used by reflector threads, which these tests never start.
    return Informer(cast(Client, None), DEPLOYMENTS)


def queued(c: Controller) -> set[Request]:
    """Drain the (not started) controller's queue without blocking."""
    out: set[Request] = set()
    while True:
        item, shutdown = c.queue.get(timeout=0)
        if item is None or shutdown:
            return out
        out.add(item)
        c.queue.done(item)


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ([ref(name="c1")], {Request("team-a", "c1")}),
        # Another API version of the same group still names the same owner.
        ([ref(name="c1", api="ojs.openjobspec.dev/v1")], {Request("team-a", "c1")}),
        ([ref(name="c1", controller=False)], set()),
        ([ref(kind="OJSWorker", name="w1")], set()),
        ([ref(name="c1", api="other.example.com/v1alpha1")], set()),
        ([ref(name="x", controller=False), ref(name="c2")], {Request("team-a", "c2")}),
        ([], set()),
    ],
)
def test_watch_owned_maps_controller_ref_to_owner(
    controllers: Callable[..., Controller], refs: list[JSON], expected: set[Request]
) -> None:
    c = controllers(unique("owned"), Recording())
    inf = informer()
    c.watch_owned(inf, OWNER_API, OWNER_KIND)
    assert c.informers == [inf]
    inf._apply_event("ADDED", child("d", refs))
    assert queued(c) == expected
    inf._apply_event("MODIFIED", child("d", refs, rv="2"))
    assert queued(c) == expected
    inf._apply_event("DELETED", child("d", refs, rv="3"))
    assert queued(c) == expected


def test_watch_owned_on_relist_tombstone(controllers: Callable[..., Controller]) -> None:
    c = controllers(unique("owned-tomb"), Recording())
    inf = informer()
    c.watch_owned(inf, OWNER_API, OWNER_KIND)
    inf._replace(None, [child("d", [ref(name="c1")])])
    assert queued(c) == {Request("team-a", "c1")}
    # The child vanished while the watch was not looking: the tombstone still maps to its owner.
    inf._replace(None, [])
    assert queued(c) == {Request("team-a", "c1")}


def test_watch_owned_core_owner(controllers: Callable[..., Controller]) -> None:
    c = controllers(unique("owned-core"), Recording())
    inf = informer()
    c.watch_owned(inf, "v1", "ConfigMap")
    inf._apply_event("ADDED", child("d", [ref(kind="ConfigMap", name="cm", api="v1")]))
    inf._apply_event("ADDED", child("e", [ref(kind="ConfigMap", name="cm2", api="example.com/v1")]))
    assert queued(c) == {Request("team-a", "cm")}


def test_watch_owned_with_predicate(controllers: Callable[..., Controller]) -> None:
    c = controllers(unique("owned-pred"), Recording())
    inf = informer()
    c.watch_owned(inf, OWNER_API, OWNER_KIND, generation_changed)
    refs = [ref(name="c1")]
    inf._apply_event("ADDED", child("d", refs, rv="1", generation=1))
    assert queued(c) == {Request("team-a", "c1")}
    inf._apply_event("MODIFIED", child("d", refs, rv="2", generation=1))
    assert queued(c) == set()
    inf._apply_event("MODIFIED", child("d", refs, rv="3", generation=2))
    assert queued(c) == {Request("team-a", "c1")}
    inf.resync()
    assert queued(c) == {Request("team-a", "c1")}


def test_watch_primary_and_mapped(controllers: Callable[..., Controller]) -> None:
    c = controllers(unique("primary"), Recording())
    primary = informer()
    primary._apply_event("ADDED", child("existing", []))
    c.watch_primary(primary, resource_version_changed)
    # Registering replays what the informer already holds.
    assert queued(c) == {Request("team-a", "existing")}
    primary._apply_event("MODIFIED", child("existing", [], rv="1"))
    assert queued(c) == set()
    other = informer()
    c.watch_mapped(other, lambda o: [Request("team-a", "x"), Request("team-b", "y")])
    other._apply_event("ADDED", child("anything", []))
    assert queued(c) == {Request("team-a", "x"), Request("team-b", "y")}
    assert c.informers == [primary, other]


def test_wakeups_counted_by_source(controllers: Callable[..., Controller]) -> None:
    name = unique("wakeups")
    c = controllers(name, Recording())

    def wakeups(source: str) -> float:
        value = REGISTRY.get_sample_value(
            "ojsctrl_reconcile_wakeups_total", {"controller": name, "source": source}
        )
        return value or 0.0

    primary = informer()
    c.watch_primary(primary, resource_version_changed)
    primary._apply_event("ADDED", child("a", []))
    primary._apply_event("MODIFIED", child("a", [], rv="1"))  # dropped by the predicate: not counted
    primary._apply_event("MODIFIED", child("a", [], rv="2"))
    c.enqueue(Request("team-a", "a"), "poller")
    c.enqueue(Request("team-a", "a"), "poller")
    assert wakeups("Deployment") == 2
    assert wakeups("poller") == 2
    primary.resync()  # the cached object delivered again: a resync, not a change
    assert wakeups("resync") == 1
    assert wakeups("Deployment") == 2
    # The queue merged the four requests for one object.
    assert queued(c) == {Request("team-a", "a")}


def watch_rollouts(
    c: Controller, inf: Informer, delay: float, defer: Callable[[Request], float] | None = None
) -> None:
    """Watch owned children whose status steps are delayed; a child with status.done is settled."""
    c.watch_owned(
        inf,
        OWNER_API,
        OWNER_KIND,
        status_delay=delay,
        settled=lambda o: (o.get("status") or {}).get("done") is True,
        defer=defer,
    )


def test_watch_owned_delays_status_steps_but_not_the_settled_one(
    controllers: Callable[..., Controller],
) -> None:
    c = controllers(unique("owned-delay"), Recording())
    inf = informer()
    watch_rollouts(c, inf, 30.0)
    refs = [ref(name="c1")]
    inf._apply_event("ADDED", child("d", refs, rv="1"))
    assert queued(c) == {Request("team-a", "c1")}  # a new child: at once
    step = {**child("d", refs, rv="2"), "status": {"done": False}}
    inf._apply_event("MODIFIED", step)
    assert queued(c) == set()  # a status step: later, coalesced
    done = {**child("d", refs, rv="3"), "status": {"done": True}}
    inf._apply_event("MODIFIED", done)
    assert queued(c) == {Request("team-a", "c1")}  # the last step: at once
    inf._apply_event("MODIFIED", child("d", refs, rv="4", generation=2))
    assert queued(c) == {Request("team-a", "c1")}  # a spec change: at once


def test_watch_owned_stretches_a_status_step_to_when_the_owner_comes_back_anyway(
    controllers: Callable[..., Controller],
) -> None:
    c = controllers(unique("owned-defer"), Recording())
    inf = informer()
    held = {Request("team-a", "c1"): 20.0}
    watch_rollouts(c, inf, 0.2, defer=lambda req: held.get(req, 0.0))
    inf._apply_event("ADDED", child("d", [ref(name="c1")], rv="1"))
    inf._apply_event("ADDED", child("e", [ref(name="c2")], rv="1"))
    assert queued(c) == {Request("team-a", "c1"), Request("team-a", "c2")}
    inf._apply_event("MODIFIED", {**child("d", [ref(name="c1")], rv="2"), "status": {"done": False}})
    inf._apply_event("MODIFIED", {**child("e", [ref(name="c2")], rv="2"), "status": {"done": False}})
    time.sleep(0.5)
    # c2's step came after the coalescing delay; c1's waits for its owner's held status, 20 s away.
    assert queued(c) == {Request("team-a", "c2")}
    # The settled step is never stretched.
    inf._apply_event("MODIFIED", {**child("d", [ref(name="c1")], rv="3"), "status": {"done": True}})
    assert queued(c) == {Request("team-a", "c1")}
