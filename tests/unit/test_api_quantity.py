"""Canonical quantities (the API server's agreement is checked in tests/e2e/cluster/test_quantities.py)."""

from __future__ import annotations

import pytest

from ojsctrl.api.quantity import canonical_quantity, parse_quantity
from ojsctrl.builders.common import canonical_resources


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("0.5", "500m"),
        ("500m", "500m"),
        ("2000", "2k"),
        ("1500", "1500"),
        ("1024Mi", "1Gi"),
        ("0.5Gi", "512Mi"),
        ("1.5Gi", "1536Mi"),
        ("1.1Gi", "1181116006400m"),  # not a whole number of bytes: decimal
        ("1023Ki", "1023Ki"),
        ("512", "512"),
        ("1e3", "1e3"),
        ("1.5e3", "1500"),
        ("1E3", "1E3"),  # canonical-looking strings are kept as written
        ("01", "01"),
        ("7.5e-1", "750e-3"),
        ("1000M", "1G"),
        (2, "2"),
        ("0", "0"),
        ("0.0000000001", "1m"),  # ResourceLists are rounded up to a milli unit
        ("+1", "+1"),
        ("0.001Ki", "1024m"),
        ("1.0", "1"),
    ],
)
def test_canonical_quantity(given: str | int, stored: str) -> None:
    assert canonical_quantity(given) == stored
    assert parse_quantity(stored) >= parse_quantity(given)


def test_without_milli_rounding_nano_is_the_floor() -> None:
    assert canonical_quantity("0.0000000001", milli=False) == "1n"
    assert canonical_quantity("1500u", milli=False) == "1500u"
    assert canonical_quantity("1500u") == "2m"


def test_canonical_resources_keeps_everything_else() -> None:
    given = {"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": 1}, "claims": [{"name": "g"}]}
    out = canonical_resources(given)
    assert out == {
        "limits": {"cpu": "500m", "memory": "1Gi"},
        "requests": {"cpu": "1"},
        "claims": [{"name": "g"}],
    }
    assert given["limits"] == {"cpu": "0.5", "memory": "1024Mi"}  # a copy
    assert canonical_resources(None) == {}
    assert canonical_resources({"limits": {"cpu": "lots"}}) == {"limits": {"cpu": "lots"}}
