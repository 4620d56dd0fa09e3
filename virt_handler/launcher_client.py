"""The handler's client of a launcher's command socket (protocol v1, see the launcher's ``runtime.protocol``).

Everything a launcher answers is distrusted: the socket is reached through :mod:`safepath`, a whole
response is capped at :data:`MAX_RESPONSE` bytes and :data:`TIMEOUT` seconds, and answers are parsed
into small typed values; nothing a launcher says about *which* VMI it runs is used — the handler
knows that from the pod it found.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from virt_handler import safepath
from virt_handler.vmistatus import Domain, DomainState

PROTOCOL_VERSION = 1
MAX_RESPONSE = 2 << 20
MAX_HEADER = 16 << 10
TIMEOUT = 10.0
# Sync prepares disks and starts QEMU; the first start on a node also probes QEMU's capabilities.
SYNC_TIMEOUT = 120.0
COMMAND_SOCKET = "launcher.sock"
CONSOLE_SOCKET = "console.sock"
VNC_SOCKET = "vnc.sock"

_STATES = {
    "Running": DomainState.RUNNING,
    "Blocked": DomainState.BLOCKED,
    "Paused": DomainState.PAUSED,
    "ShuttingDown": DomainState.SHUTDOWN,
    "Shutdown": DomainState.SHUTDOWN,
    "Shutoff": DomainState.SHUTOFF,
    "Crashed": DomainState.CRASHED,
    "PMSuspended": DomainState.PMSUSPENDED,
}


class LauncherError(RuntimeError):
    """The launcher answered with an error, or not in protocol."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class LauncherUnreachableError(LauncherError):
    """The socket is absent, refuses connections, or the launcher did not answer in time."""


@dataclass(frozen=True)
class LauncherTarget:
    """Where one VMI's launcher is on this node: derived from the pod the handler found, never from the launcher."""

    namespace: str
    name: str
    vmi_uid: str
    pod_uid: str
    sockets_root: Path  # the node's <kubelet root>/pods/<pod uid>/volumes/kubernetes.io~empty-dir
    sockets_volume: str  # the emptyDir volume holding the launcher's sockets
    owner_uid: int | None  # the launcher's user, from the pod's security context

    def socket_path(self, name: str) -> PurePosixPath:
        return PurePosixPath(self.sockets_volume) / name


@dataclass(frozen=True)
class DomainInfo:
    phase: str
    domain: Domain | None
    exit_code: int | None
    raw: dict[str, Any]


def encode_capabilities(files: dict[str, str]) -> bytes:
    """The node's QEMU capabilities files as the JSON value of a sync request's ``qemuCapabilities``."""
    return json.dumps(files, separators=(",", ":")).encode() if files else b""


def _domain_info(answer: Any) -> DomainInfo:
    if not isinstance(answer, dict):
        raise LauncherError("launcher DomainInfo is not an object")
    return parse_domain_info(answer)


def parse_domain_info(body: dict[str, Any]) -> DomainInfo:
    phase = body.get("phase")
    if not isinstance(phase, str):
        raise LauncherError("launcher DomainInfo has no phase")
    state = body.get("state")
    domain = None
    if isinstance(state, str) and state in _STATES:
        reason = body.get("reason") if isinstance(body.get("reason"), str) else ""
        outcome = body.get("outcome")
        domain = Domain(
            _STATES[state],
            str(reason or ""),
            clean_shutdown=outcome == "Succeeded",
            outcome_known=outcome in ("Succeeded", "Failed"),
        )
    exit_code = body.get("exitCode")
    return DomainInfo(phase, domain, exit_code if isinstance(exit_code, int) else None, body)


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LauncherUnreachableError("launcher did not answer in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise LauncherUnreachableError("launcher did not answer in time") from None
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_RESPONSE + MAX_HEADER:
            raise LauncherError(f"launcher response exceeds {MAX_RESPONSE} bytes")
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEADER:
        raise LauncherError("launcher sent a malformed HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise LauncherError(f"launcher sent a malformed status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) < len(body):
        body = body[: int(length)]
    return int(parts[1]), headers, body


class LauncherClient:
    """Requests to one launcher; each opens a fresh, checked connection."""

    def __init__(self, target: LauncherTarget, timeout: float = TIMEOUT) -> None:
        self.target = target
        self.timeout = timeout

    def _connect(self, name: str) -> socket.socket:
        try:
            return safepath.connect_unix(
                self.target.sockets_root, self.target.socket_path(name), self.target.owner_uid, self.timeout
            )
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as exc:
            raise LauncherUnreachableError(f"launcher socket {name}: {exc}") from exc

    def connect_console(self) -> socket.socket:
        return self._connect(CONSOLE_SOCKET)

    def connect_vnc(self) -> socket.socket:
        return self._connect(VNC_SOCKET)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        parts: Sequence[bytes] | None = None,
    ) -> Any:
        """One request; the JSON body is ``body``, or ``parts`` already encoded and sent one after the
        other (a large piece shared by many requests, such as the node's QEMU capabilities, is then
        never copied per request)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        if parts is None:
            parts = () if body is None else (json.dumps(body, separators=(",", ":")).encode(),)
        head = f"{method} {path} HTTP/1.1\r\nHost: launcher\r\nConnection: close\r\n"
        if parts:
            head += f"Content-Type: application/json\r\nContent-Length: {sum(len(p) for p in parts)}\r\n"
        sock = self._connect(COMMAND_SOCKET)
        try:
            sock.sendall(head.encode() + b"\r\n")
            for part in parts:
                sock.sendall(part)
            status, _, payload = _read_response(sock, deadline)
        except OSError as exc:
            raise LauncherUnreachableError(f"launcher connection failed: {exc}") from exc
        finally:
            sock.close()
        try:
            decoded = json.loads(payload) if payload else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LauncherError(f"launcher answered {status} with a body that is not JSON", status) from None
        if status >= 400:
            err = decoded.get("error") if isinstance(decoded, dict) else None
            err = err if isinstance(err, dict) else {}
            message = str(err.get("message", f"launcher answered {status}"))[:500]
            raise LauncherError(message, status, str(err.get("reason", ""))[:64])
        return decoded

    def ping(self) -> dict[str, Any]:
        answer = self.request("GET", "/v1/ping")
        if not isinstance(answer, dict) or answer.get("protocol") != PROTOCOL_VERSION:
            raise LauncherError(f"launcher speaks an unknown protocol: {str(answer)[:120]}")
        return answer

    def _domain(self, method: str, path: str, body: dict[str, Any] | None = None) -> DomainInfo:
        return _domain_info(self.request(method, path, body))

    def domain(self) -> DomainInfo:
        return self._domain("GET", "/v1/domain")

    def sync(self, vmi: dict[str, Any], qemu_capabilities: bytes = b"") -> DomainInfo:
        """Hands the launcher its spec; ``qemu_capabilities`` is the node's capabilities object as
        encoded JSON (:func:`encode_capabilities`, once per handler), or empty for none."""
        vmi_json = json.dumps({"vmi": vmi}, separators=(",", ":")).encode()
        parts = [vmi_json]
        if qemu_capabilities:
            parts = [vmi_json[:-1], b',"qemuCapabilities":', qemu_capabilities, b"}"]
        return _domain_info(self.request("POST", "/v1/sync", timeout=SYNC_TIMEOUT, parts=parts))

    def shutdown(self, grace_seconds: int | None) -> DomainInfo:
        body = {} if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        return self._domain("POST", "/v1/shutdown", body)

    def kill(self) -> DomainInfo:
        return self._domain("POST", "/v1/kill", {})

    def action(self, name: str) -> DomainInfo:
        if name not in ("pause", "unpause", "reset", "softreboot"):
            raise ValueError(f"unknown launcher action {name!r}")
        return self._domain("POST", f"/v1/{name}", {})

    def guest_info(self) -> dict[str, Any]:
        answer = self.request("GET", "/v1/guestinfo")
        if not isinstance(answer, dict):
            raise LauncherError("launcher guest info is not an object")
        return answer

    def events(self, since: int, wait: float) -> tuple[list[dict[str, Any]], int]:
        answer = self.request("GET", f"/v1/events?since={int(since)}&wait={wait:g}", timeout=wait + self.timeout)
        events = answer.get("events") if isinstance(answer, dict) else None
        nxt = answer.get("next") if isinstance(answer, dict) else None
        if not isinstance(events, list) or not isinstance(nxt, int):
            raise LauncherError("launcher events answer is malformed")
        return [e for e in events if isinstance(e, dict)], nxt
