"""What a reconciler remembers about each object between reconciles, dropped in one call when the object
is deleted."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ojsctrl.runtime.client import JSON


@dataclass(slots=True)
class Remembered:
    """What a reconciler keeps about one object between reconciles (slots: one per object, no __dict__)."""

    history: Any = None  # the autoscaler's recent samples and decisions
    last_scale: str | None = None  # RFC 3339 time of the last scale ojsctrl wrote
    matching: JSON | None = None  # a worker's last WorkersMatched condition
    polled_cluster: str | None = None  # the cluster key a worker asked the poller for
    estimator: Any = None  # a worker's wait-time Estimator (ojs/waittime.py)
    startup: Any = None  # a worker's StartupTracker (ojs/waittime.py)
    autoscaling_reason: str | None = None  # the reason of the last autoscaling decision, for its event
    key_waits: int | None = None  # a worker's reconciles in a row that waited for its cluster's API key
    written: JSON | None = None  # a worker's Deployment as its last replicas write returned it
    # Monotonic time of the earliest scaling whose status write waits for a bookkeeping reconcile.
    status_deferred_at: float | None = None
    valid_spec: tuple[str, int] | None = None  # (uid, generation) whose name and spec passed validation


class ObjectMemory:
    """Per-object memory of a reconciler, keyed by ``namespace/name``; ``forget`` drops all of it when
    the object is deleted (together with its poller registration and metrics)."""

    def __init__(self) -> None:
        self._entries: dict[str, Remembered] = {}
        self._lock = threading.Lock()

    def _entry(self, key: str) -> Remembered:
        return self._entries.setdefault(key, Remembered())

    def history(self, key: str) -> Any:
        """The autoscaler history, or None."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.history if entry else None

    def set_history(self, key: str, history: Any) -> None:
        """Keep the autoscaler history (None drops it)."""
        with self._lock:
            self._entry(key).history = history

    def wait_state(self, key: str) -> tuple[Any, Any]:
        """A worker's (estimator, start-up tracker), each None when none is kept."""
        with self._lock:
            entry = self._entries.get(key)
            return (entry.estimator, entry.startup) if entry else (None, None)

    def set_wait_state(self, key: str, estimator: Any, startup: Any) -> None:
        """Keep a worker's estimator and start-up tracker (None, None drops them)."""
        with self._lock:
            entry = self._entry(key)
            entry.estimator, entry.startup = estimator, startup

    def note_reason(self, key: str, reason: str | None) -> str | None:
        """Remember the reason of this autoscaling decision; return the one remembered before (None when
        none was: then the status tells what the last one was)."""
        with self._lock:
            entry = self._entry(key)
            before, entry.autoscaling_reason = entry.autoscaling_reason, reason
            return before

    def note_scale(self, key: str, scaled_at: str | None) -> str | None:
        """Remember a scale just written (if any); return the last one known.

        Kept in memory because the cached object may not show our last status write yet, and a status
        apply without the field would remove it."""
        with self._lock:
            entry = self._entry(key)
            if scaled_at:
                entry.last_scale = scaled_at
            return entry.last_scale

    def matching(self, key: str, now: JSON | None) -> JSON | None:
        """Remember this reconcile's WorkersMatched condition (if any); return the last one known."""
        with self._lock:
            entry = self._entry(key)
            if now is not None:
                entry.matching = now
            return entry.matching

    def drop_matching(self, key: str) -> None:
        """Forget the WorkersMatched condition (drain is off)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.matching = None

    def set_polled(self, key: str, cluster_key: str) -> None:
        """Remember which cluster's stats the object asked the poller for."""
        with self._lock:
            self._entry(key).polled_cluster = cluster_key

    def take_polled(self, key: str) -> str | None:
        """The cluster key the object asked the poller for, forgotten as it is returned."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            polled, entry.polled_cluster = entry.polled_cluster, None
            return polled

    def note_waiting_for_key(self, key: str, waiting: bool) -> int:
        """Remember whether the object's last reconcile waited for its cluster's API key; returns how many
        reconciles in a row have waited (0 when this one did not)."""
        with self._lock:
            entry = self._entry(key)
            entry.key_waits = (entry.key_waits or 0) + 1 if waiting else 0
            return entry.key_waits

    def may_wait_for_key(self, key: str) -> bool:
        """Whether the object's last reconcile waited for the API key, or none is known (not reconciled by
        this process yet): such objects read their cluster's Ready condition."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is None or entry.key_waits != 0

    def note_written(self, key: str, deployment: JSON) -> None:
        """Remember the Deployment as a replicas write returned it, until the cache shows that write."""
        with self._lock:
            self._entry(key).written = deployment

    def fresher(self, key: str, cached: JSON | None) -> JSON | None:
        """``cached``, or the Deployment as our last replicas write returned it while the cache has not
        caught up with that write yet (a lower metadata.generation, same uid): a reconcile right after a
        scaling must not take the old count for the current one and scale again. A cache that shows the
        write (or no Deployment, or another one) ends the overlay."""
        with self._lock:
            entry = self._entries.get(key)
            written = entry.written if entry is not None else None
            if written is None or entry is None:
                return cached
            if (
                cached is not None
                and _meta(written, "uid") == _meta(cached, "uid")
                and int(_meta(written, "generation") or 0) > int(_meta(cached, "generation") or 0)
            ):
                return written
            entry.written = None
            return cached

    def defer_status(self, key: str, now: float) -> None:
        """A scaling was written at ``now`` (monotonic) and its status waits for a bookkeeping reconcile;
        a scaling whose status already waits keeps the earlier time (a status is never held longer than
        its first scaling allows)."""
        with self._lock:
            entry = self._entry(key)
            if entry.status_deferred_at is None:
                entry.status_deferred_at = now

    def deferred_status_since(self, key: str) -> float | None:
        """When the scaling whose status waits was written (monotonic), or None when none waits."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.status_deferred_at

    def take_deferred_status(self, key: str) -> bool:
        """Whether a scaling's status waited for this reconcile (forgotten as it is returned)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.status_deferred_at is None:
                return False
            entry.status_deferred_at = None
            return True

    def spec_validated(self, key: str, uid: str, generation: int) -> bool:
        """Whether this object's name and spec at ``generation`` passed validation already: the spec of a
        generation never changes (the API server bumps it with every spec change), so it is checked once
        per generation, not on every reconcile."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.valid_spec == (uid, generation)

    def note_spec_valid(self, key: str, uid: str, generation: int) -> None:
        """Remember that the object's name and spec at ``generation`` passed validation."""
        with self._lock:
            self._entry(key).valid_spec = (uid, generation)

    def forget(self, key: str) -> Remembered | None:
        """Drop everything about a deleted object; returns what was kept."""
        with self._lock:
            return self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _meta(obj: JSON, field: str) -> Any:
    return (obj.get("metadata") or {}).get(field)
