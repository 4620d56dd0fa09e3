"""The launcher command socket protocol, version 1: the node handler's only way into a launcher.

Stdlib (and ``podvirt_common``) only, so the handler's client can share these definitions (see the
report: this module is meant to move to ``podvirt_common``).

Transport
    HTTP/1.1 over the unix socket ``<sockets-dir>/launcher.sock`` (mode 0660, owned by the launcher's
    user). One request per connection (the server always answers ``Connection: close``); no chunked
    bodies: POST needs ``Content-Length``. Works with ``curl --unix-socket`` and
    ``httpx.HTTPTransport(uds=...)``.

Bounds (violations get 400/408/413/431/503 and the connection is closed)
    request line + headers <= 16 KiB; body <= 4 MiB for ``/v1/sync``, 4 KiB otherwise; the whole request
    must arrive within 5 s; at most 16 connections at once; long polls wait at most 30 s.

Requests and responses are JSON objects. Every error is
    ``{"error": {"reason": "...", "message": "...", "field": "spec.domain..."?}}``
with reasons BadRequest (400), NotFound (404), MethodNotAllowed (405), Conflict (409), InvalidSpec (422),
Unsupported (422), VolumeError (422), AgentUnavailable (503), Timeout (504), Internal (500).

Endpoints (all under ``/v1``)
    GET  /v1/ping                 {"ok": true, "protocol": 1, "uri": "qemu:///embed?root=...",
                                  "runtime": "embed"|"session"|"fake", "domainType": "kvm"|"qemu", "pid": N}
    POST /v1/sync                 {"vmi": {VirtualMachineInstance}, "qemuCapabilities": {name: XML}?}
                                  -> 200 DomainInfo. Creates and starts the domain once; repeating it with
                                  the same spec is a no-op; a different spec after start is 409 Conflict.
                                  qemuCapabilities: the node's libvirt capabilities cache files (see
                                  ``podvirt_common.qemucaps``), used when the domain is first defined.
    POST /v1/shutdown             {"gracePeriodSeconds": N?} -> 202 DomainInfo. ACPI power button now,
                                  destroy after N s (default: the VMI's terminationGracePeriodSeconds).
    POST /v1/kill                 {} -> 200 DomainInfo (destroyed now; the launcher exits "failed")
    POST /v1/pause, /v1/unpause, /v1/reset, /v1/softreboot    {} -> 200 DomainInfo
    GET  /v1/domain               DomainInfo
    GET  /v1/stats                {"cpu": {...}, "memory": {...}, "vcpus": [...], "blocks": [...], "nets": [...]}
    GET  /v1/guestinfo            qemu-guest-agent facts, or 503 AgentUnavailable
    GET  /v1/events?since=S&wait=W
                                  {"events": [Event...], "next": S'}: events with seq >= S; with W > 0
                                  waits up to W s (<= 30) for one. Always available, notify socket or not.
    GET  /v1/console/log?bytes=N  {"text": "..."}: the last N (<= 1 MiB) bytes of serial console output

DomainInfo
    {"phase": "WaitingForSpec"|"Preparing"|"Running"|"Stopping"|"Finished", "name": "ns_name"?,
     "uuid"?, "state": "Running"|"Paused"|"Shutoff"|"Crashed"|"ShuttingDown"|..., "reason": "...",
     "timestamps": {"prepared"?, "started"?, "stopped"?} (RFC 3339), "exitCode": N?, "outcome":
     "Succeeded"|"Failed"?, "warnings": [...]}

Event (also pushed to the notify socket)
    {"seq": N, "time": RFC 3339, "type": "Started"|"Paused"|"Resumed"|"Shutdown"|"Stopped"|"Crashed"|
     "Rebooted"|"Watchdog"|"AgentConnected"|"AgentDisconnected"|"Failed"|"LauncherExiting", "reason": "...",
     "state": domain state after the event, "message"?}

Notify socket (optional, ``--notify-socket``; served by the handler)
    The launcher sends ``POST /v1/events`` (HTTP/1.1, unix socket) with
    ``{"vmi": {"namespace", "name", "uid"}, "events": [Event...]}`` for each batch of new events, in order,
    retrying with backoff while the socket is absent; polling ``/v1/events`` stays authoritative.
"""

from __future__ import annotations

from typing import Any, Final

from podvirt_common import qemucaps

PROTOCOL_VERSION: Final = 1
PREFIX: Final = "/v1"
MAX_HEADER_BYTES: Final = 16 << 10
MAX_SYNC_BODY: Final = 4 << 20
MAX_BODY: Final = 4 << 10
REQUEST_TIMEOUT: Final = 5.0
MAX_CONNECTIONS: Final = 16
MAX_WAIT_SECONDS: Final = 30.0
MAX_CONSOLE_LOG_BYTES: Final = 1 << 20
MAX_GRACE_SECONDS: Final = 24 * 3600

STATUS_BY_REASON: Final = {
    "BadRequest": 400,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "Conflict": 409,
    "InvalidSpec": 422,
    "Unsupported": 422,
    "VolumeError": 422,
    "AgentUnavailable": 503,
    "Timeout": 504,
    "Internal": 500,
}


class ProtocolError(Exception):
    """A request the protocol refuses; ``reason`` maps to the HTTP status."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field

    @property
    def status(self) -> int:
        return STATUS_BY_REASON.get(self.reason, 500)

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def expect_object(body: Any, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object holding only ``allowed`` keys."""
    if not isinstance(body, dict):
        raise ProtocolError("BadRequest", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ProtocolError("BadRequest", f"unknown field {unknown[0]!r}", field=unknown[0])
    return body


def optional_int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("BadRequest", f"{key} must be an integer from {lo} to {hi}", field=key)
    return value


def query_number(query: dict[str, str], key: str, default: float, lo: float, hi: float) -> float:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError("BadRequest", f"query parameter {key} must be a number", field=key) from None
    if not lo <= value <= hi:
        raise ProtocolError("BadRequest", f"query parameter {key} must be from {lo:g} to {hi:g}", field=key)
    return value


def parse_sync(body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The VMI object of a sync request (its schema is checked by the preparation step) and the QEMU
    capabilities files sent with it (empty when none)."""
    request = expect_object(body, {"vmi", "qemuCapabilities"})
    vmi = request.get("vmi")
    if not isinstance(vmi, dict) or not isinstance(vmi.get("spec"), dict):
        raise ProtocolError("BadRequest", "vmi must be a VirtualMachineInstance object with a spec", field="vmi")
    try:
        capabilities = qemucaps.check(request.get("qemuCapabilities") or {})
    except qemucaps.CapabilitiesError as exc:
        raise ProtocolError("BadRequest", str(exc), field="qemuCapabilities") from None
    return vmi, capabilities


def parse_shutdown(body: Any) -> int | None:
    return optional_int(expect_object(body, {"gracePeriodSeconds"}), "gracePeriodSeconds", 0, MAX_GRACE_SECONDS)


def parse_empty(body: Any) -> None:
    if body is not None:
        expect_object(body, set())
