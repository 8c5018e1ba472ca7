"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

- A candidate judges expiry by its *own* clock: it records when it last saw the lease record change
  (observed time) and considers the holder gone once leaseDuration has passed since then without a
  change. Clocks of different machines are never compared.
- Every write is an optimistic-concurrency update (resourceVersion), so two candidates cannot both win.
- The leader renews every retryPeriod, counted from when the previous renewal was sent (not from when
  its answer arrived: a loaded API server would otherwise stretch the gap between renewals to
  retryPeriod plus two round trips and eat the renew deadline), and while it holds the lease a
  renewal is a single PUT of the lease it last wrote (client-go's fast path); only a conflict falls
  back to GET and decide. Leadership is measured from the moment the last successful
  renewal was *sent*: it ends renewDeadline after that, at once, even while a renew call still hangs
  (`is_leader` turns false exactly then, and a watchdog calls `on_stopped_leading`). Because a
  standby measures leaseDuration (> renewDeadline) from when it *observed* that renewal, which is
  later than the send, the old leader has stopped before any standby may take over.
- Every attempt is bounded: each request's connect and read timeouts are the time left until the
  renew deadline, and the elector should get its own client (short timeouts, no retries, its own
  connection pool and rate limiter; see `Client.derive`), as controller-runtime does, so a renewal
  never waits behind the shared client.
- On graceful shutdown the owner calls `release()` (empty holder, 1 s duration) once nothing acts
  for this leader any more, so a standby takes over within a retry period instead of waiting for
  expiry. If work is still running the lease is left to expire.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Gauge

from ojsctrl.runtime.client import (
    JSON,
    LEASES,
    AlreadyExistsError,
    ApiError,
    Client,
    NotFoundError,
    TransportError,
)
from ojsctrl.runtime.metrics import REGISTRY

log = structlog.get_logger("ojsctrl.leaderelection")

MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease.",
    ["name"],
    registry=REGISTRY,
)

JITTER = 1.2


def _micro_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease's spec that leader election reads and writes."""

    holder: str = ""
    lease_duration: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: JSON) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            lease_duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> JSON:
        spec: JSON = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


def decide(
    *, identity: str, current: LeaseRecord, observed_time: float, now: float, lease_duration: float
) -> bool:
    """May `identity` write the lease now? Pure: the whole timing rule of leader election.

    Yes when it already holds it, when nobody holds it, or when the record has not changed for
    lease_duration as measured on this candidate's own clock since it last observed a change.
    """
    if not current.holder or current.holder == identity:
        return True
    return observed_time + lease_duration <= now


class LeaderElector:
    """Runs the acquire / renew loop for one identity on one Lease."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_duration <= renew_deadline:
            raise ValueError("lease duration must be greater than the renew deadline")
        if renew_deadline <= JITTER * retry_period:
            raise ValueError("renew deadline must be greater than retry period x 1.2")
        self.client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.clock, self.wall_clock = clock, wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_rv: str | None = None
        self._observed_time = 0.0
        # The Lease object as this identity last wrote it (the fast path's base), or None.
        self._own_lease: JSON | None = None
        self._reported_leader = ""
        self._lock = threading.Lock()
        self._leading = threading.Event()
        # Send time (self.clock) of the last successful acquire or renew while leading.
        self._renewed_at: float | None = None
        # Send time of the last attempt that succeeded (set by try_acquire_or_renew).
        self.last_success_sent: float | None = None
        self._lost_reason = ""
        self._renewer: threading.Thread | None = None
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)
        MASTER_STATUS.labels(name).set(0)

    @property
    def is_leader(self) -> bool:
        """True while this identity leads: it won the lease and its last successful renewal was sent
        less than renewDeadline ago. Turns false the instant the deadline passes, hung call or not."""
        if not self._leading.is_set():
            return False
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.renew_deadline

    def observed_holder(self) -> str:
        return self._observed.holder if self._observed else ""

    # ------------------------------------------------------------------ one attempt
    def _call(self, method: str, path: str, deadline: float, body: JSON | None = None) -> Any:
        """One request whose connect and read timeouts end at `deadline` (self.clock)."""
        left = deadline - self.clock()
        if left <= 0:
            raise TransportError(
                0, "Timeout", "the renew deadline passed", method=method, target=f"lease {self.name}"
            )
        return self.client.request(
            method,
            path,
            body=body,
            timeout=left,
            target=f"lease {self.namespace}/{self.name}",
            max_retries=0,  # the loop is the retry; a retry inside one attempt could outlive it
        )

    def try_acquire_or_renew(self, timeout: float | None = None) -> bool:
        """One attempt to take or keep the lease; True when this identity holds it afterwards.

        The whole attempt (GET, then PUT or POST) must finish within `timeout` seconds (default: the
        renew deadline). On success `last_success_sent` holds the clock reading taken before the first
        request was sent: the renewal counts from then, never from when the answer arrived.
        """
        sent = self.clock()
        deadline = sent + (self.renew_deadline if timeout is None else timeout)
        now_wall = self.wall_clock()
        if self._renew_in_place(deadline, now_wall):
            self.last_success_sent = sent
            return True
        try:
            lease = self._call("GET", LEASES.path(self.namespace, self.name), deadline)
        except NotFoundError:
            record = LeaseRecord(
                self.identity, int(self.lease_duration), _micro_time(now_wall), _micro_time(now_wall), 0
            )
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": record.to_spec(),
            }
            try:
                created = self._call("POST", LEASES.path(self.namespace), deadline, body)
            except AlreadyExistsError:
                return False
            self._observe(record, created["metadata"]["resourceVersion"])
            self._own_lease = created
            self.last_success_sent = sent
            return True
        current = LeaseRecord.from_lease(lease)
        rv = lease["metadata"]["resourceVersion"]
        if self._observed != current or self._observed_rv is None:
            self._observe(current, rv)
        elif rv != self._observed_rv:
            self._observed_rv = rv
        if not decide(
            identity=self.identity,
            current=current,
            observed_time=self._observed_time,
            now=self.clock(),
            lease_duration=self.lease_duration,
        ):
            self._report_leader(current.holder)
            return False
        if current.holder == self.identity:
            record = LeaseRecord(
                self.identity,
                int(self.lease_duration),
                current.acquire_time,
                _micro_time(now_wall),
                current.transitions,
            )
        else:
            record = LeaseRecord(
                self.identity,
                int(self.lease_duration),
                _micro_time(now_wall),
                _micro_time(now_wall),
                current.transitions + 1,
            )
        lease["spec"] = record.to_spec()
        try:
            updated = self._call("PUT", LEASES.path(self.namespace, self.name), deadline, lease)
        except ApiError as e:
            if e.status == 0:
                raise
            # 409: someone else wrote first; the next attempt re-reads.
            self._log.debug("lease update failed", status=e.status, reason=e.reason)
            return False
        self._observe(record, updated["metadata"]["resourceVersion"])
        self._own_lease = updated
        self.last_success_sent = sent
        return True

    def _renew_in_place(self, deadline: float, now_wall: float) -> bool:
        """The fast path: when the last record seen is our own write, PUT it back with a new renew
        time, without reading first. The resourceVersion makes it fail (409) if anyone wrote since;
        then, as on any other refusal, the caller reads the lease and decides as usual. A transport
        error is raised: the attempt's time is spent either way."""
        own, observed = self._own_lease, self._observed
        if own is None or observed is None or observed.holder != self.identity:
            return False
        if (own.get("metadata") or {}).get("resourceVersion") != self._observed_rv:
            return False
        record = LeaseRecord(
            self.identity,
            int(self.lease_duration),
            observed.acquire_time,
            _micro_time(now_wall),
            observed.transitions,
        )
        lease = {**own, "spec": record.to_spec()}
        try:
            updated = self._call("PUT", LEASES.path(self.namespace, self.name), deadline, lease)
        except ApiError as e:
            if e.status == 0:
                raise
            self._own_lease = None
            self._log.debug("lease renewal in place refused; reading the lease", status=e.status)
            return False
        self._observe(record, updated["metadata"]["resourceVersion"])
        self._own_lease = updated
        return True

    def _observe(self, record: LeaseRecord, rv: str) -> None:
        self._observed, self._observed_rv, self._observed_time = record, rv, self.clock()
        self._report_leader(record.holder)

    def _report_leader(self, holder: str) -> None:
        if holder and holder != self._reported_leader:
            self._reported_leader = holder
            self._log.info("new leader observed", leader=holder)
            if self.on_new_leader:
                self.on_new_leader(holder)

    # ------------------------------------------------------------------ loops
    def run(self, stop: threading.Event) -> None:
        """Block: acquire, then lead until stop is set or leadership is lost; calls the callbacks.

        The lease is not released here: the owner calls `release()` once nothing acts for this leader
        any more (see the module docstring)."""
        if not self._acquire(stop):
            return
        with self._lock:
            self._renewed_at = self.last_success_sent
            self._lost_reason = ""
        self._leading.set()
        MASTER_STATUS.labels(self.name).set(1)
        self._log.info("became leader")
        if self.on_started_leading:
            threading.Thread(target=self.on_started_leading, name="leader-start", daemon=True).start()
        self._renewer = threading.Thread(target=self._renew, args=(stop,), name="leader-renew", daemon=True)
        self._renewer.start()
        try:
            self._watchdog(stop)
        finally:
            self._leading.clear()
            MASTER_STATUS.labels(self.name).set(0)
            if self.on_stopped_leading:
                self.on_stopped_leading()

    def _acquire(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    return True
            except Exception as e:
                self._log.warning("error acquiring the lease", error=str(e))
            stop.wait(self.retry_period * random.uniform(1.0, JITTER))
        return False

    def _watchdog(self, stop: threading.Event) -> None:
        """Return when stop is set or leadership is lost; wakes exactly at the renew deadline, so
        losing it never waits for a renew call that hangs."""
        while not stop.is_set():
            with self._lock:
                renewed, reason = self._renewed_at, self._lost_reason
            if reason:
                self._log.error(reason)
                return
            left = (renewed or 0.0) + self.renew_deadline - self.clock()
            if left <= 0:
                self._log.error(
                    "failed to renew the lease within the renew deadline; leadership lost",
                    renew_deadline=self.renew_deadline,
                )
                return
            stop.wait(min(left, 0.2))

    def _renew(self, stop: threading.Event) -> None:
        with self._lock:
            next_at = (self._renewed_at or 0.0) + self.retry_period
        while not stop.is_set() and self._leading.is_set():
            # A fixed rate from the last successful send: a slow answer does not push the next
            # renewal back, so two slow round trips cannot add up to the renew deadline.
            if stop.wait(max(0.0, next_at - self.clock())) or not self._leading.is_set():
                return
            with self._lock:
                renewed = self._renewed_at or 0.0
            left = renewed + self.renew_deadline - self.clock()
            if left <= 0:
                return
            try:
                ok = self.try_acquire_or_renew(timeout=left)
            except Exception as e:
                self._log.warning("error renewing the lease", error=str(e))
                ok = False
            if not self._leading.is_set():
                return  # the deadline passed meanwhile: a late success must not revive leadership
            if ok:
                with self._lock:
                    self._renewed_at = max(renewed, self.last_success_sent or renewed)
                    next_at = self._renewed_at + self.retry_period
            elif self._observed and self._observed.holder not in ("", self.identity):
                with self._lock:
                    self._lost_reason = (
                        f"the lease is held by another identity ({self._observed.holder}); leadership lost"
                    )
                return
            else:
                next_at = self.clock() + min(self.retry_period, 0.5)

    def release(self, timeout: float | None = None) -> bool:
        """Give the lease up if we hold it: empty holder and a 1 s duration, so a standby takes it
        on its next retry. Call it after `run` returned on a deliberate stop, once nothing acts for
        this leader any more. It waits (bounded) for a renewal in flight to end first and does nothing
        if one is still running, since a renewal after the release would take the lease back."""
        budget = self.renew_deadline if timeout is None else timeout
        deadline = self.clock() + budget
        if self._renewer is not None:
            self._renewer.join(max(0.0, deadline - self.clock()))
            if self._renewer.is_alive():
                self._log.warning("a lease renewal is still running; leaving the lease to expire")
                return False
        try:
            lease = self._call("GET", LEASES.path(self.namespace, self.name), deadline)
            current = LeaseRecord.from_lease(lease)
            if current.holder != self.identity:
                return False
            now = _micro_time(self.wall_clock())
            lease["spec"] = LeaseRecord("", 1, now, now, current.transitions).to_spec()
            self._call("PUT", LEASES.path(self.namespace, self.name), deadline, lease)
            self._log.info("released the lease")
            return True
        except Exception as e:
            self._log.warning("could not release the lease", error=str(e))
            return False


def lease_debug(lease: JSON) -> dict[str, Any]:
    """A loggable summary of a lease."""
    r = LeaseRecord.from_lease(lease)
    return {"holder": r.holder, "renew_time": r.renew_time, "transitions": r.transitions}
