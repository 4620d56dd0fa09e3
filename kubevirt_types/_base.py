"""The base of every kubevirt.io/v1 model: camelCase on the wire, unknown fields rejected, cross-field rules.

A cross-field rule is declared once, on the model, and enforced twice: by pydantic when podvirt parses an
object and, as a CEL ``x-kubernetes-validations`` entry in the generated CRD, by the apiserver itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


@dataclass(frozen=True)
class OneOf:
    """At most one (or, with ``required``, exactly one) of the named attributes may be set."""

    attributes: tuple[str, ...]
    required: bool = False

    def wire_names(self, model: type[BaseModel]) -> list[str]:
        return [model.model_fields[name].alias or name for name in self.attributes]

    def cel(self, model: type[BaseModel]) -> dict[str, str]:
        names = self.wire_names(model)
        count = " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in names)
        return {"rule": f"{count} {'==' if self.required else '<='} 1", "message": self._message(names)}

    def violation(self, obj: BaseModel) -> str | None:
        set_count = sum(getattr(obj, name) is not None for name in self.attributes)
        if set_count > 1 or (self.required and set_count == 0):
            return self._message(self.wire_names(type(obj)))
        return None

    def _message(self, names: list[str]) -> str:
        listed = ", ".join(names)
        return f"exactly one of {listed} must be set" if self.required else f"at most one of {listed} may be set"


@dataclass(frozen=True)
class Exclusive:
    """Two attributes that must not be set together; ``message`` tells the user which one to keep."""

    first: str
    second: str
    message: str

    def cel(self, model: type[BaseModel]) -> dict[str, str]:
        first, second = (model.model_fields[n].alias or n for n in (self.first, self.second))
        return {"rule": f"!(has(self.{first}) && has(self.{second}))", "message": self.message}

    def violation(self, obj: BaseModel) -> str | None:
        both = getattr(obj, self.first) is not None and getattr(obj, self.second) is not None
        return self.message if both else None


Rule = OneOf | Exclusive


#: Field descriptions come from attribute docstrings, which pydantic reads from the source files at import
#: (about 0.07 s of CPU per process for these models). The CRD generator and virt-api's OpenAPI document
#: need them; a process that only validates (the launcher's preparation child, started once per VM) sets
#: ``PODVIRT_FIELD_DOCS=0`` and gets the same models without descriptions.
FIELD_DOCS = os.environ.get("PODVIRT_FIELD_DOCS", "1") != "0"


class KubeModel(BaseModel):
    """A kubevirt.io/v1 (or core/v1) object shape. Attribute docstrings become field descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=FIELD_DOCS,
        # Validators are built on first use: a process that only reads VMIs never pays for the other kinds.
        defer_build=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            problem = rule.violation(self)
            if problem is not None:
                raise ValueError(problem)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target.setdefault("x-kubernetes-validations", []).extend(rule.cel(cls) for rule in cls.rules)
        return schema


_Named = TypeVar("_Named")


def _unique_names(items: list[_Named]) -> list[_Named]:
    seen: set[str] = set()
    for item in items:
        name: str = getattr(item, "name")  # noqa: B009 - every list this guards has items with a name
        if name in seen:
            raise ValueError(f"duplicate name {name!r}: names in this list must be unique")
        seen.add(name)
    return items


UNIQUE_NAMES = AfterValidator(_unique_names)
"""Validator for lists of named items (disks, volumes, ...): a name may appear once."""

LIST_MAP_BY_NAME: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
"""The same rule for the apiserver: the list is a map keyed by name (server-side apply merges by name too)."""


def to_wire(obj: BaseModel) -> dict[str, Any]:
    """The object as Kubernetes JSON: camelCase keys, no nulls, quantities as written, enums as strings."""
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
