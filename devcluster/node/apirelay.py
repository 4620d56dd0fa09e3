"""Lets pods in their own network namespace reach the apiserver at ``127.0.0.1:<port>``.

The apiserver listens on the host's loopback only, and there is no kube-proxy for the
``kubernetes`` Service. So the agent opens a listening socket *inside* each pod's namespace (on
its loopback, the port the apiserver uses) and relays every connection to the real apiserver on
the host's loopback. TLS passes through untouched: pods verify the apiserver's certificate (which
names 127.0.0.1) and authenticate with their own tokens. ``KUBERNETES_SERVICE_HOST`` is 127.0.0.1
for every pod, so in-cluster clients work unchanged; host-network pods reach the apiserver directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
log = logging.getLogger("devcluster.node")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _listen_in(netns: Path, port: int) -> socket.socket:
    """Bind 127.0.0.1:port inside ``netns`` from a worker thread, then put the thread back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return sock


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


class ApiRelay:
    """One pod's relay; :meth:`close` stops listening and drops its connections."""

    def __init__(self, server: asyncio.Server, tasks: set[asyncio.Task[None]]) -> None:
        self._server = server
        self._tasks = tasks

    async def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)


async def open_relay(netns: Path, port: int, upstream_host: str, upstream_port: int) -> ApiRelay:
    sock = await asyncio.to_thread(_listen_in, netns, port)
    tasks: set[asyncio.Task[None]] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError as exc:
            log.warning("apiserver relay cannot reach %s:%s: %s", upstream_host, upstream_port, exc)
            client_writer.close()
            return
        both = [
            asyncio.ensure_future(_pump(client_reader, up_writer)),
            asyncio.ensure_future(_pump(up_reader, client_writer)),
        ]
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        for task in both:
            task.cancel()
        for w in (up_writer, client_writer):
            with contextlib.suppress(OSError, RuntimeError):
                w.close()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(relay(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(on_connect, sock=sock)
    return ApiRelay(server, tasks)
