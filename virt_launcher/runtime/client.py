"""A stdlib client of the launcher command socket (protocol v1), for tests, benchmarks and the handler.

Every call opens one connection, sends one request and reads one JSON response, with a timeout.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .protocol import MAX_WAIT_SECONDS

MAX_RESPONSE = 8 << 20


class LauncherClientError(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.reason = str(error.get("reason", "Unknown"))
        self.field = error.get("field")
        super().__init__(f"{status} {self.reason}: {error.get('message', '')}")


class LauncherClient:
    def __init__(self, socket_path: Path | str, timeout: float = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> dict[str, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: launcher\r\nContent-Length: {len(payload)}\r\n"
        if payload:
            head += "Content-Type: application/json\r\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout or self.timeout)
            sock.connect(self.socket_path)
            sock.sendall(head.encode() + b"\r\n" + payload)
            data = b""
            while len(data) <= MAX_RESPONSE:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        head_bytes, _, raw = data.partition(b"\r\n\r\n")
        status = int(head_bytes.split(b" ", 2)[1])
        result: dict[str, Any] = json.loads(raw) if raw else {}
        if status >= 400:
            raise LauncherClientError(status, result.get("error", {}))
        return result

    def ping(self) -> dict[str, Any]:
        return self.request("GET", "/v1/ping")

    def sync(
        self, vmi: dict[str, Any], timeout: float = 180.0, qemu_capabilities: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"vmi": vmi}
        if qemu_capabilities:
            body["qemuCapabilities"] = qemu_capabilities
        return self.request("POST", "/v1/sync", body, timeout=timeout)

    def shutdown(self, grace_seconds: int | None = None) -> dict[str, Any]:
        body = {} if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        return self.request("POST", "/v1/shutdown", body)

    def command(self, name: str) -> dict[str, Any]:
        """kill, pause, unpause, reset or softreboot."""
        return self.request("POST", f"/v1/{name}", {})

    def domain(self) -> dict[str, Any]:
        return self.request("GET", "/v1/domain")

    def stats(self) -> dict[str, Any]:
        return self.request("GET", "/v1/stats")

    def guest_info(self) -> dict[str, Any]:
        return self.request("GET", "/v1/guestinfo")

    def events(self, since: int = 1, wait: float = 0.0) -> dict[str, Any]:
        wait = min(wait, MAX_WAIT_SECONDS)
        return self.request("GET", f"/v1/events?since={since}&wait={wait:g}", timeout=wait + self.timeout)

    def console_log(self, size: int = 65536) -> str:
        return str(self.request("GET", f"/v1/console/log?bytes={size}")["text"])
