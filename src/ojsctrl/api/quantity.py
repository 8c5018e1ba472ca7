"""Kubernetes resource quantities (``100m``, ``512Mi``, ``1e3``), enough to compare requests with limits."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# The pattern controller-gen and the embedded Kubernetes schemas use for resource.Quantity strings.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
    r"(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SPLIT_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Kubernetes caps quantities at 2^63-1 in magnitude; an exponent beyond this is never a real quantity.
_MAX_EXPONENT = 40


def parse_quantity(value: object) -> Decimal:
    """Parse a quantity (string or integer) into its numeric value.

    Raises ``ValueError`` when ``value`` is not a quantity the API server accepts in a CRD (booleans and
    floats are rejected: the embedded schema is integer-or-string).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a quantity such as 500m, 2 or 512Mi")
    if isinstance(value, int):
        return Decimal(value)
    match = _SPLIT_RE.match(value)
    if not _QUANTITY_RE.fullmatch(value) or match is None:
        raise ValueError("must be a quantity such as 500m, 2 or 512Mi")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
        if suffix in _BINARY:
            return base * _BINARY[suffix]
        if suffix in _DECIMAL:
            return base * _DECIMAL[suffix]
        exponent = int(suffix[1:])
    except (InvalidOperation, ValueError) as exc:
        raise ValueError("must be a quantity such as 500m, 2 or 512Mi") from exc
    if abs(exponent) > _MAX_EXPONENT:
        raise ValueError("is out of range for a quantity")
    return base.scaleb(exponent)
