"""The handler's endpoint for virt-api: console and VNC websockets, and VMI actions, over mutual TLS.

Only clients with a certificate signed by the CA given to the handler (virt-api's client CA) get in;
TLS is enforced by the server socket, so no route can be reached without it. Routes, all under
``/v1/namespaces/{namespace}/virtualmachineinstances/{name}/``:

    GET (websocket) console | vnc      raw bytes both ways; one session per VMI and kind
    GET (websocket) portforward/{port}/{protocol}
                                       raw bytes both ways to a TCP connection to ``port`` of the
                                       guest, opened inside the launcher pod's network namespace
                                       (:mod:`portforward`); tcp only; any number at once
    PUT pause | unpause | reset | softreboot
    GET guestosinfo                    KubeVirt's VirtualMachineInstanceGuestAgentInfo
                                       (:func:`guestagent.guest_agent_info`)
    GET /healthz

Errors are JSON ``{"message": ...}`` with 404 (VMI not on this node), 409 (not running), 502 (the
launcher refused or failed), 503 (the launcher is unreachable). A console or VNC stream that cannot
open is closed before it is accepted (code 4404 or 4503); a port-forward is refused with an HTTP
answer instead: 400 (a port outside 1-65535, a protocol other than tcp), 404 (VMI not running here),
409 (no masquerade pod interface), 502 (the guest did not accept the connection), 503 (the pod's
network namespace is out of reach).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from virt_handler.console import Session, Sessions, pump
from virt_handler.guestagent import guest_agent_info
from virt_handler.launcher_client import LauncherClient, LauncherError, LauncherTarget, LauncherUnreachableError
from virt_handler.portforward import Connector, ForwardError, ForwardTarget, check_request, connect_to_guest
from virt_handler.vmisync import peer_pid

log = logging.getLogger("virt_handler.server")
PREFIX = "/v1/namespaces/{namespace}/virtualmachineinstances/{name}"
ACTIONS = ("pause", "unpause", "reset", "softreboot")

#: Finds the launcher of a running VMI on this node; None when the VMI is not here (or not running).
TargetLookup = Callable[[str, str], LauncherTarget | None]
#: Finds a running VMI's launcher and its guest's address; None when the VMI is not running here.
ForwardLookup = Callable[[str, str], ForwardTarget | None]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


async def _refuse(websocket: WebSocket, status: int, message: str) -> None:
    """Answer a websocket upgrade with an HTTP error, so that virt-api can pass the code on."""
    try:
        await websocket.send_denial_response(_error(status, message))
    except RuntimeError:  # a server without the denial-response extension: close before accepting
        await websocket.close(code=4000 + status, reason=message[:120])


async def _accept(websocket: WebSocket) -> None:
    wanted = "plain.kubevirt.io" in websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="plain.kubevirt.io" if wanted else None)


async def _receive(websocket: WebSocket) -> bytes | None:
    """The next bytes from virt-api; None once the websocket closed."""
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


def _guest_connector(target: ForwardTarget, port: int) -> Awaitable[socket.socket]:
    return connect_to_guest(target, port, peer_pid)


def create_app(
    lookup: TargetLookup, forward_lookup: ForwardLookup | None = None, connect: Connector = _guest_connector
) -> FastAPI:
    """The endpoint; without ``forward_lookup`` port-forwards are refused (503)."""
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
            return guest_agent_info(await asyncio.to_thread(client.guest_info))
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
        await _accept(websocket)

        async def close(code: int, reason: str) -> None:
            await websocket.close(code=code, reason=reason)

        session = Session((namespace, name, kind), close)
        await sessions.take(session)

        try:
            await pump(sock, lambda: _receive(websocket), websocket.send_bytes)
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

    @app.websocket(PREFIX + "/portforward/{port}/{protocol}")
    async def portforward(websocket: WebSocket, namespace: str, name: str, port: str, protocol: str) -> None:
        try:
            number = check_request(port, protocol)
            target = forward_lookup(namespace, name) if forward_lookup is not None else None
            if forward_lookup is None:
                raise ForwardError(503, "this virt-handler was started without port forwarding")
            if target is None:
                raise ForwardError(404, f"VirtualMachineInstance {namespace}/{name} is not running on this node")
            sock = await connect(target, number)
        except ForwardError as exc:
            log.info("%s/%s port-forward to %s/%s refused: %s", namespace, name, port, protocol, exc.message)
            await _refuse(websocket, exc.status, exc.message)
            return
        await _accept(websocket)
        log.info("%s/%s port-forward to port %d opened", namespace, name, number)
        try:
            await pump(sock, lambda: _receive(websocket), websocket.send_bytes)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.info("%s/%s port-forward to port %d ended: %s", namespace, name, number, exc)
        finally:
            with contextlib.suppress(Exception):
                await websocket.close()

    app.state.sessions = sessions
    return app
