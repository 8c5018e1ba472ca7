"""Unit tests for the pure parts of ojsctrl.runtime.leaderelection: the timing rule and the lease record."""

from __future__ import annotations

from typing import Any, cast

import pytest

from ojsctrl.runtime.client import Client
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
