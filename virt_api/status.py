"""Kubernetes ``Status`` objects: every error virt-api returns is one, with the reason and code kubectl expects."""

from __future__ import annotations

from typing import Any

GROUP = "kubevirt.io"


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return status


class StatusError(Exception):
    """An error that reaches the user as a ``Status`` with HTTP code ``code``."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, self.message, self.details)

    @classmethod
    def from_status(cls, status: dict[str, Any], default_code: int = 500) -> StatusError:
        """Re-raise a Status some other server returned (the apiserver refusing a patch, say)."""
        code = status.get("code")
        return cls(
            code if isinstance(code, int) and 400 <= code < 600 else default_code,
            str(status.get("reason") or "InternalError"),
            str(status.get("message") or "unknown error"),
            status.get("details") if isinstance(status.get("details"), dict) else None,
        )


def _details(resource: str, name: str, group: str) -> dict[str, Any]:
    return {"name": name, "group": group, "kind": resource}


def not_found(resource: str, name: str, group: str = GROUP) -> StatusError:
    """``virtualmachines.kubevirt.io "x" not found``, exactly as the apiserver says it."""
    return StatusError(404, "NotFound", f'{resource}.{group} "{name}" not found', _details(resource, name, group))


def conflict(resource: str, name: str, why: str, group: str = GROUP) -> StatusError:
    message = f'Operation cannot be fulfilled on {resource}.{group} "{name}": {why}'
    return StatusError(409, "Conflict", message, _details(resource, name, group))


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unauthorized(message: str) -> StatusError:
    return StatusError(401, "Unauthorized", message)


def forbidden(message: str) -> StatusError:
    return StatusError(403, "Forbidden", message)


def too_large(limit: int) -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", f"request body is larger than {limit} bytes")


def unavailable(message: str) -> StatusError:
    return StatusError(503, "ServiceUnavailable", message)


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", message)
