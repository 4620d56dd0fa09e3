"""Field errors worded the way the apiserver words them: ``spec.domain.devices.disks[0].name: Not found: "x"``.

Validation builds a list of :class:`FieldError`; :func:`invalid_status` turns it into the ``Status``
(reason ``Invalid``, code 422, one ``cause`` per error) that the apiserver shows the user, so a refused
VirtualMachine reads exactly like a refused Pod.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from pydantic import ValidationError

from kubevirt_types import Quantity


class ErrorType(Enum):
    """The apiserver's field error types: (what it prints, the Status cause type)."""

    NOT_FOUND = ("Not found", "FieldValueNotFound")
    REQUIRED = ("Required value", "FieldValueRequired")
    DUPLICATE = ("Duplicate value", "FieldValueDuplicate")
    INVALID = ("Invalid value", "FieldValueInvalid")
    NOT_SUPPORTED = ("Unsupported value", "FieldValueNotSupported")
    FORBIDDEN = ("Forbidden", "FieldValueForbidden")
    TOO_LONG = ("Too long", "FieldValueTooLong")
    TOO_MANY = ("Too many", "FieldValueTooMany")

    @property
    def text(self) -> str:
        return self.value[0]

    @property
    def cause(self) -> str:
        return self.value[1]


class _Omitted:
    def __repr__(self) -> str:
        return "OMIT"


#: Stands for "no value to show", as the apiserver omits it for Required and Forbidden.
OMIT: Final = _Omitted()
_VALUELESS = (ErrorType.REQUIRED, ErrorType.FORBIDDEN, ErrorType.TOO_LONG)
_MAX_VALUE_TEXT = 120


class FieldPath:
    """A field path such as ``spec.domain.devices.disks[0].name``; immutable, built with ``/``, ``[]``."""

    __slots__ = ("_text",)

    def __init__(self, text: str = "") -> None:
        self._text = text

    def __truediv__(self, name: str) -> FieldPath:
        return FieldPath(f"{self._text}.{name}" if self._text else name)

    def __getitem__(self, index: int | str) -> FieldPath:
        return FieldPath(f"{self._text}[{index}]")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"FieldPath({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldPath) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


#: The path of the object itself.
ROOT: Final = FieldPath()


def render_value(value: object) -> str:
    """A bad value as the apiserver prints it: strings quoted, numbers and booleans bare."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = str(value)
    elif value is None:
        text = "null"
    elif isinstance(value, Quantity):
        text = json.dumps(str(value))
    elif isinstance(value, Enum):
        text = json.dumps(str(value.value))
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _MAX_VALUE_TEXT else text[: _MAX_VALUE_TEXT - 3] + "..."


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: where, what kind, the offending value, and what to do about it."""

    path: FieldPath
    type: ErrorType
    value: object = OMIT
    detail: str = ""

    @property
    def body(self) -> str:
        """The message without the field path (the ``message`` of a Status cause)."""
        text = self.type.text
        if self.type not in _VALUELESS and self.value is not OMIT:
            text += f": {render_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.path}: {self.body}"

    def cause(self) -> dict[str, str]:
        return {"reason": self.type.cause, "message": self.body, "field": str(self.path)}


def not_found(path: FieldPath, value: object, detail: str = "") -> FieldError:
    return FieldError(path, ErrorType.NOT_FOUND, value, detail)


def required(path: FieldPath, detail: str = "") -> FieldError:
    return FieldError(path, ErrorType.REQUIRED, OMIT, detail)


def duplicate(path: FieldPath, value: object, detail: str = "") -> FieldError:
    return FieldError(path, ErrorType.DUPLICATE, value, detail)


def invalid(path: FieldPath, value: object, detail: str) -> FieldError:
    return FieldError(path, ErrorType.INVALID, value, detail)


def not_supported(path: FieldPath, value: object, supported: list[str]) -> FieldError:
    listed = ", ".join(json.dumps(s) for s in supported)
    return FieldError(path, ErrorType.NOT_SUPPORTED, value, f"supported values: {listed}")


def forbidden(path: FieldPath, detail: str) -> FieldError:
    return FieldError(path, ErrorType.FORBIDDEN, OMIT, detail)


def too_long(path: FieldPath, limit: int) -> FieldError:
    return FieldError(path, ErrorType.TOO_LONG, OMIT, f"may not be more than {limit} bytes")


def unsupported_by_podvirt(path: FieldPath, why: str = "") -> FieldError:
    """The wording every refusal of an unimplemented KubeVirt feature uses."""
    detail = f"field {path} is not supported by podvirt"
    return forbidden(path, f"{detail} ({why})" if why else detail)


# Pydantic inserts the branch it tried into ``loc`` for unions and custom validators ("int", "str",
# "function-plain[_validate()]"); those are not field names.
_UNION_TAG = re.compile(r"^[a-z-]+\[.*\]$|^(int|str|float|bool|list|dict|none)$")


def path_from_loc(loc: tuple[int | str, ...], base: FieldPath = ROOT) -> FieldPath:
    path = base
    for part in loc:
        if isinstance(part, int):
            path = path[part]
        elif not _UNION_TAG.match(part):
            path = path / part
    return path


def from_validation_error(exc: ValidationError, base: FieldPath = ROOT) -> list[FieldError]:
    """Pydantic's complaints about an object, as field errors (unknown fields become 'not supported')."""
    errors: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for item in exc.errors(include_url=False):
        path = path_from_loc(tuple(item["loc"]), base)
        kind = item["type"]
        message = str(item.get("msg", ""))
        value: Any = item.get("input", OMIT)
        if kind == "missing":
            error = required(path)
        elif kind == "extra_forbidden":
            error = unsupported_by_podvirt(path, "unknown to podvirt's kubevirt.io/v1 API")
        elif kind in ("enum", "literal_error"):
            expected = str((item.get("ctx") or {}).get("expected", ""))
            error = FieldError(path, ErrorType.NOT_SUPPORTED, value, f"supported values: {expected}")
        elif kind == "value_error":
            # A cross-field rule of the model: the message names the fields; the value is the whole object.
            error = FieldError(path, ErrorType.INVALID, OMIT, message.removeprefix("Value error, "))
        else:
            error = invalid(path, value if isinstance(value, str | int | float | bool) else OMIT, message)
        key = (str(error.path), error.body)
        if key not in seen:  # a union reports one failure per branch
            seen.add(key)
            errors.append(error)
    return errors


def invalid_status(kind: str, name: str | None, errors: list[FieldError], group: str = "kubevirt.io") -> dict[str, Any]:
    """The ``Status`` the apiserver returns for an invalid object (``errors.NewInvalid``)."""
    listed = [str(e) for e in errors]
    summary = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    qualified = f"{kind}.{group}" if group else kind
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{qualified} "{name or ""}" is invalid: {summary}',
        "reason": "Invalid",
        "details": {"name": name or "", "group": group, "kind": kind, "causes": [e.cause() for e in errors]},
        "code": 422,
    }
