"""Go-style duration strings (``30s``, ``5m``, ``1h30m``) as the CRDs accept them.

The same regular expression guards ``duration(self)`` in the CRDs' CEL rules, so Python and the API server
accept exactly the same strings. It is stricter than Go's ``time.ParseDuration``: no sign (durations are
non-negative), no ``.5s`` or ``5.s``, and ``0`` is the only unit-less value.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$"
DURATION_MAX_LENGTH = 64

_DURATION_RE = re.compile(DURATION_PATTERN)
_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Go's time.Duration is an int64 count of nanoseconds; CEL's duration() fails beyond it.
_MAX_NS = 2**63 - 1


def parse_duration_ns(value: str) -> int:
    """Parse a duration string into nanoseconds.

    Raises ``ValueError`` for anything the CRDs' CEL rules reject: bad syntax, a sign, or more than Go's
    ``time.Duration`` holds.
    """
    if len(value) > DURATION_MAX_LENGTH or not _DURATION_RE.fullmatch(value):
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    if value == "0":
        return 0
    total = Decimal(0)
    try:
        for number, unit in _PART_RE.findall(value):
            total += Decimal(number) * _UNIT_NS[unit]
    except InvalidOperation as exc:  # pragma: no cover - the pattern only admits decimal numbers
        raise ValueError("must be a duration such as 30s, 5m or 1h30m") from exc
    if total > _MAX_NS:
        raise ValueError("is longer than a duration can hold (about 2562047h)")
    # Go truncates fractional nanoseconds; so do we.
    return int(total)


def parse_duration(value: str) -> timedelta:
    """Parse a duration string into a ``timedelta`` (microsecond precision)."""
    return timedelta(microseconds=parse_duration_ns(value) // 1_000)


def duration_seconds(value: str) -> float:
    """Parse a duration string into seconds."""
    return parse_duration_ns(value) / 1e9


def is_duration(value: object) -> bool:
    """True when ``value`` is a string the CRDs accept as a duration."""
    if not isinstance(value, str):
        return False
    try:
        parse_duration_ns(value)
    except ValueError:
        return False
    return True
