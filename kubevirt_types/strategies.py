"""Hypothesis strategies for every kubevirt.io/v1 model, derived from the models themselves.

For property tests in any component (e.g. "every VMI spec converts to a valid domain XML"):
``from_model(VirtualMachineInstanceSpec)`` draws valid instances that respect field constraints and the
models' cross-field rules. Needs the ``dev`` extra (hypothesis); nothing in podvirt imports it at run time.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import annotated_types
from hypothesis import strategies as st
from pydantic import BaseModel

from ._base import UNIQUE_NAMES, Exclusive, KubeModel, OneOf
from .quantity import Quantity

M = TypeVar("M", bound=BaseModel)

#: Lists and maps stay short so that whole VirtualMachines remain cheap to draw and to send.
MAX_COLLECTION = 3
_NAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=16)
_QUANTITY = st.one_of(
    st.integers(min_value=0, max_value=2**40).map(Quantity),
    st.builds(
        lambda number, suffix: Quantity(f"{number}{suffix}"),
        st.decimals(min_value=0, max_value=99999, places=2, allow_nan=False, allow_infinity=False),
        st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "E-2"]),
    ),
)
_TIMESTAMP = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=0)
)


def from_model(model: type[M], depth: int = 0) -> st.SearchStrategy[M]:
    """Valid instances of ``model``; optional fields get rarer the deeper they are nested."""
    return _model(model, depth)


@st.composite
def _model(draw: st.DrawFn, model: type[M], depth: int) -> M:
    rules = model.rules if issubclass(model, KubeModel) else ()
    ruled = {name for rule in rules for name in _rule_attributes(rule)}
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in ruled:
            continue
        if not info.is_required():
            if info.default_factory is None and info.default is not None:
                continue  # a fixed value such as apiVersion or kind
            if not draw(_present(depth)):
                continue
        values[name] = draw(_for_type(info.annotation, info.metadata, depth + 1))
    for rule in rules:
        attributes = _rule_attributes(rule)
        required = isinstance(rule, OneOf) and rule.required
        choices: list[str | None] = [*attributes] if required else [None, *attributes]
        chosen = draw(st.sampled_from(choices))
        if chosen is not None and chosen not in values:
            info = model.model_fields[chosen]
            values[chosen] = draw(_for_type(info.annotation, info.metadata, depth + 1))
    return model(**values)


def _rule_attributes(rule: OneOf | Exclusive) -> tuple[str, ...]:
    return rule.attributes if isinstance(rule, OneOf) else (rule.first, rule.second)


def _present(depth: int) -> st.SearchStrategy[bool]:
    return st.integers(min_value=0, max_value=depth // 2).map(lambda n: n == 0)


def _for_type(annotation: Any, metadata: list[Any], depth: int) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _for_type(args[0], [*metadata, *annotation.__metadata__], depth)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            return _for_type(members[0], metadata, depth)
        return st.one_of(*(_for_type(member, [], depth) for member in members))
    if origin is typing.Literal:
        return st.sampled_from(args)
    bounds = _bounds(metadata)
    if origin is list:
        size = min(bounds.get("max_length", MAX_COLLECTION), MAX_COLLECTION)
        if UNIQUE_NAMES in metadata:
            return st.lists(_for_type(args[0], [], depth), max_size=size, unique_by=lambda item: item.name)
        return st.lists(_for_type(args[0], [], depth), max_size=size)
    if origin is dict:
        return st.dictionaries(_NAME, _for_type(args[1], [], depth), max_size=MAX_COLLECTION)
    if isinstance(annotation, type):
        return _for_class(annotation, bounds, depth)
    raise TypeError(f"no strategy for {annotation!r}")


def _for_class(cls: type, bounds: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if issubclass(cls, BaseModel):
        return _model(cls, depth)
    if issubclass(cls, Enum):
        return st.sampled_from(list(cls))
    if cls is bool:
        return st.booleans()
    if cls is int:
        return st.integers(min_value=bounds.get("ge", -(2**31)), max_value=bounds.get("le", 2**31 - 1))
    if cls is str:
        if "pattern" in bounds:
            return st.from_regex(bounds["pattern"], fullmatch=True)
        return _TEXT.filter(lambda text: len(text) >= bounds.get("min_length", 0)).map(
            lambda text: text[: bounds.get("max_length")]
        )
    if cls is Quantity:
        return _QUANTITY
    if cls is datetime:
        return _TIMESTAMP
    raise TypeError(f"no strategy for {cls!r}")


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["ge"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["le"] = item.le
        elif isinstance(item, annotated_types.MaxLen):
            bounds["max_length"] = item.max_length
        elif isinstance(item, annotated_types.MinLen):
            bounds["min_length"] = item.min_length
        elif getattr(item, "pattern", None) is not None:
            bounds["pattern"] = item.pattern
    return bounds
