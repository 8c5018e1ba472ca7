"""Unit tests for the pure parts of ojsctrl.runtime.leaderelection: the timing rule and the lease record."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from ojsctrl.runtime.client import ApiError, Client, ClientOptions
from ojsctrl.runtime.leaderelection import LeaderElector, LeaseRecord, decide

ME = "me"
OTHER = "other"
ANCIENT = "2001-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("case", "holder", "observed", "now", "duration", "expected"),
    [
        ("own lease, long unobserved", ME, 0.0, 10_000.0, 15.0, True),
        ("own lease, just observed", ME, 100.0, 100.0, 15.0, True),
        ("empty holder", "", 100.0, 100.0, 15.0, True),
        ("other holder, just observed", OTHER, 100.0, 100.0, 15.0, False),
        ("other holder, not yet expired", OTHER, 100.0, 114.999, 15.0, False),
        ("other holder, expired exactly at observed+duration", OTHER, 100.0, 115.0, 15.0, True),
        ("other holder, long expired", OTHER, 100.0, 1_000.0, 15.0, True),
    ],
)
def test_decide(case: str, holder: str, observed: float, now: float, duration: float, expected: bool) -> None:
    record = LeaseRecord(holder=holder, lease_duration=int(duration), renew_time=ANCIENT)
    got = decide(identity=ME, current=record, observed_time=observed, now=now, lease_duration=duration)
    assert got is expected, case


def test_decide_ignores_the_renew_time_in_the_record() -> None:
    # The holder's renewTime is decades old by wall clock, but this candidate only just observed the
    # record: clocks of different machines are never compared, so it is not expired.
    stale = LeaseRecord(
        holder=OTHER, lease_duration=15, acquire_time=ANCIENT, renew_time=ANCIENT, transitions=3
    )
    assert not decide(identity=ME, current=stale, observed_time=500.0, now=500.5, lease_duration=15.0)
    # Conversely a renewTime in the future does not keep a lease alive past the local observation.
    future = LeaseRecord(holder=OTHER, lease_duration=15, renew_time="2999-01-01T00:00:00.000000Z")
    assert decide(identity=ME, current=future, observed_time=500.0, now=515.0, lease_duration=15.0)


def test_decide_uses_the_candidates_lease_duration() -> None:
    # The record says 1 s, but the candidate's configured duration is what counts.
    record = LeaseRecord(holder=OTHER, lease_duration=1)
    assert not decide(identity=ME, current=record, observed_time=0.0, now=5.0, lease_duration=15.0)


@pytest.mark.parametrize(
    "record",
    [
        LeaseRecord(),
        LeaseRecord("me", 15, "2024-05-01T10:00:00.000000Z", "2024-05-01T10:00:09.123456Z", 4),
        LeaseRecord("me", 15, None, "2024-05-01T10:00:09.123456Z", 0),
    ],
)
def test_lease_record_round_trip(record: LeaseRecord) -> None:
    lease = {"metadata": {"name": "x"}, "spec": record.to_spec()}
    assert LeaseRecord.from_lease(lease) == record


def test_lease_record_to_spec_fields() -> None:
    spec = LeaseRecord("me", 15, "A", "R", 2).to_spec()
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 2,
        "acquireTime": "A",
        "renewTime": "R",
    }
    assert "acquireTime" not in LeaseRecord("me", 15).to_spec()


@pytest.mark.parametrize("lease", [{}, {"spec": None}, {"spec": {}}, {"spec": {"holderIdentity": None}}])
def test_lease_record_from_empty_lease(lease: dict[str, Any]) -> None:
    assert LeaseRecord.from_lease(lease) == LeaseRecord()


def _elector(**kwargs: Any) -> LeaderElector:
    # The client is only stored by the constructor.
    return LeaderElector(cast(Client, None), namespace="ns", name="lease", identity=ME, **kwargs)


def test_elector_defaults_are_valid() -> None:
    e = _elector()
    assert (e.lease_duration, e.renew_deadline, e.retry_period) == (15.0, 10.0, 2.0)
    assert not e.is_leader
    assert e.observed_holder() == ""


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [
        (10.0, 10.0, 2.0),  # lease == renew deadline
        (5.0, 10.0, 2.0),  # lease < renew deadline
    ],
)
def test_elector_rejects_lease_not_longer_than_renew_deadline(
    lease: float, renew: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="lease duration"):
        _elector(lease_duration=lease, renew_deadline=renew, retry_period=retry)


@pytest.mark.parametrize(
    ("renew", "retry"),
    [
        (2.4, 2.0),  # exactly 1.2 x retry
        (2.0, 2.0),
        (1.0, 2.0),
    ],
)
def test_elector_rejects_renew_deadline_within_jittered_retry(renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry period"):
        _elector(lease_duration=15.0, renew_deadline=renew, retry_period=retry)


def test_elector_accepts_renew_deadline_just_above_jittered_retry() -> None:
    e = _elector(lease_duration=15.0, renew_deadline=2.5, retry_period=2.0)
    assert e.renew_deadline == 2.5


# --------------------------------------------------------------------------- against a loopback server
class LeaseServer:
    """A loopback HTTP endpoint holding one Lease with resourceVersion checks, whose answers can be
    held back (`hang`) to play an API server or network that stops answering."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.lock = threading.Lock()
        self.hang = threading.Event()
        self.unblock = threading.Event()
        self.puts: list[float] = []  # receive times (monotonic) of successful PUTs
        self.gets = 0
        self.delay = 0.0  # seconds every answer takes: a loaded API server
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                out: dict[str, Any] = json.loads(self.rfile.read(n)) if n else {}
                return out

            def _hold(self) -> bool:
                if owner.delay:
                    time.sleep(owner.delay)
                if owner.hang.is_set():
                    owner.unblock.wait(30)
                    return True
                return False

            def do_GET(self) -> None:
                owner.gets += 1
                if self._hold():
                    return
                with owner.lock:
                    if owner.lease is None:
                        self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    else:
                        self._answer(200, owner.lease)

            def do_POST(self) -> None:
                body = self._body()
                if self._hold():
                    return
                with owner.lock:
                    if owner.lease is not None:
                        self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                        return
                    owner.rv += 1
                    body["metadata"]["resourceVersion"] = str(owner.rv)
                    owner.lease = body
                    self._answer(201, body)

            def do_PUT(self) -> None:
                received = time.monotonic()
                body = self._body()
                if self._hold():
                    return
                with owner.lock:
                    assert owner.lease is not None
                    if body["metadata"].get("resourceVersion") != owner.lease["metadata"]["resourceVersion"]:
                        self._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                        return
                    owner.rv += 1
                    body["metadata"]["resourceVersion"] = str(owner.rv)
                    owner.lease = body
                    owner.puts.append(received)
                    self._answer(200, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self) -> Client:
        from kubernetes import client as k8s

        cfg = k8s.Configuration()
        cfg.host = self.url
        # The shared client's defaults (30 s reads, retries): the elector must bound them itself.
        return Client(cfg, ClientOptions())

    def close(self) -> None:
        self.unblock.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lease_server() -> Iterator[LeaseServer]:
    s = LeaseServer()
    yield s
    s.close()


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.mark.timeout(30)
def test_a_hung_renewal_ends_leadership_at_the_renew_deadline(lease_server: LeaseServer) -> None:
    stopped_at: list[float] = []
    e = LeaderElector(
        lease_server.client(),
        namespace="ns",
        name="lease",
        identity=ME,
        lease_duration=3.0,
        renew_deadline=2.0,
        retry_period=0.4,
        on_stopped_leading=lambda: stopped_at.append(time.monotonic()),
    )
    stop = threading.Event()
    t = threading.Thread(target=e.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert _wait(lambda: e.is_leader, 5)
        assert _wait(lambda: len(lease_server.puts) >= 2, 5)  # renewing
        lease_server.hang.set()
        hung = time.monotonic()
        assert _wait(lambda: not e.is_leader, 5), "still leading long after the renew deadline"
        lost = time.monotonic()
        last_renewal = lease_server.puts[-1]
        # The deadline counts from the last renewal's send time, which precedes its arrival here.
        assert lost - last_renewal <= 2.0 + 0.25, f"led {lost - last_renewal:.2f}s after the last renewal"
        assert lost - hung <= 2.0 + 0.25
        assert _wait(lambda: bool(stopped_at), 1), "on_stopped_leading not called while the call hangs"
        assert stopped_at[0] - last_renewal <= 2.0 + 0.35
        t.join(1)
        assert not t.is_alive()
    finally:
        stop.set()


@pytest.mark.timeout(30)
def test_one_attempt_is_bounded_by_its_timeout(lease_server: LeaseServer) -> None:
    e = LeaderElector(lease_server.client(), namespace="ns", name="lease", identity=ME)
    lease_server.hang.set()
    started = time.monotonic()
    with pytest.raises(ApiError):
        e.try_acquire_or_renew(timeout=0.5)
    assert time.monotonic() - started < 0.5 + 0.4


@pytest.mark.timeout(30)
def test_a_renewal_counts_from_when_it_was_sent(lease_server: LeaseServer) -> None:
    e = LeaderElector(lease_server.client(), namespace="ns", name="lease", identity=ME)
    before = time.monotonic()
    assert e.try_acquire_or_renew()
    assert e.try_acquire_or_renew()
    sent = e.last_success_sent
    assert sent is not None and before <= sent <= lease_server.puts[-1]


@pytest.mark.timeout(30)
def test_release_hands_the_lease_over_and_a_standby_takes_it(lease_server: LeaseServer) -> None:
    a = LeaderElector(
        lease_server.client(),
        namespace="ns",
        name="lease",
        identity="a",
        lease_duration=3.0,
        renew_deadline=2.0,
        retry_period=0.4,
    )
    b = LeaderElector(
        lease_server.client(),
        namespace="ns",
        name="lease",
        identity="b",
        lease_duration=3.0,
        renew_deadline=2.0,
        retry_period=0.4,
    )
    stop_a, stop_b = threading.Event(), threading.Event()
    ta = threading.Thread(target=a.run, args=(stop_a,), daemon=True)
    ta.start()
    assert _wait(lambda: a.is_leader, 5)
    tb = threading.Thread(target=b.run, args=(stop_b,), daemon=True)
    tb.start()
    time.sleep(0.5)
    assert not b.is_leader
    stop_a.set()
    ta.join(3)
    assert not a.is_leader
    assert a.release()
    assert _wait(lambda: b.is_leader, 2), "the standby did not take a released lease within a retry"
    stop_b.set()


@pytest.mark.timeout(30)
def test_a_slow_api_server_does_not_cost_the_leadership(lease_server: LeaseServer) -> None:
    """Every answer takes 0.45 s. Renewals at retryPeriod after the previous answer, each a GET and a
    PUT (0.9 s), leave 2.0 - 0.9 - 0.4 = 0.7 s for the next one, which then times out: leadership
    lost on a server that answers every request. Renewing at a fixed rate from the last send, with
    one PUT while holding the lease, keeps it."""
    stopped: list[float] = []
    e = LeaderElector(
        lease_server.client(),
        namespace="ns",
        name="lease",
        identity=ME,
        lease_duration=3.0,
        renew_deadline=2.0,
        retry_period=0.4,
        on_stopped_leading=lambda: stopped.append(time.monotonic()),
    )
    stop = threading.Event()
    t = threading.Thread(target=e.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert _wait(lambda: e.is_leader, 5)
        lease_server.delay = 0.45
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            assert e.is_leader, "leadership lost although every renewal was answered"
            time.sleep(0.05)
        assert not stopped
        assert len(lease_server.puts) >= 6
    finally:
        stop.set()
        t.join(3)


@pytest.mark.timeout(30)
def test_the_holder_renews_with_one_put_and_reads_after_a_conflict(lease_server: LeaseServer) -> None:
    e = LeaderElector(lease_server.client(), namespace="ns", name="lease", identity=ME)
    assert e.try_acquire_or_renew()  # GET (404), POST
    gets = lease_server.gets
    for _ in range(3):
        assert e.try_acquire_or_renew()
    assert lease_server.gets == gets, "a renewal by the holder read the lease first"
    # Someone else writes the lease meanwhile (say, a release by hand): the in-place PUT conflicts,
    # and the elector reads the lease and decides on what it finds.
    with lease_server.lock:
        assert lease_server.lease is not None
        lease_server.rv += 1
        lease_server.lease["metadata"]["resourceVersion"] = str(lease_server.rv)
        lease_server.lease["spec"]["holderIdentity"] = "other"
    assert not e.try_acquire_or_renew()
    assert lease_server.gets == gets + 1
    assert e.observed_holder() == "other"
