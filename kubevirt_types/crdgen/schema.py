"""Turn a pydantic JSON schema into a Kubernetes structural OpenAPI v3 schema.

Structural means: every node has a ``type`` (or is int-or-string), ``$ref`` is inlined, optional fields are
plain properties (no ``anyOf`` with null), and nothing Kubernetes rejects (``additionalProperties: false``,
``const``, ``title``, ``default``) remains. Every property must carry a description, so a model field
without a docstring is an error here rather than a silent gap in ``kubectl explain``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

JsonSchema = dict[str, Any]

_KEPT = frozenset(
    {
        "type",
        "description",
        "format",
        "enum",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "required",
        "x-kubernetes-validations",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


class SchemaError(ValueError):
    """The model cannot be expressed as a structural schema."""


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural OpenAPI v3 schema of ``model`` with its wire (camelCase) field names."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _Converter(raw.get("$defs", {})).convert(raw, model.__name__)


class _Converter:
    def __init__(self, definitions: dict[str, JsonSchema]) -> None:
        self._definitions = definitions

    def convert(self, node: JsonSchema, path: str) -> JsonSchema:
        node = self._flatten(node, path)
        out: JsonSchema = {key: value for key, value in node.items() if key in _KEPT}
        if "const" in node:
            out["enum"] = [node["const"]]
            out.setdefault("type", "string")
        if out.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = _INT_OR_STRING
            return out
        if "properties" in node:
            out["type"] = "object"
            out["properties"] = {
                name: self._property(child, f"{path}.{name}") for name, child in node["properties"].items()
            }
            if not out["properties"]:
                del out["properties"]
        elif isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self.convert(node["additionalProperties"], f"{path}[*]")
        if "items" in node:
            out["items"] = self.convert(node["items"], f"{path}[]")
        if "type" not in out:
            raise SchemaError(f"{path}: no type in {node!r}")
        if out.get("required") == []:
            del out["required"]
        return _ordered(out)

    def _property(self, node: JsonSchema, path: str) -> JsonSchema:
        converted = self.convert(node, path)
        if not converted.get("description"):
            raise SchemaError(f"{path}: field has no description (give it a docstring)")
        return converted

    def _flatten(self, node: JsonSchema, path: str) -> JsonSchema:
        """Resolve ``$ref``, drop the null branch of optionals; the outer node's keys win over the target's."""
        node = dict(node)
        for combinator in ("anyOf", "allOf", "oneOf"):
            if combinator not in node:
                continue
            branches = [b for b in node.pop(combinator) if b != {"type": "null"}]
            if combinator == "anyOf" and node.get("x-kubernetes-int-or-string"):
                continue
            if len(branches) != 1:
                if all(b.get("type") in ("integer", "string") for b in branches) and len(branches) == 2:
                    node["x-kubernetes-int-or-string"] = True
                    continue
                raise SchemaError(f"{path}: cannot express a union of {branches!r} structurally")
            node = {**self._flatten(branches[0], path), **node}
        if "$ref" in node:
            name = node.pop("$ref").rsplit("/", 1)[-1]
            target = self._flatten(self._definitions[name], path)
            rules = target.get("x-kubernetes-validations", []) + node.get("x-kubernetes-validations", [])
            node = {**target, **node}
            if rules:
                node["x-kubernetes-validations"] = rules
        return node


_ORDER = ("description", "type", "format", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength")
_LAST = ("properties", "additionalProperties", "items")


def _ordered(node: JsonSchema) -> JsonSchema:
    """Keys in a fixed, readable order: what the field is first, its children last."""
    first = [key for key in _ORDER if key in node]
    last = [key for key in _LAST if key in node]
    middle = sorted(key for key in node if key not in first and key not in last)
    return {key: node[key] for key in (*first, *middle, *last)}
