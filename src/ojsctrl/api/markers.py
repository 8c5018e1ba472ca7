"""Annotations that carry the CRD-only parts of the schema next to the pydantic fields.

The models are the one source of truth: ``crdgen`` reads these markers from ``Annotated[...]`` metadata to
emit formats, embedded Kubernetes schemas and CEL rules, and the markers that also constrain values
(durations, int-or-percent, quantities) validate in Python with the same rule the CEL expression encodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from ojsctrl.api.durations import DURATION_PATTERN, parse_duration_ns
from ojsctrl.api.quantity import parse_quantity

INT32_MAX = 2**31 - 1
PERCENT_PATTERN = r"^(100|[1-9]?[0-9])%$"
_PERCENT_RE = re.compile(PERCENT_PATTERN)


@dataclass(frozen=True)
class CEL:
    """One ``x-kubernetes-validations`` entry on the node the annotated field or class produces."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def as_schema(self) -> dict[str, str]:
        """The entry as it appears in the CRD."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class K8s:
    """Embed the real Kubernetes schema stored under ``ref`` in ``k8s_schemas.json`` (nothing gets pruned)."""

    ref: str


@dataclass(frozen=True)
class K8sObject:
    """An object whose properties are individual Kubernetes fields, as ``(name, ref)`` pairs."""

    properties: tuple[tuple[str, str], ...]
    minimum_zero: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntFormat:
    """The OpenAPI format of an integer field."""

    format: Literal["int32", "int64"]


@dataclass(frozen=True)
class SchemaExtra:
    """Extra keywords merged into the field's schema node (list markers, ...)."""

    items: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, values: dict[str, Any]) -> SchemaExtra:
        """Build from a dict (keys such as ``x-kubernetes-list-type`` are not identifiers)."""
        return cls(tuple(sorted(values.items())))


@dataclass(frozen=True)
class NoCrdDefault:
    """Keep the model default out of the CRD (it depends on other fields and is applied by the reconciler)."""


@dataclass(frozen=True)
class GoDuration:
    """A non-negative Go-style duration string, optionally bounded."""

    minimum: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate the string as a duration after the plain string check."""
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def validate(self, value: str) -> str:
        """Raise a pydantic error unless ``value`` is an acceptable duration."""
        try:
            ns = parse_duration_ns(value)
        except ValueError as exc:
            raise PydanticCustomError("duration", str(exc)) from None
        if self.minimum is not None and ns < parse_duration_ns(self.minimum):
            raise PydanticCustomError(
                "durationMinimum", "must be at least {minimum}", {"minimum": self.minimum}
            )
        return value

    def cel_rules(self) -> list[CEL]:
        """The CEL rules that encode the same check (the pattern guards ``duration()``)."""
        pattern = DURATION_PATTERN.replace("\\", "\\\\")
        rules = [CEL(f"self.matches('{pattern}')", "must be a duration such as 30s, 5m or 1h30m")]
        if self.minimum is not None:
            rules.append(
                CEL(
                    f"!self.matches('{pattern}') || duration(self) >= duration('{self.minimum}')",
                    f"must be at least {self.minimum}",
                )
            )
        return rules


def _validate_int_or_percent(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT32_MAX:
        return value
    if isinstance(value, str) and _PERCENT_RE.fullmatch(value):
        return value
    raise PydanticCustomError(
        "intOrPercent", "must be a non-negative integer or a percentage from 0% to 100%"
    )


@dataclass(frozen=True)
class IntOrPercent:
    """A Kubernetes int-or-string that is a count or a percentage (PodDisruptionBudget style)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate with a plain function: pydantic's union errors would add type tags to the error path."""
        return core_schema.no_info_plain_validator_function(_validate_int_or_percent)

    def cel_rules(self) -> list[CEL]:
        """The CEL rule that encodes the same check."""
        pattern = PERCENT_PATTERN.replace("\\", "\\\\")
        return [
            CEL(
                f"type(self) == int ? self >= 0 && self <= {INT32_MAX} : self.matches('{pattern}')",
                "must be a non-negative integer or a percentage from 0% to 100%",
            )
        ]


def _validate_quantity(value: Any) -> int | str:
    try:
        parsed = parse_quantity(value)
    except ValueError as exc:
        raise PydanticCustomError("quantity", str(exc)) from None
    if parsed < 0:
        raise PydanticCustomError("nonNegativeQuantity", "must not be negative")
    result: int | str = value
    return result


@dataclass(frozen=True)
class QuantityValue:
    """A Kubernetes resource quantity (``10Gi``); emitted with the embedded Quantity schema."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate with a plain function that accepts exactly what the int-or-string schema accepts."""
        return core_schema.no_info_plain_validator_function(_validate_quantity)


# Every int32 spec field also has its own lower bound (>= 0 or >= 1), so only the upper one is implied here.
Int32 = Annotated[int, IntFormat("int32"), at.Le(INT32_MAX)]
Int64 = Annotated[int, IntFormat("int64")]
Duration = Annotated[str, GoDuration()]
