"""What a status write changed, as ojsctrl_status_writes_total counts it (pure logic)."""

from __future__ import annotations

from ojsctrl.controllers.metrics import changed_parts


def cond(
    type_: str, status: str = "True", reason: str = "R", message: str = "m", at: str = "t0"
) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


def test_changed_parts_names_fields_and_condition_types() -> None:
    live = {
        "phase": "Running",
        "readyReplicas": 1,
        "queueDepth": 0,
        "conditions": [cond("Ready"), cond("Autoscaling", reason="Stable")],
    }
    desired = {
        "phase": "Running",
        "readyReplicas": 2,
        "queueDepth": 15,
        # Ready's transition time alone moved: not a change; Autoscaling's reason did.
        "conditions": [cond("Ready", at="t1"), cond("Autoscaling", reason="ScaledUp"), cond("Available")],
    }
    assert changed_parts(desired, live) == [
        "conditions.Autoscaling",
        "conditions.Available",
        "queueDepth",
        "readyReplicas",
    ]
    assert changed_parts(live, live) == []
    assert changed_parts({"phase": "Pending"}, {}) == ["phase"]
