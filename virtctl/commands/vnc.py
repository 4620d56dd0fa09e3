"""``vnc``: the VMI's graphical display through the ``vnc`` websocket subresource, via a local TCP port.

virtctl opens the stream first (so errors come before any window), listens on a loopback port,
and starts a VNC viewer on it; ``--proxy-only`` prints the port (as JSON, like KubeVirt) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import Callable
from typing import Any

import click

from virtctl.errors import ApiError, VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.framework import command, complete_vmis, kube_client, note, say
from virtctl.kube import KubeClient
from virtctl.streams import SessionEnd, pump_socket
from virtctl.subresources import VNC

VIEWERS: list[tuple[str, str]] = [
    # (program, how it wants the address)
    ("remote-viewer", "vnc://{host}:{port}"),
    ("vncviewer", "{host}::{port}"),  # TigerVNC, TightVNC: "::" means a port, not a display number
    ("gvncviewer", "{host}::{port}"),
]


def viewer_command(host: str, port: int, which: Callable[[str], str | None] = shutil.which) -> list[str] | None:
    """The first installed VNC viewer, pointed at ``host:port``; None if there is none."""
    for program, address in VIEWERS:
        path = which(program)
        if path:
            return [str(path), address.format(host=host, port=port)]
    return None


async def serve_vnc(
    client: KubeClient, name: str, address: str, port: int, proxy_only: bool, listen_timeout: float = 60.0
) -> SessionEnd:
    namespace = client.namespace
    async with contextlib.AsyncExitStack() as stack:
        try:
            ws = await stack.enter_async_context(client.websocket(VNC.path(namespace, name)))
        except ApiError as e:
            raise client.explain(e, VNC.request(namespace, name)) from None
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if connected.done():  # one viewer per session, as the server allows one session
                writer.close()
            else:
                connected.set_result((reader, writer))

        server = await asyncio.start_server(accept, address, port)
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        bound = server.sockets[0].getsockname()[1]
        viewer: asyncio.subprocess.Process | None = None
        if proxy_only:
            say(json.dumps({"port": bound}))
            sys.stdout.flush()
        else:
            argv = viewer_command(address, bound)
            if argv is None:
                note(
                    f"No VNC viewer found (looked for {', '.join(p for p, _ in VIEWERS)}). "
                    f"Connect one to {address}:{bound}; Ctrl+C stops."
                )
            else:
                viewer = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
                stack.push_async_callback(_stop, viewer)
        if viewer is not None:
            await _viewer_connects(viewer, connected, f"{address}:{bound}", listen_timeout)
        reader, writer = await connected
        server.close()
        return await pump_socket(ws, reader, writer)


async def _viewer_connects(
    viewer: asyncio.subprocess.Process, connected: asyncio.Future[Any], where: str, seconds: float
) -> None:
    """Wait for the viewer we started to connect; fail if it exits or dawdles instead."""
    exited = asyncio.ensure_future(viewer.wait())
    try:
        await asyncio.wait({connected, exited}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
    if connected.done():
        return
    if viewer.returncode is not None:
        raise VirtctlError(
            f"the VNC viewer exited (status {viewer.returncode}) before connecting to {where}", ExitCode.ERROR
        )
    raise VirtctlError(f"the VNC viewer did not connect to {where} within {seconds:g}s", ExitCode.ERROR)


async def _stop(viewer: asyncio.subprocess.Process) -> None:
    if viewer.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            viewer.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(viewer.wait(), 5)


@command(
    "vnc",
    short_help="Open a VNC connection to a virtual machine instance.",
    help="Show the display of the VMI NAME in a local VNC viewer (remote-viewer or vncviewer), through "
    "the Kubernetes API. With --proxy-only, print the local port as JSON and let any viewer connect.",
    examples="""
# Open the display of 'myvmi' in remote-viewer (or vncviewer):
{prog} vnc myvmi

# Only proxy: print {"port": N}, then connect your own viewer to 127.0.0.1:N:
{prog} vnc --proxy-only myvmi
""",
)
@click.argument("name", shell_complete=complete_vmis)
@click.option("--proxy-only", is_flag=True, help="Do not start a viewer; print the local port as JSON.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Local port (0: any free).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Local address to listen on.")
def vnc(ctx: click.Context, name: str, proxy_only: bool, port: int, address: str) -> int:
    client = kube_client(ctx)
    try:
        end = asyncio.run(serve_vnc(client, name, address, port, proxy_only))
    except KeyboardInterrupt:
        return int(ExitCode.OK)
    if end.why == "taken-over":
        raise VirtctlError(
            f"the VNC session of VirtualMachineInstance {client.namespace}/{name} was taken over by another client",
            ExitCode.TAKEN_OVER,
        )
    if end.why == "lost":
        raise VirtctlError(f"lost the VNC connection: {end.detail}", ExitCode.ERROR)
    return int(ExitCode.OK)


COMMANDS = [vnc]
