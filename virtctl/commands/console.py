"""``console``: the VMI's serial console in the user's terminal, through the ``console`` websocket subresource."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.framework import command, complete_vmis, kube_client, note
from virtctl.kube import KubeClient
from virtctl.streams import SessionEnd, connect_when_running, pump_fds
from virtctl.subresources import CONSOLE
from virtctl.terminal import ESCAPE, RawTerminal


def run_console(client: KubeClient, name: str, wait_seconds: float, in_fd: int = 0, out_fd: int = 1) -> ExitCode:
    """Connect (waiting up to ``wait_seconds`` for the VMI to run), then copy bytes until the session ends.

    The terminal is restored in ``finally``, around the event loop itself, so every way out restores it.
    """
    terminal = RawTerminal(in_fd)

    async def session() -> SessionEnd:
        async with contextlib.AsyncExitStack() as stack:
            ws = await connect_when_running(stack, client, CONSOLE, name, wait_seconds)
            if terminal.is_tty:
                note(f"Successfully connected to {name} console. Press Ctrl+] to exit console.")
            terminal.enable()
            return await pump_fds(ws, in_fd, out_fd, escape=ESCAPE)

    try:
        end = asyncio.run(session())
    finally:
        was_raw = terminal.active
        terminal.restore()
        if was_raw:
            note("")
    return report(end, f"VirtualMachineInstance {client.namespace}/{name}")


def report(end: SessionEnd, target: str) -> ExitCode:
    """Tell the user why the session ended; the exit code scripts see."""
    if end.why in ("escape", "eof"):
        return ExitCode.OK
    if end.why == "taken-over":
        raise VirtctlError(
            f"the console session of {target} was taken over by another client (only one console "
            "session per VMI is allowed; the newest wins)",
            ExitCode.TAKEN_OVER,
        )
    if end.why == "closed":
        note(f"The console of {target} was closed by the server{': ' + end.detail if end.detail else ''}.")
        return ExitCode.OK
    raise VirtctlError(f"lost the console connection to {target}: {end.detail}", ExitCode.ERROR)


@command(
    "console",
    short_help="Connect to the serial console of a virtual machine instance.",
    help="Connect the terminal to the serial console of the VMI NAME. Press Ctrl+] to leave. "
    "If the VMI is not running yet (just started), wait for it up to --timeout minutes. "
    "One console session per VMI: connecting elsewhere ends this one.",
    examples="""
# Connect to the console of the VMI 'myvmi':
{prog} console myvmi

# Start a VM and wait at most one minute for its console:
{prog} start myvm && {prog} console --timeout=1 myvm
""",
)
@click.argument("name", shell_complete=complete_vmis)
@click.option(
    "--timeout",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    metavar="MINUTES",
    help="Minutes to wait for the VMI to be running.",
)
def console(ctx: click.Context, name: str, timeout: int) -> int:
    return int(run_console(kube_client(ctx), name, timeout * 60.0, sys.stdin.fileno(), sys.stdout.fileno()))


COMMANDS = [console]
