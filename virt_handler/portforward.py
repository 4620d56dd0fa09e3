"""Port forwarding for virt-api: a TCP connection to the guest, opened from inside its launcher pod.

The guest of a masquerade binding has its address (:data:`podnetwork.GUEST_ADDRESS`) on the pod's
bridge, reachable only from inside the pod's network namespace. The handler pins that namespace by
the launcher's pid as the kernel reports it for the launcher's command socket (never by anything
the launcher says), creates a TCP socket inside it (:func:`podnetwork.in_netns`: a throwaway thread,
so no handler thread stays in the pod) and connects it from the handler's own namespace, where the
socket keeps working in the pod's. The guest's address comes from the handler's own network plan for
the VMI. The bytes are then copied like a console's (:func:`console.pump`); any number of forwards
may be open at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from virt_handler.launcher_client import LauncherError, LauncherTarget
from virt_handler.podnetwork import NetworkSetupError, PinnedNetns, in_netns

CONNECT_TIMEOUT = 10.0
PROTOCOLS = ("tcp",)


class ForwardError(Exception):
    """A forward that cannot be opened; ``status`` is the HTTP code the refusal carries."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ForwardTarget:
    """A running VMI's launcher and its guest's address (None: the VMI has no masquerade pod interface)."""

    launcher: LauncherTarget
    guest: ipaddress.IPv4Address | None


#: Opens a connection to ``port`` of the target's guest (the real one: :func:`connect_to_guest`).
Connector = Callable[[ForwardTarget, int], Awaitable[socket.socket]]


def check_request(port: str, protocol: str) -> int:
    """The port as a number; a 400 :class:`ForwardError` for a bad port or a protocol podvirt does not forward."""
    if protocol.lower() not in PROTOCOLS:
        raise ForwardError(400, f"port-forward over {protocol!r} is not supported by podvirt (only tcp)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ForwardError(400, f"port {port!r} is not a number in 1-65535")
    return int(port)


def tcp_socket_in_netns(netns_fd: int) -> socket.socket:
    """An unconnected TCP socket that belongs to the network namespace ``netns_fd``."""
    return in_netns(netns_fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM), name="portforward-netns")


async def connect_to_guest(
    target: ForwardTarget,
    port: int,
    pid_of: Callable[[LauncherTarget], int],
) -> socket.socket:
    """A TCP connection to ``port`` of the guest, made in the launcher pod's network namespace."""
    vmi = f"{target.launcher.namespace}/{target.launcher.name}"
    if target.guest is None:
        raise ForwardError(409, f"VirtualMachineInstance {vmi} has no pod network interface with masquerade binding")
    try:
        pid = await asyncio.to_thread(pid_of, target.launcher)
        with PinnedNetns(pid) as netns:
            if netns.is_host_namespace():
                raise ForwardError(409, f"the launcher of {vmi} shares the node's network; podvirt forwards no ports")
            sock = await asyncio.to_thread(tcp_socket_in_netns, netns.fd)
    except (OSError, LauncherError, NetworkSetupError) as exc:
        raise ForwardError(503, f"the network namespace of {vmi}'s launcher is out of reach: {exc}") from exc
    sock.setblocking(False)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (str(target.guest), port))
    except OSError as exc:  # TimeoutError included
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else f"no answer within {CONNECT_TIMEOUT:g} s"
        raise ForwardError(502, f"connecting to port {port} of {vmi} ({target.guest}) failed: {reason}") from exc
    return sock
