"""Errors the launcher reports to its callers: which field, why, and what to do."""

from __future__ import annotations

from typing import Any


class LauncherError(Exception):
    """A failure with a machine-readable reason and, when a spec field is to blame, its path."""

    reason = "Internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> LauncherError:
        kinds: dict[str, type[LauncherError]] = {
            k.reason: k for k in (InvalidSpecError, UnsupportedFieldError, VolumeError)
        }
        kind = kinds.get(str(body.get("reason")), LauncherError)
        field = body.get("field")
        return kind(str(body.get("message", "unknown error")), field=str(field) if field else None)


class InvalidSpecError(LauncherError):
    """The VMI spec is malformed or inconsistent (fix the spec)."""

    reason = "InvalidSpec"


class UnsupportedFieldError(LauncherError):
    """The spec asks for something podvirt cannot provide (remove or change the field)."""

    reason = "Unsupported"


class VolumeError(LauncherError):
    """A volume's data is missing or unsafe in the pod (check the volume and its mount)."""

    reason = "VolumeError"
