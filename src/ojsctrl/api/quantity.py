"""Kubernetes resource quantities (``100m``, ``512Mi``, ``1e3``): enough to compare requests with limits,
and to write them in the canonical form the API server stores (so a child holding ``0.5`` CPU compares
equal to what comes back, ``500m``)."""

from __future__ import annotations

import re
from decimal import ROUND_UP, Context, Decimal, InvalidOperation, localcontext

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


_DECIMAL_SUFFIX = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIX = {0: "", 10: "Ki", 20: "Mi", 30: "Gi", 40: "Ti", 50: "Pi", 60: "Ei"}
_BINARY_EXPONENT = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_EXPONENT = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_PARTS_RE = re.compile(r"^([+-]?)0*([0-9]*)(?:\.([0-9]*))?(.*)$")
_INT64_MAX = 2**63 - 1
_NANO = Decimal("1e-9")
_MILLI = Decimal("1e-3")


def canonical_quantity(value: object, *, milli: bool = True) -> str:
    """The string the API server stores for a quantity in a core ResourceList (container resources, a
    PVC's requests), so a child we write compares equal to what comes back.

    Like resource.Quantity: a string already in a canonical-looking form is kept as written (``1Gi``,
    ``1E3``, ``01``); otherwise the value is written in its format's canonical form: binary
    (``Ki``..``Ei``) while it is a whole number of at least 1024 (``1024Mi`` -> ``1Gi``, ``0.5Gi`` ->
    ``512Mi``), decimal SI with the largest power of 1000 that keeps the number whole (``0.5`` ->
    ``500m``, ``2000`` -> ``2k``), an exponent form likewise (``7.5e-1`` -> ``750e-3``). With ``milli``
    (the core/v1 defaulting of every ResourceList) a value finer than a thousandth is rounded up to one.
    """
    number = parse_quantity(value)  # validates
    text = str(value)
    if text == "0":
        return text
    parts = _PARTS_RE.match(text)
    if parts is None:  # parse_quantity accepted it, so never
        raise ValueError("must be a quantity such as 500m, 2 or 512Mi")
    _sign, whole, frac, suffix = parts.groups()
    num, denom = whole or "0", frac or ""
    binary = suffix in _BINARY_EXPONENT
    exponent_form = suffix[:1] in ("e", "E")
    exponent = (
        _BINARY_EXPONENT[suffix]
        if binary
        else int(suffix[1:])
        if exponent_form
        else _DECIMAL_EXPONENT[suffix]
    )
    shifted = num + denom
    kept = False
    scale = 0
    if binary:
        if not denom and 15 - len(num) - int(exponent * 3 / 10) - 1 >= 0:
            fits = int(shifted) << exponent <= _INT64_MAX
            kept = fits and int(shifted) & 0x07 != 0
    elif 18 - len(num) - len(denom) >= 0:
        scale = exponent - len(denom)
        if scale >= -9 and int(shifted) <= _INT64_MAX:
            kept = scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"
    if kept and (not milli or scale >= -3):
        return text
    with localcontext(Context(prec=80)):
        if number != number.quantize(_NANO):
            number = number.quantize(_NANO, rounding=ROUND_UP)
        if milli and number != number.quantize(_MILLI):
            number = number.quantize(_MILLI, rounding=ROUND_UP)
        if number == 0:
            return "0"
        if binary and -1024 < number < 1024:
            binary = False
        if binary and number == number.to_integral_value():
            whole_number, power = int(number), 0
            while whole_number % 1024 == 0 and power < 60:
                whole_number //= 1024
                power += 10
            return f"{whole_number}{_BINARY_SUFFIX[power]}"
        negative, digits, exp = number.normalize().as_tuple()
        mantissa = int("".join(map(str, digits)))
        power10 = int(exp)
        shift = power10 % 3
        mantissa *= 10**shift
        power10 -= shift
        out = f"{'-' if negative else ''}{mantissa}"
        if not exponent_form and power10 in _DECIMAL_SUFFIX:
            return out + _DECIMAL_SUFFIX[power10]
        return out if power10 == 0 else f"{out}e{power10}"
