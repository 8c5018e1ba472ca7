"""The OJS conformance cases that cover what the operator reads, replayed against the test double.

Suites (``shared/reference/ojs-conformance/suites``): the admin API, backpressure, graceful shutdown, worker
heartbeat, queue operations (stats), and the health and manifest cases of level 0. Where a case and the
real servers disagree the double answers as the servers do; such a case is listed in ``DISAGREEMENTS``
with the step where it fails and why, and the test asserts that it fails exactly there: a case that starts
passing, or fails elsewhere, fails the test (nothing is skipped). ``tests/ojsserver/README.md`` carries the
same list; ``hack/compare-ojs-server.py --conformance`` replays these cases against a real server too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import urllib3

from tests.ojsserver import OJSTestServer, conformance_dir
from tests.ojsserver.replay import load_cases, run_case

SUITES_DIR = Path(conformance_dir())
SUITES = (
    "ext-admin-api",
    "ext-backpressure",
    "ext-graceful-shutdown",
    "level-1-reliable/worker",
    "level-4-advanced/queue-ops",
)
SINGLE_CASES = (
    "level-0-core/operations/health-endpoint.json",
    "level-0-core/operations/manifest-endpoint.json",
)
CASES = load_cases(SUITES_DIR, SUITES, SINGLE_CASES) if SUITES_DIR.is_dir() else []
API_KEY = "conformance-key"

_NO_BEAT = "no server routes POST /ojs/v1/workers/beat (ojs-backend-redis: internal/server/server.go)"
_NO_CONFIG = (
    "no server routes PUT /ojs/v1/admin/queues/{name}/config: backpressure is not implemented "
    "(ojs-backend-redis: internal/server/server.go)"
)
_STATE_ACTIVE = (
    "servers answer a heartbeat with state 'active' and put the directive in 'directive' "
    "(ojs-backend-redis: internal/redis/workers.go)"
)
# test_id -> (the first step that fails against the servers' behaviour, why).
DISAGREEMENTS: dict[str, tuple[str, str]] = {
    "EXT-BP-001": ("step-1", _NO_CONFIG),
    "EXT-BP-002": ("step-1", _NO_CONFIG),
    "EXT-BP-003": ("step-1", _NO_CONFIG),
    "EXT-BP-004": ("step-1", _NO_CONFIG + "; stats are {'queue': {...}} without depth"),
    "EXT-BP-005": ("step-1", _NO_CONFIG),
    "EXT-GS-001": ("step-1", _NO_BEAT),
    "EXT-GS-002": ("step-1", _NO_BEAT + " nor GET /ojs/v1/workers/{id}/health"),
    "EXT-GS-003": ("step-2", _NO_BEAT),
    "L0-OPS-019": (
        "step-1",
        "specversion is core.OJSVersion '1.0.0-rc.1', not '1.0' (ojs-backend-redis: internal/core/job.go)",
    ),
    "L1-WRK-001": ("step-3", _STATE_ACTIVE + "; the case expects 'running'"),
    "L1-WRK-002": ("step-3", _STATE_ACTIVE + "; the case expects state 'quiet'"),
    "L1-WRK-003": ("step-3", _STATE_ACTIVE + "; the case expects state 'terminate'"),
}


def _case_id(path: Path) -> str:
    return str(path.relative_to(SUITES_DIR).with_suffix(""))


@pytest.fixture(scope="module")
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager()


def test_suites_are_present() -> None:
    # CI has shared/ beside the repository: a missing tree is a failure, not a skip.
    assert SUITES_DIR.is_dir(), f"conformance suites not found at {SUITES_DIR}"
    per_suite = Counter(str(p.parent.relative_to(SUITES_DIR)) for p in CASES)
    assert per_suite == {
        "ext-admin-api": 6,
        "ext-backpressure": 5,
        "ext-graceful-shutdown": 3,
        "level-1-reliable/worker": 3,
        "level-4-advanced/queue-ops": 3,
        "level-0-core/operations": 2,
    }


def test_every_disagreement_names_a_replayed_case() -> None:
    ids = {json.loads(p.read_text())["test_id"] for p in CASES}
    assert set(DISAGREEMENTS) <= ids


@pytest.mark.parametrize("path", CASES, ids=[_case_id(p) for p in CASES])
def test_conformance_case(path: Path, http: urllib3.PoolManager) -> None:
    case = json.loads(path.read_text())
    with OJSTestServer(api_key=API_KEY) as server:
        failures = run_case(case, server.base_url, http, API_KEY)
    expected = DISAGREEMENTS.get(case["test_id"])
    if expected is None:
        assert failures == [], f"{case['test_id']}: {failures}"
        return
    step, why = expected
    assert failures, f"{case['test_id']} now passes; the documented disagreement ({why}) is gone"
    assert failures[0][0] == step, f"{case['test_id']} fails at {failures[0]}, documented at {step}: {why}"
