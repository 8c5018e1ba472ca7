"""Plain values exchanged between the OJS client and the autoscaling decisions.

This module does no I/O and imports nothing but the standard library, so the pure decision code in
``ojsctrl.ojs.autoscale`` can use these types without pulling in an HTTP client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

StatsSource = Literal["admin", "queues"]

# Worker states in which an OJS worker no longer fetches new jobs (OJS graceful-shutdown and admin API).
QUIET_STATES = frozenset(
    {"quiet", "quieted", "drain", "draining", "terminate", "terminating", "shutting_down"}
)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Job counts of one OJS queue: ``available`` (waiting to be fetched), ``active`` (being processed) and
    ``completed`` (a counter of finished jobs; 0 when the server does not report it)."""

    name: str
    available: int = 0
    active: int = 0
    completed: int = 0

    @property
    def load(self) -> int:
        """Jobs that need a worker: waiting plus in progress (design.md §depth-and-load)."""
        return self.available + self.active


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of every queue of one OJS server, as read in one poll.

    ``source`` says which API answered: ``admin`` (``GET /ojs/v1/admin/queues``) or ``queues`` (the fallback
    ``GET /ojs/v1/queues`` plus per-queue stats).
    """

    queues: tuple[QueueCounts, ...] = ()
    source: StatsSource = "admin"
    _by_name: Mapping[str, QueueCounts] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, QueueCounts] = {}
        for q in self.queues:
            if q.name in by_name:
                raise ValueError(f"queue {q.name!r} appears twice")
            by_name[q.name] = q
        # Sorted by name so equal stats compare equal whatever order the server listed them in.
        object.__setattr__(self, "queues", tuple(sorted(self.queues, key=lambda q: q.name)))
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))

    def get(self, name: str) -> QueueCounts | None:
        """The counts of queue ``name``, or None when the server does not know it."""
        return self._by_name.get(name)

    def _select(self, queues: Iterable[str] | None) -> Iterable[QueueCounts]:
        if queues is None:
            return self.queues
        # A queue listed twice by a worker still holds its jobs once; an unknown queue holds none.
        return [q for name in dict.fromkeys(queues) if (q := self._by_name.get(name)) is not None]

    def available(self, queues: Iterable[str] | None = None) -> int:
        """Sum of ``available`` over ``queues`` (all queues when None): the queue depth."""
        return sum(q.available for q in self._select(queues))

    def active(self, queues: Iterable[str] | None = None) -> int:
        """Sum of ``active`` over ``queues`` (all queues when None)."""
        return sum(q.active for q in self._select(queues))

    def load(self, queues: Iterable[str] | None = None) -> int:
        """Sum of ``available + active`` over ``queues``: the worker autoscaler's load (design.md
        §depth-and-load)."""
        return sum(q.load for q in self._select(queues))

    def busiest(self, limit: int = 20) -> tuple[QueueCounts, ...]:
        """At most ``limit`` queues, busiest (highest load) first, ties by name (design.md §depth-and-load: 20
        in status)."""
        return tuple(sorted(self.queues, key=lambda q: (-q.load, q.name))[: max(limit, 0)])


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One OJS worker as ``GET /ojs/v1/admin/workers`` reports it.

    ``id`` is chosen by the worker SDK, never by the operator: the Go SDK uses
    ``worker_<hostname>_<pid>_<unixnano>`` (ojs-go-sdk ``worker.go``), the Python and JS SDKs a random
    ``worker_<hex>``/``worker_<uuid>``. ``state`` is what servers report (``running``, ``quiet`` or
    ``stale``: ojs-backend-redis ``internal/redis/admin_list.go``), ``directive`` what the server will
    answer the worker's next heartbeat (``continue``, ``quiet``). ``hostname`` and ``pod``
    (``metadata.kubernetes_pod``) come from the admin API spec (§9.1); no server returns them today, so
    they are often empty. ``active_jobs`` is a count whether the server sent a number or a list of job ids.
    """

    id: str
    active_jobs: int
    state: str = ""
    directive: str = ""
    hostname: str = ""
    pod: str = ""
    last_heartbeat: float | None = None
    """Seconds since the epoch of the worker's last heartbeat, when the server says (RFC 3339 on the wire)."""

    @property
    def idle(self) -> bool:
        """True when the worker processes no job."""
        return self.active_jobs == 0

    @property
    def quiet(self) -> bool:
        """True when the worker has been told to stop fetching (quiet, draining or shutting down).

        The directive counts too: servers store a quiet call as the directive and a worker only learns it
        from its next heartbeat, so asking again before that would change nothing.
        """
        return self.state.lower() in QUIET_STATES or self.directive.lower() in QUIET_STATES

    def silent_since(self, cutoff: float) -> bool:
        """True when the server reports a last heartbeat older than ``cutoff`` (seconds since the epoch).

        Only redis and kafka mark a silent worker ``stale`` themselves; postgres, nats, sqs and lite keep
        reporting it as running (their ``ListWorkers`` has no staleness check), so the operator judges the
        heartbeat's age itself."""
        return self.last_heartbeat is not None and self.last_heartbeat < cutoff

    @property
    def stale(self) -> bool:
        """True when the server has not heard from the worker lately (no heartbeat for 60 s on the
        reference servers): the process is gone or hung, and its record says nothing about a live pod."""
        return self.state.lower() == "stale"
