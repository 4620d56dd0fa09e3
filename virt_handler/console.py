"""Console and VNC sessions: a websocket from virt-api joined to a launcher's unix socket (or, for a
port-forward, to a TCP connection to the guest: :func:`pump` takes any stream socket).

One session per VMI and kind: a new session closes the one before it, with a close reason the
client can show ("taken over"). Bytes are copied both ways in bounded chunks; either side
closing ends the session. Keep-alive pings are the websocket server's job (see ``server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("virt_handler.console")

CHUNK = 64 * 1024
TAKEN_OVER_CODE = 4000
TAKEN_OVER_REASON = "console session taken over by another client"


@dataclass
class Session:
    """A live session; ``close`` ends it from outside (when another client takes over)."""

    key: tuple[str, str, str]
    close: Callable[[int, str], Awaitable[None]]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Sessions:
    """At most one session per (namespace, name, kind)."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, str, str], Session] = {}
        self._lock = asyncio.Lock()

    async def take(self, session: Session) -> None:
        async with self._lock:
            old = self._current.get(session.key)
            self._current[session.key] = session
        if old is not None:
            log.info("%s/%s %s: a new client takes over the session", *session.key)
            with contextlib.suppress(Exception):
                await old.close(TAKEN_OVER_CODE, TAKEN_OVER_REASON)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.done.wait(), 5)

    async def release(self, session: Session) -> None:
        async with self._lock:
            if self._current.get(session.key) is session:
                del self._current[session.key]
        session.done.set()

    def active(self) -> set[tuple[str, str, str]]:
        return set(self._current)


async def pump(
    sock: socket.socket,
    receive: Callable[[], Awaitable[bytes | None]],
    send: Callable[[bytes], Awaitable[None]],
) -> None:
    """Copy bytes between the websocket (``receive``/``send``) and ``sock`` until either side ends.

    ``receive`` returns None when the websocket closed.
    """
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=CHUNK)

    async def to_socket() -> None:
        while (data := await receive()) is not None:
            writer.write(data)
            await writer.drain()

    async def to_websocket() -> None:
        while data := await reader.read(CHUNK):
            await send(data)

    tasks = [asyncio.create_task(to_socket()), asyncio.create_task(to_websocket())]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
