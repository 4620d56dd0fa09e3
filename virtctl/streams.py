"""Byte streams over the ``plain.kubevirt.io`` websockets: waiting for a VMI to run, and pumping bytes.

:func:`pump_fds` joins a websocket to a pair of file descriptors (the console to the terminal,
``port-forward --stdio`` to ssh's pipes); :func:`pump_socket` joins it to a TCP connection. Both
end on the first of: the escape byte, end of input, the server closing, the connection dying;
:func:`session_end` names the reason from the websocket close frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from virtctl.errors import ApiError, VirtctlError, short_reason
from virtctl.exitcodes import ExitCode
from virtctl.kube import KubeClient
from virtctl.progress import Waiting
from virtctl.subresources import Operation

TAKEN_OVER_CODE = 4000
"""Close code podvirt's virt-handler sends when a newer session replaces this one."""
CHUNK = 64 * 1024
_QUEUE_HIGH, _QUEUE_LOW = 32, 8

Why = Literal["escape", "eof", "closed", "taken-over", "lost"]


@dataclass(frozen=True)
class SessionEnd:
    """Why a stream ended, and the server's words if it said any."""

    why: Why
    detail: str = ""


def session_end(code: int | None, reason: str) -> SessionEnd:
    """Classify the server's close frame (``code`` None: the connection died without one)."""
    if code == TAKEN_OVER_CODE or "taken over" in reason.lower():
        return SessionEnd("taken-over", reason)
    if code in (1000, 1001):
        return SessionEnd("closed", reason)
    detail = f"close code {code}" if code is not None else "no close frame"
    return SessionEnd("lost", f"{detail}{': ' + reason if reason else ''}")


def _waitable(err: ApiError, client: KubeClient) -> bool:
    """A refusal that goes away by itself once the VMI runs: it does not exist yet, or is not running."""
    if err.code == 409:
        return True
    if err.code == 400:
        text = err.message.lower()
        return "not running" in text or "not ready" in text or "not yet" in text
    # 404 for the VMI, not for the whole API (discovery tells them apart).
    return err.code == 404 and client.served().group_served


async def connect_when_running(
    stack: contextlib.AsyncExitStack,
    client: KubeClient,
    operation: Operation,
    name: str,
    wait_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ClientConnection:
    """Open the stream, retrying while the VMI is missing or not yet running, for up to ``wait_seconds``."""
    namespace = client.namespace
    request = operation.request(namespace, name)
    path = operation.path(namespace, name)
    deadline = clock() + wait_seconds
    delay = 0.5
    with contextlib.ExitStack() as progress:
        waiting: Waiting | None = None
        while True:
            try:
                return await stack.enter_async_context(client.websocket(path))
            except ApiError as e:
                if not _waitable(e, client) or wait_seconds <= 0:
                    raise client.explain(e, request) from None
                if clock() >= deadline:
                    raise _gave_up(e, namespace, name, wait_seconds) from None
                if waiting is None:
                    waiting = progress.enter_context(
                        Waiting(f"Waiting for VirtualMachineInstance {namespace}/{name} to run")
                    )
                waiting.update(short_reason(e.message))
                await sleep(max(0.0, min(delay, deadline - clock())))
                delay = min(delay * 2, 5.0)


def _gave_up(err: ApiError, namespace: str, name: str, wait_seconds: float) -> VirtctlError:
    minutes = f"{wait_seconds / 60:g} minute{'s' if wait_seconds != 60 else ''}"
    vmi = f"VirtualMachineInstance {namespace}/{name}"
    state = "does not exist" if err.code == 404 else f"is not running ({short_reason(err.message)})"
    return VirtctlError(f"gave up after {minutes}: {vmi} {state}", ExitCode.TIMEOUT)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        view = view[written:]


async def _receive(ws: ClientConnection, deliver: Callable[[bytes], Awaitable[None]]) -> SessionEnd:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await deliver(message if isinstance(message, bytes) else message.encode())
    return session_end(ws.close_code, ws.close_reason or "")


async def pump_fds(
    ws: ClientConnection, in_fd: int, out_fd: int, *, escape: bytes | None = None, linger: bool = False
) -> SessionEnd:
    """Copy ``in_fd`` to the websocket and the websocket to ``out_fd`` until one side ends.

    With ``escape``, that byte ends the session; what was typed before it is still sent. With
    ``linger``, the end of input does not end the session: the server's answer is still copied
    until the server closes (like netcat; the stream itself has no half-close to tell the server).
    """
    return await _FdPump(ws, in_fd, out_fd, escape, linger).run()


class _FdPump:
    def __init__(self, ws: ClientConnection, in_fd: int, out_fd: int, escape: bytes | None, linger: bool) -> None:
        self.ws, self.in_fd, self.out_fd, self.escape, self.linger = ws, in_fd, out_fd, escape, linger
        self.loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[SessionEnd] = self.loop.create_future()
        self.outgoing: asyncio.Queue[bytes | SessionEnd] = asyncio.Queue()
        self.reading = False
        self.input_ended = False

    def finish(self, end: SessionEnd) -> None:
        if not self.ended.done():
            self.ended.set_result(end)

    def take(self, data: bytes) -> None:
        """Queue input up to the escape byte or end of input."""
        if not data:
            self.input_ended = True
            self.outgoing.put_nowait(SessionEnd("eof"))
        elif self.escape is not None and (at := data.find(self.escape)) >= 0:
            self.input_ended = True
            if at:
                self.outgoing.put_nowait(data[:at])
            self.outgoing.put_nowait(SessionEnd("escape"))
        else:
            self.outgoing.put_nowait(data)

    def on_readable(self) -> None:
        try:
            data = os.read(self.in_fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:  # e.g. EIO: the terminal went away
            data = b""
        self.take(data)
        if self.input_ended or self.outgoing.qsize() > _QUEUE_HIGH:
            self.stop_reading()

    def start_reading(self) -> None:
        if not self.reading and not self.input_ended:
            self.loop.add_reader(self.in_fd, self.on_readable)
            self.reading = True

    def stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.in_fd)
            self.reading = False

    async def read_unpollable(self) -> None:
        # Regular files cannot be polled, but never block either.
        while not self.input_ended:
            self.take(os.read(self.in_fd, CHUNK))
            await asyncio.sleep(0)

    async def send(self) -> None:
        while True:
            item = await self.outgoing.get()
            if isinstance(item, SessionEnd):
                if not (self.linger and item.why == "eof"):
                    self.finish(item)
                return
            await self.ws.send(item)
            if self.outgoing.qsize() < _QUEUE_LOW:
                self.start_reading()

    async def deliver(self, data: bytes) -> None:
        _write_all(self.out_fd, data)

    def on_task_done(self, task: asyncio.Task[SessionEnd | None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, ConnectionClosed):
            self.finish(session_end(error.rcvd.code if error.rcvd else None, error.rcvd.reason if error.rcvd else ""))
        elif error is not None:
            self.finish(SessionEnd("lost", str(error) or type(error).__name__))
        elif (result := task.result()) is not None:
            self.finish(result)

    async def run(self) -> SessionEnd:
        tasks: list[asyncio.Task[SessionEnd | None]] = []
        try:
            try:
                self.start_reading()
            except PermissionError:
                tasks.append(asyncio.create_task(self.read_unpollable()))
            tasks.append(asyncio.create_task(self.send()))
            tasks.append(asyncio.create_task(_receive(self.ws, self.deliver)))
            for task in tasks:
                task.add_done_callback(self.on_task_done)
            return await self.ended
        finally:
            self.input_ended = True
            self.stop_reading()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                    await task


async def pump_socket(ws: ClientConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> SessionEnd:
    """Copy a TCP connection to the websocket and back until either side ends."""

    async def upstream() -> SessionEnd:
        while data := await reader.read(CHUNK):
            await ws.send(data)
        return SessionEnd("eof")

    async def deliver(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    tasks = [asyncio.create_task(upstream()), asyncio.create_task(_receive(ws, deliver))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        try:
            return first.result()
        except ConnectionClosed as e:
            return session_end(e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else "")
        except OSError as e:
            return SessionEnd("lost", str(e))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
