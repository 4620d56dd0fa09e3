"""Kubernetes resource quantities (``1Gi``, ``500m``, ``1e3``, ``128974848``): parsed, compared, kept as written."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import total_ordering
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

#: The apiserver's own quantity grammar, as CRDs for core types carry it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


@total_ordering
class Quantity:
    """A Kubernetes quantity: compares by value (``Quantity("1Gi") == Quantity("1073741824")``) and
    serialises back exactly as it was written, string or number."""

    __slots__ = ("_raw", "_value")

    def __init__(self, raw: str | int | float | Quantity) -> None:
        if isinstance(raw, Quantity):
            raw = raw.raw
        self._raw: str | int | float = raw
        self._value: Decimal = _parse(raw)

    @property
    def raw(self) -> str | int | float:
        """The quantity exactly as written."""
        return self._raw

    @property
    def value(self) -> Decimal:
        """The exact value in base units (bytes, cores, ...)."""
        return self._value

    def as_int(self) -> int:
        """The value in base units rounded up, as Kubernetes' ``Quantity.Value()`` does (bytes for memory)."""
        return math.ceil(self._value)

    def as_milli(self) -> int:
        """The value in thousandths rounded up, as ``Quantity.MilliValue()`` does (millicores for CPU)."""
        return math.ceil(self._value * 1000)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self._value == other._value
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self._value < other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return str(self._raw)

    def __repr__(self) -> str:
        return f"Quantity({self._raw!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda q: q.raw)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }


def _validate(raw: Any) -> Quantity:
    if isinstance(raw, Quantity):
        return raw
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise QuantityError(f"a quantity must be a string or a number, not {type(raw).__name__}")
    return Quantity(raw)


def _parse(raw: str | int | float) -> Decimal:
    if isinstance(raw, bool):
        raise QuantityError("a quantity must be a string or a number, not bool")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise QuantityError(f"{raw!r} is not a quantity")
        return Decimal(repr(raw))
    match = _QUANTITY_RE.match(raw)
    if match is None:
        raise QuantityError(f"{raw!r} is not a quantity (expected e.g. 128974848, 129e6, 129M, 123Mi, 500m)")
    try:
        number = Decimal(match["number"])
        if match["binary"]:
            return number * Decimal(1024 ** _BINARY[match["binary"]])
        if match["decimal"]:
            return number.scaleb(_DECIMAL[match["decimal"]])
        if match["exponent"]:
            exponent: Decimal = Decimal(10) ** Decimal(match["exponent"])
            return number * exponent
    except ArithmeticError as exc:
        raise QuantityError(f"{raw!r} is out of range for a quantity") from exc
    return number
