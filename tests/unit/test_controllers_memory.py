"""Per-object memory of the reconcilers: kept between reconciles, dropped in one call on deletion."""

from __future__ import annotations

from ojsctrl.controllers.children import autoscaler_holds, is_controlled_by
from ojsctrl.controllers.common import condition
from ojsctrl.controllers.memory import ObjectMemory
from ojsctrl.runtime.client import JSON


def test_memory_keeps_each_objects_entries_apart_and_forget_drops_all_of_one() -> None:
    memory = ObjectMemory()
    matched = condition("WorkersMatched", True, "WorkersMatched", "2 of 2")
    memory.set_history("ns/a", ["sample"])
    assert memory.note_scale("ns/a", "2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
    assert memory.note_scale("ns/a", None) == "2026-01-01T00:00:00Z"  # no new scale: the last one stays
    assert memory.matching("ns/a", matched) == matched
    memory.set_polled("ns/a", "ns/cluster")
    memory.set_history("ns/b", ["other"])

    kept = memory.forget("ns/a")
    assert kept is not None
    assert (kept.history, kept.last_scale, kept.matching, kept.polled_cluster) == (
        ["sample"],
        "2026-01-01T00:00:00Z",
        matched,
        "ns/cluster",
    )
    assert memory.history("ns/a") is None and memory.matching("ns/a", None) is None
    assert memory.history("ns/b") == ["other"]
    assert memory.forget("ns/gone") is None


def test_polled_cluster_is_taken_once() -> None:
    memory = ObjectMemory()
    memory.set_polled("ns/w", "ns/c")
    assert memory.take_polled("ns/w") == "ns/c"
    assert memory.take_polled("ns/w") is None
    assert memory.take_polled("ns/never") is None


def test_dropping_matching_keeps_the_rest() -> None:
    memory = ObjectMemory()
    memory.note_scale("ns/w", "t1")
    memory.matching("ns/w", condition("WorkersMatched", False, "WorkerIdsUnmatched"))
    memory.drop_matching("ns/w")
    assert memory.matching("ns/w", None) is None
    assert memory.note_scale("ns/w", None) == "t1"


def test_ownership_and_autoscaler_helpers() -> None:
    owned = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}}
    foreign = {"metadata": {"ownerReferences": [{"uid": "u2", "controller": True}]}}
    plain = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "ojsctrl"}}}
    assert is_controlled_by(owned, "u1")
    assert not is_controlled_by(foreign, "u1")
    assert not is_controlled_by(plain, "u1")  # the managed-by label alone proves nothing
    assert not is_controlled_by(None, "u1")
    held = {"metadata": {"annotations": {"ojs.openjobspec.dev/autoscaler": "true"}}}
    assert autoscaler_holds(held) and not autoscaler_holds(plain) and not autoscaler_holds(None)


def test_a_worker_may_wait_for_its_key_until_a_reconcile_says_otherwise() -> None:
    memory = ObjectMemory()
    assert memory.may_wait_for_key("ns/w")  # not reconciled by this process yet: it may
    assert memory.note_waiting_for_key("ns/w", True) == 1
    assert memory.note_waiting_for_key("ns/w", True) == 2  # waits in a row are counted
    assert memory.may_wait_for_key("ns/w")
    assert memory.note_waiting_for_key("ns/w", False) == 0
    assert not memory.may_wait_for_key("ns/w")
    assert memory.note_waiting_for_key("ns/w", True) == 1  # a new wait starts the count again
    memory.forget("ns/w")
    assert memory.may_wait_for_key("ns/w")  # a new object of that name starts afresh


def test_the_api_key_safety_net_backs_off() -> None:
    from ojsctrl.controllers.worker import api_key_recheck

    rechecks = [api_key_recheck(n) for n in (1, 2, 3, 4, 5, 100)]
    assert rechecks == [300.0, 600.0, 1200.0, 1800.0, 1800.0, 1800.0]
    assert api_key_recheck(0) == 300.0


def _dep(uid: str, generation: int, replicas: int) -> JSON:
    return {"metadata": {"uid": uid, "generation": generation}, "spec": {"replicas": replicas}}


def test_fresher_shows_our_replicas_write_until_the_cache_catches_up() -> None:
    """A reconcile right after a scaling reads the Deployment as the write returned it while the cache
    still shows the older generation; once the cache shows the write (or another object, or none) the
    cache is read again and the overlay is gone."""
    m = ObjectMemory()
    old, written = _dep("u1", 3, 1), _dep("u1", 4, 2)
    assert m.fresher("ns/w", old) is old  # nothing written
    m.note_written("ns/w", written)
    assert m.fresher("ns/w", old) is written
    caught_up = _dep("u1", 4, 2)
    assert m.fresher("ns/w", caught_up) is caught_up
    assert m.fresher("ns/w", old) is old, "the overlay ends once the cache showed the write"
    m.note_written("ns/w", written)
    other = _dep("u2", 1, 1)  # recreated under the same name
    assert m.fresher("ns/w", other) is other
    m.note_written("ns/w", written)
    assert m.fresher("ns/w", None) is None
    assert m.fresher("ns/w", old) is old


def test_a_deferred_status_is_taken_once() -> None:
    m = ObjectMemory()
    assert m.take_deferred_status("ns/w") is False
    assert m.deferred_status_since("ns/w") is None
    m.defer_status("ns/w", 5.0)
    m.defer_status("ns/w", 7.0)  # a second scaling before the status: the first one's time stays
    assert m.deferred_status_since("ns/w") == 5.0
    assert m.take_deferred_status("ns/w") is True
    assert m.take_deferred_status("ns/w") is False
    assert m.deferred_status_since("ns/w") is None


def test_a_spec_is_validated_once_per_generation_of_the_same_object() -> None:
    memory = ObjectMemory()
    assert not memory.spec_validated("ns/w", "u1", 1)
    memory.note_spec_valid("ns/w", "u1", 1)
    assert memory.spec_validated("ns/w", "u1", 1)
    assert not memory.spec_validated("ns/w", "u1", 2)  # the spec changed
    assert not memory.spec_validated("ns/w", "u2", 1)  # deleted and made again under the same name
    memory.forget("ns/w")
    assert not memory.spec_validated("ns/w", "u1", 1)
