"""The command socket's routes: protocol requests (see ``protocol``) mapped onto the controller."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virt_launcher.errors import LauncherError

from . import protocol
from .controller import Controller
from .httpd import Request, Response

Route = Callable[[Request], Response]


@dataclass
class CommandAPI:
    controller: Controller
    ping_facts: dict[str, Any]
    console_log: Path | None = None

    def routes(self) -> dict[tuple[str, str], Route]:
        c = self.controller
        simple: dict[str, Callable[[], dict[str, Any]]] = {
            "kill": c.kill,
            "pause": c.pause,
            "unpause": c.unpause,
            "reset": c.reset,
            "softreboot": c.soft_reboot,
        }
        table: dict[tuple[str, str], Route] = {
            ("GET", "/v1/ping"): lambda r: Response(
                200, {"ok": True, "protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid(), **self.ping_facts}
            ),
            ("GET", "/v1/domain"): lambda r: Response(200, c.info()),
            ("GET", "/v1/stats"): lambda r: Response(200, c.stats()),
            ("GET", "/v1/guestinfo"): lambda r: Response(200, c.guest_info()),
            ("GET", "/v1/events"): self._events,
            ("GET", "/v1/console/log"): self._console_log,
            ("POST", "/v1/sync"): self._sync,
            ("POST", "/v1/shutdown"): lambda r: Response(202, c.shutdown(protocol.parse_shutdown(r.body or {}))),
        }
        for name, action in simple.items():
            table[("POST", f"/v1/{name}")] = self._simple(action)
        return table

    @staticmethod
    def _simple(action: Callable[[], dict[str, Any]]) -> Route:
        def route(request: Request) -> Response:
            protocol.parse_empty(request.body)
            return Response(200, action())

        return route

    def _sync(self, request: Request) -> Response:
        vmi, capabilities = protocol.parse_sync(request.body)
        return Response(200, self.controller.sync(vmi, capabilities))

    def _events(self, request: Request) -> Response:
        since = int(protocol.query_number(request.query, "since", 1, 0, 2**62))
        wait = protocol.query_number(request.query, "wait", 0, 0, protocol.MAX_WAIT_SECONDS)
        events, next_seq = self.controller.events.since(since, wait)
        return Response(200, {"events": [e.to_dict() for e in events], "next": next_seq})

    def _console_log(self, request: Request) -> Response:
        limit = protocol.MAX_CONSOLE_LOG_BYTES
        size = int(protocol.query_number(request.query, "bytes", 64 << 10, 1, limit))
        if self.console_log is None or not self.console_log.exists():
            return Response(200, {"text": ""})
        with self.console_log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return Response(200, {"text": fh.read().decode("utf-8", "replace")})

    def handler(self) -> Callable[[Request], Response]:
        table = self.routes()
        paths = {path for _, path in table}

        def handle(request: Request) -> Response:
            route = table.get((request.method, request.path))
            if route is None:
                if request.path in paths:
                    message = f"{request.method} is not allowed on {request.path}"
                    raise protocol.ProtocolError("MethodNotAllowed", message)
                version = protocol.PROTOCOL_VERSION
                raise protocol.ProtocolError("NotFound", f"no endpoint {request.path}; this launcher speaks v{version}")
            try:
                return route(request)
            except LauncherError as exc:
                error = exc.to_dict()
                return Response(protocol.STATUS_BY_REASON.get(error["reason"], 500), {"error": error})

        return handle

    @staticmethod
    def body_limit(path: str) -> int:
        return protocol.MAX_SYNC_BODY if path == "/v1/sync" else protocol.MAX_BODY
