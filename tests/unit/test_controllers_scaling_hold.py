"""The status of a scaling waits for its rollout's end while the rollout goes well (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from ojsctrl.controllers.cluster_status import StatusResult
from ojsctrl.controllers.worker_status import scaling_status_hold

GRACE = 30.0  # --status-min-interval

HEALTHY = {"phase": "Running", "observedGeneration": 3}


def result(phase: str) -> StatusResult:
    return StatusResult(phase, [], {})


@pytest.mark.parametrize(
    ("deferred_at", "now", "phase", "previous", "generation", "held"),
    [
        # The rollout of a scaling written 2 s ago goes on: the status waits the rest of the grace.
        (100.0, 102.0, "Scaling", HEALTHY, 3, GRACE - 2.0),
        (100.0, 102.0, "Scaling", {**HEALTHY, "phase": "Scaling"}, 3, GRACE - 2.0),
        # The grace is over: the Scaling status is written.
        (100.0, 100.0 + GRACE, "Scaling", HEALTHY, 3, None),
        # The rollout ended: its status carries the scaling, now.
        (100.0, 101.0, "Running", HEALTHY, 3, None),
        # Something is wrong, or a drain runs: news, written at once.
        (100.0, 101.0, "Error", HEALTHY, 3, None),
        (100.0, 101.0, "Degraded", HEALTHY, 3, None),
        (100.0, 101.0, "Draining", HEALTHY, 3, None),
        # No scaling waits: nothing to hold.
        (None, 101.0, "Scaling", HEALTHY, 3, None),
        # The spec changed (observedGeneration moves): written at once.
        (100.0, 101.0, "Scaling", HEALTHY, 4, None),
        # The status on record is not a healthy one (a problem that clears is news), or there is none.
        (100.0, 101.0, "Scaling", {"phase": "Error", "observedGeneration": 3}, 3, None),
        (100.0, 101.0, "Scaling", {}, 3, None),
    ],
)
def test_a_scaling_status_is_held_only_while_its_rollout_goes_well(
    deferred_at: float | None,
    now: float,
    phase: str,
    previous: dict[str, Any],
    generation: int,
    held: float | None,
) -> None:
    got = scaling_status_hold(deferred_at, now, result(phase), previous, generation, GRACE)
    assert got == (None if held is None else pytest.approx(held))
