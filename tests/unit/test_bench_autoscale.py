"""The autoscaling benchmark's pure parts: policy names and where a point lies against the depth frontier."""

from __future__ import annotations

from typing import Any

import pytest

from bench.autoscale_bench import Policy, depth_frontier, duration_s, frontier_verdict


def run(cost: float, p95: float) -> dict[str, Any]:
    return {"pod_seconds": cost, "wait_p95": p95}


DEPTH = {
    "keda-5": run(1000, 5),
    "queueDepth-10": run(800, 10),
    "keda-20": run(600, 30),
    "queueDepth-20": run(900, 20),  # dominated by queueDepth-10: not on the frontier
    "queueDepth-5+nodrain": run(100, 1),  # drain off is not a depth policy of the frontier
}


def test_policy_names() -> None:
    assert Policy.parse("waitTime-30s+nodrain") == Policy("waitTime", "30s", drain=False)
    assert Policy.parse("keda-5").name == "keda-5"
    assert Policy.parse("queueDepth-5+nodrain").slug == "queuedepth-5-nodrain"
    for bad in ("keda-5+nodrain", "waitTime-30s+fast", "hpa-5", "waitTime"):
        with pytest.raises(ValueError, match="policy"):
            Policy.parse(bad)


def test_frontier_keeps_only_undominated_depth_points() -> None:
    assert depth_frontier(DEPTH) == [(600, 30), (800, 10), (1000, 5)]


@pytest.mark.parametrize(
    ("point", "verdict"),
    [
        (run(700, 12), "below"),  # the frontier is at 20 s for 700 replica-s
        (run(700, 25), "above"),
        (run(850, 15), "above"),  # queueDepth-10 is cheaper and shorter
        (run(500, 30), "below"),  # cheaper than all at the cheapest's p95
        (run(500, 40), "beyond the cheap end"),
        (run(1200, 3), "beyond the dear end"),
    ],
)
def test_verdict(point: dict[str, Any], verdict: str) -> None:
    runs = {**DEPTH, "waitTime-30s": point}
    assert frontier_verdict(runs, "waitTime-30s").startswith(verdict)


def test_duration() -> None:
    assert duration_s("1m30s") == 90.0
    assert duration_s("45s") == 45.0
