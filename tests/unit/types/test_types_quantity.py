"""Kubernetes quantities parse to exact values, compare by value and serialise exactly as written."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kubevirt_types import QUANTITY_PATTERN, Quantity, QuantityError

pytestmark = pytest.mark.unit


class _Holder(BaseModel):
    size: Quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", Decimal(1024**3)),
        ("64Mi", Decimal(64 * 1024**2)),
        ("1.5Ki", Decimal(1536)),
        ("500m", Decimal("0.5")),
        ("100u", Decimal("0.0001")),
        ("3n", Decimal("0.000000003")),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("12e-1", Decimal("1.2")),
        ("128974848", Decimal(128974848)),
        ("129M", Decimal(129_000_000)),
        ("1k", Decimal(1000)),
        ("2P", Decimal(2 * 10**15)),
        ("1Ei", Decimal(1024**6)),
        ("+5", Decimal(5)),
        ("-5Mi", Decimal(-5 * 1024**2)),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("0", Decimal(0)),
    ],
)
def test_parses_every_suffix_form_to_its_exact_value(text: str, value: Decimal) -> None:
    assert Quantity(text).value == value


@pytest.mark.parametrize("text", ["", "1GB", "1gi", "Gi", "1 Gi", "1.2.3", "e3", "1e", "0x10", "1Mi ", "--1", "1K"])
def test_rejects_what_the_apiserver_rejects(text: str) -> None:
    with pytest.raises(QuantityError, match=re.escape(repr(text))):
        Quantity(text)
    assert re.match(QUANTITY_PATTERN, text) is None


def test_numbers_are_quantities_too() -> None:
    assert Quantity(128974848).value == 128974848
    assert Quantity(0.5) == Quantity("500m")


def test_booleans_are_not_quantities() -> None:
    with pytest.raises(ValidationError, match="not bool"):
        _Holder.model_validate({"size": True})


def test_compares_by_value_across_notations() -> None:
    assert Quantity("1Gi") == Quantity("1073741824") == Quantity(1073741824)
    assert Quantity("1G") < Quantity("1Gi")
    assert Quantity("500m") < Quantity("1") <= Quantity("1000m")
    assert Quantity("2Mi") > Quantity("2M")
    assert max([Quantity("1Mi"), Quantity("2e6"), Quantity("1500k")]) == Quantity("2e6")
    assert len({Quantity("1k"), Quantity("1000"), Quantity("1e3")}) == 1


def test_rounds_up_like_kubernetes() -> None:
    assert Quantity("1.5").as_int() == 2
    assert Quantity("100m").as_milli() == 100
    assert Quantity("0.1m").as_milli() == 1
    assert Quantity("1Gi").as_int() == 1073741824


@pytest.mark.parametrize("raw", ["1Gi", "500m", "1e3", "128974848", 128974848, "0.5", 2, ".5"])
def test_serialises_back_exactly_as_written(raw: str | int) -> None:
    holder = _Holder.model_validate({"size": raw})
    assert holder.model_dump() == {"size": raw}
    assert holder.model_dump(mode="json") == {"size": raw}
    assert str(holder.size) == str(raw)


@given(
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"]),
)
def test_the_parser_accepts_exactly_the_apiserver_pattern(number: str, suffix: str) -> None:
    text = number + suffix
    assert re.match(QUANTITY_PATTERN, text)
    assert Quantity(text).raw == text
