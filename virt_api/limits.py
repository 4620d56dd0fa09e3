"""Bounded request bodies: a request larger than its path's limit is refused with 413 before it is read."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _TooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: at most ``limit`` body bytes per request, by path prefix (``limits``) or ``default``.

    A declared ``Content-Length`` over the limit is refused at once; a body that grows past it while
    streaming is cut off and refused, as long as no response has started.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        limits: tuple[tuple[str, int], ...],
        default: int,
        refuse: Callable[[int], dict[str, Any]],
    ) -> None:
        self.app = app
        self.limits = limits
        self.default = default
        self.refuse = refuse

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def _send_refusal(self, send: Send, limit: int) -> None:
        body = json.dumps(self.refuse(limit)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await self._send_refusal(send, limit)
                    return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLargeError
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except _TooLargeError:
            if not started:
                await self._send_refusal(send, limit)
