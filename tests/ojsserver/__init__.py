"""A protocol-faithful OJS server for tests (the one test double the architecture allows)."""

from tests.ojsserver.server import FailMode, OJSTestServer, RecordedRequest, conformance_dir, uuid7

__all__ = ["FailMode", "OJSTestServer", "RecordedRequest", "conformance_dir", "uuid7"]
