"""The handler's endpoint for virt-api: console and VNC websockets, and VMI actions, over mutual TLS.

Only clients with a certificate signed by the CA given to the handler (virt-api's client CA) get in;
TLS is enforced by the server socket, so no route can be reached without it. Routes, all under
``/v1/namespaces/{namespace}/virtualmachineinstances/{name}/``:

    GET (websocket) console | vnc      raw bytes both ways; one session per VMI and kind
    PUT pause | unpause | reset | softreboot
    GET guestosinfo
    GET /healthz

Errors are JSON ``{"message": ...}`` with 404 (VMI not on this node), 409 (not running), 502 (the
launcher refused or failed), 503 (the launcher is unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from virt_handler.console import Session, Sessions, pump
from virt_handler.launcher_client import LauncherClient, LauncherError, LauncherTarget, LauncherUnreachableError

log = logging.getLogger("virt_handler.server")
PREFIX = "/v1/namespaces/{namespace}/virtualmachineinstances/{name}"
ACTIONS = ("pause", "unpause", "reset", "softreboot")

#: Finds the launcher of a running VMI on this node; None when the VMI is not here (or not running).
TargetLookup = Callable[[str, str], LauncherTarget | None]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def create_app(lookup: TargetLookup) -> FastAPI:
    app = FastAPI(title="virt-handler", docs_url=None, redoc_url=None, openapi_url=None)
    sessions = Sessions()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def client_for(namespace: str, name: str) -> LauncherClient | JSONResponse:
        target = lookup(namespace, name)
        if target is None:
            return _error(404, f"VirtualMachineInstance {namespace}/{name} is not running on this node")
        return LauncherClient(target)

    @app.put(PREFIX + "/{action}")
    async def act(namespace: str, name: str, action: str) -> Any:
        if action not in ACTIONS:
            return _error(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        client = client_for(namespace, name)
        if isinstance(client, JSONResponse):
            return client
        try:
            info = await asyncio.to_thread(client.action, action)
        except LauncherUnreachableError as exc:
            return _error(503, f"the launcher of {namespace}/{name} is unreachable: {exc}")
        except LauncherError as exc:
            return _error(409 if exc.status == 409 else 502, f"{action} of {namespace}/{name} failed: {exc}")
        return {"phase": info.phase, "state": info.domain.state.value if info.domain else None}

    @app.get(PREFIX + "/guestosinfo")
    async def guestosinfo(namespace: str, name: str) -> Any:
        client = client_for(namespace, name)
        if isinstance(client, JSONResponse):
            return client
        try:
            return await asyncio.to_thread(client.guest_info)
        except LauncherUnreachableError as exc:
            return _error(503, f"the launcher of {namespace}/{name} is unreachable: {exc}")
        except LauncherError as exc:
            status = 503 if exc.reason == "AgentUnavailable" else 502
            return _error(status, f"guest agent of {namespace}/{name}: {exc}")

    async def stream(websocket: WebSocket, namespace: str, name: str, kind: str) -> None:
        target = lookup(namespace, name)
        if target is None:
            await websocket.close(code=4404, reason=f"VirtualMachineInstance {namespace}/{name} is not running here")
            return
        client = LauncherClient(target)
        try:
            sock = await asyncio.to_thread(client.connect_console if kind == "console" else client.connect_vnc)
        except (LauncherError, OSError) as exc:
            await websocket.close(code=4503, reason=f"{kind} of {namespace}/{name} is unavailable: {exc}"[:120])
            return
        await websocket.accept(
            subprotocol="plain.kubevirt.io" if "plain.kubevirt.io" in websocket.scope.get("subprotocols", []) else None
        )

        async def close(code: int, reason: str) -> None:
            await websocket.close(code=code, reason=reason)

        session = Session((namespace, name, kind), close)
        await sessions.take(session)

        async def receive() -> bytes | None:
            try:
                message = await websocket.receive()
            except WebSocketDisconnect:
                return None
            if message["type"] == "websocket.disconnect":
                return None
            data = message.get("bytes")
            if data is None and message.get("text") is not None:
                data = str(message["text"]).encode()
            return data or b""

        try:
            await pump(sock, receive, websocket.send_bytes)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.info("%s/%s %s session ended: %s", namespace, name, kind, exc)
        finally:
            await sessions.release(session)
            with contextlib.suppress(Exception):
                await websocket.close()

    @app.websocket(PREFIX + "/console")
    async def console(websocket: WebSocket, namespace: str, name: str) -> None:
        await stream(websocket, namespace, name, "console")

    @app.websocket(PREFIX + "/vnc")
    async def vnc(websocket: WebSocket, namespace: str, name: str) -> None:
        await stream(websocket, namespace, name, "vnc")

    app.state.sessions = sessions
    return app
