"""The waitTime metric, fallback and the autoscaling status in the OJSWorker API: CEL (through the API
server's own code) and Python refuse the same specs, each naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ojsctrl.api.validation import validate_worker
from ojsctrl.api.worker import (
    FALLBACK_REFUSED,
    TARGET_WAIT_TIME_REFUSED,
    TARGET_WAIT_TIME_REQUIRED,
    OJSWorker,
    OJSWorkerSpec,
)
from tests.unit.test_api_crds import _BASES, _run_crdcheck, crdcheck  # noqa: F401 (fixture)

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("waitTime with target", {"metric": "waitTime", "targetWaitTime": "30s"}, None),
    ("waitTime scales to zero", {"metric": "waitTime", "targetWaitTime": "2m", "minReplicas": 0}, None),
    ("waitTime without target", {"metric": "waitTime"}, TARGET_WAIT_TIME_REQUIRED),
    ("target without waitTime", {"targetWaitTime": "30s"}, TARGET_WAIT_TIME_REFUSED),
    ("target with cpu", {"metric": "cpu", "targetWaitTime": "30s"}, TARGET_WAIT_TIME_REFUSED),
    ("target below 1s", {"metric": "waitTime", "targetWaitTime": "500ms"}, "must be at least 1s"),
    ("target not a duration", {"metric": "waitTime", "targetWaitTime": "soon"}, "must be a duration"),
    ("fallback", {"fallback": {"failureThreshold": 3, "replicas": 2}}, None),
    (
        "fallback behaviour",
        {"fallback": {"failureThreshold": 1, "replicas": 0, "behavior": "currentReplicasIfHigher"}},
        None,
    ),
    ("fallback threshold 0", {"fallback": {"failureThreshold": 0, "replicas": 2}}, "failureThreshold"),
    ("fallback replicas < 0", {"fallback": {"failureThreshold": 3, "replicas": -1}}, "replicas"),
    ("fallback without replicas", {"fallback": {"failureThreshold": 3}}, "replicas"),
    ("fallback bad behaviour", {"fallback": {"failureThreshold": 3, "replicas": 1, "behavior": "max"}},
     "behavior"),
    ("fallback with cpu", {"metric": "cpu", "fallback": {"failureThreshold": 3, "replicas": 1}},
     FALLBACK_REFUSED),
]  # fmt: skip


def _worker(auto: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(_BASES["OJSWorker"])
    obj["spec"]["autoScaling"] = {"enabled": True, **auto}
    return obj


@pytest.mark.parametrize(("name", "auto", "refusal"), CASES, ids=[c[0] for c in CASES])
def test_python_refuses_naming_the_field(name: str, auto: dict[str, Any], refusal: str | None) -> None:
    result = validate_worker(_worker(auto))
    if refusal is None:
        assert result.errors == [], result.messages()
        spec = OJSWorkerSpec.from_dict(_worker(auto)["spec"])
        assert spec.auto_scaling.metric == auto.get("metric", "queueDepth")
        return
    text = " ".join(f"{e.path}: {e.message}" for e in result.errors)
    assert refusal in text, text
    assert all(e.path.startswith("spec.autoScaling") for e in result.errors), text


def test_cel_and_python_agree_on_wait_time_and_fallback(crdcheck: Path, tmp_path: Path) -> None:  # noqa: F811
    objects = [_worker(auto) for _, auto, _ in CASES]
    results = _run_crdcheck(
        crdcheck, "OJSWorker", [{"obj": copy.deepcopy(o), "old": None} for o in objects], tmp_path
    )
    for (name, _, refusal), result in zip(CASES, results, strict=True):
        if refusal is None:
            assert result["errors"] == [], (name, result)
        else:
            assert result["errors"], name
            assert any(refusal in str(e) for e in result["errors"]), (name, result["errors"])


def test_status_carries_the_autoscaling_block() -> None:
    block = {
        "metric": "waitTime",
        "recommendation": 4,
        "desiredReplicas": 3,
        "reason": "ScaleDownStabilizing",
        "message": "waiting",
        "inputs": {
            "depth": 3,
            "active": 8,
            "arrivalRate": "1.25",
            "serviceTime": "6.4s",
            "startupLatency": "12s",
        },
    }
    obj = OJSWorker.model_validate({**_worker({}), "status": {"autoscaling": block}})
    assert obj.status is not None and obj.status.autoscaling is not None
    assert obj.model_dump(by_alias=True, exclude_none=True, mode="json")["status"]["autoscaling"] == block
