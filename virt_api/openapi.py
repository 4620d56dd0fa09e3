"""Request-body schemas for the OpenAPI document, for routes that read their bodies themselves.

The admission and subresource routes parse their bodies by hand (bounded, with Kubernetes-style
errors), so FastAPI cannot infer the body; these entries describe it anyway, for clients and for
schemathesis, which generates bodies from them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, definitions) for v in node]
    return node


def body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body of ``model`` (its schema inlined, without ``$defs``)."""
    schema = model.model_json_schema(by_alias=True)
    inlined = _inline(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": inlined}}}}
