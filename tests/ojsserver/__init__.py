"""A model of the real OJS servers for tests (the one test double the architecture allows)."""

from tests.ojsserver.server import (
    PERSONALITIES,
    FailMode,
    OJSTestServer,
    Personality,
    RecordedRequest,
    conformance_dir,
    shared_dir,
    uuid7,
)

__all__ = [
    "PERSONALITIES",
    "FailMode",
    "OJSTestServer",
    "Personality",
    "RecordedRequest",
    "conformance_dir",
    "shared_dir",
    "uuid7",
]
