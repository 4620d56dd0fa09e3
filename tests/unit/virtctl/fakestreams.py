"""A fake of the API server's websocket side, on loopback: discovery over plain GET, and streams.

Each test gives a handler ``async def handler(ws)`` that plays the server's part of the stream
(send serial output, record what arrives, close with a code, drop the connection). ``refuse``
makes the next upgrade attempts fail with a ``Status`` (e.g. 409 "not running").
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

Handler = Callable[[ServerConnection], Awaitable[None]]

DISCOVERY = {
    "kind": "APIResourceList",
    "groupVersion": "subresources.kubevirt.io/v1",
    "resources": [{"name": f"virtualmachineinstances/{s}"} for s in ("console", "vnc", "portforward")],
}


def json_response(code: int, body: Any) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(code, http.HTTPStatus(code).phrase, headers, data)


class FakeStreams:
    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.refusals: list[tuple[int, dict[str, Any]]] = []
        self.paths: list[str] = []
        self.objects: dict[str, Any] = {}
        """Answers to plain GETs, by path (e.g. a VMI that port-forward checks)."""
        self.received: list[bytes] = []
        self.connected = threading.Event()
        self.go_on = threading.Event()
        """Set by the test when a handler waiting in :meth:`proceed` may continue."""
        self.loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> FakeStreams:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _serve(self) -> Server:
        return await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol("plain.kubevirt.io")],
            process_request=self._process_request,
            ping_interval=None,
        )

    def _process_request(self, _connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/apis/subresources.kubevirt.io/v1":
            return json_response(200, DISCOVERY)
        if request.path in self.objects:
            return json_response(200, self.objects[request.path])
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return json_response(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "nope"})
        self.paths.append(request.path)
        if self.refusals:
            code, status = self.refusals.pop(0)
            return json_response(code, status)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connected.set()
        if self.handler is not None:
            await self.handler(ws)

    def refuse(self, code: int, message: str, times: int = 1) -> None:
        status = {"kind": "Status", "apiVersion": "v1", "code": code, "reason": "Conflict", "message": message}
        self.refusals += [(code, status)] * times

    async def proceed(self) -> None:
        """Wait until the test says so (e.g. once it saw the terminal turn raw)."""
        await asyncio.get_running_loop().run_in_executor(None, self.go_on.wait, 30)

    async def record(self, ws: ServerConnection, until: bytes | None = None) -> None:
        """Collect what the client sends (until ``until`` arrives, or the client goes away)."""
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                self.received.append(message if isinstance(message, bytes) else message.encode())
                if until is not None and until in b"".join(self.received):
                    return

    def stop(self) -> None:
        self.go_on.set()

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
