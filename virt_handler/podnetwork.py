"""The privileged half of the pod network's masquerade binding, done by virt-handler.

Inside the launcher pod's network namespace: a bridge with the guest's gateway address, a tap
device owned by the launcher's (non-root) user and enslaved to the bridge, IPv4 forwarding, and
nftables rules that forward the VMI's ports (all ports when the interface lists none) arriving
at the pod's address to the guest, and masquerade the guest's own traffic behind the pod's
address. The launcher, unprivileged, then attaches QEMU to the tap (``<interface
type='ethernet'>`` with ``managed='no'``). DHCP for the guest is served by :mod:`virt_handler.dhcp`.

The namespace is identified by a pinned process (see :class:`PinnedNetns`), never by a path a
launcher can influence; commands run through ``nsenter`` against the already-open namespace
descriptor. Everything here is idempotent: applying twice changes nothing, and the nftables
table is replaced atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import select
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

BRIDGE = "k6t-eth0"
TAP = "tap0"
POD_INTERFACE = "eth0"
GUEST_NETWORK = ipaddress.ip_interface("10.0.2.1/24")
GUEST_ADDRESS = ipaddress.ip_address("10.0.2.2")
NFT_TABLE = "podvirt"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NetworkSetupError(RuntimeError):
    """The pod network could not be prepared; the message names the step."""


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str = "TCP"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is outside 1-65535")
        if self.protocol not in ("TCP", "UDP", "SCTP"):
            raise ValueError(f"protocol {self.protocol!r} is not TCP, UDP or SCTP")


@dataclass(frozen=True)
class MasqueradePlan:
    """What one VMI interface with masquerade binding needs in its pod's namespace."""

    tap_owner: int
    ports: tuple[Port, ...] = ()  # empty: forward every port, as KubeVirt does
    mtu: int = 1500
    guest_mac: str | None = None
    tap: str = TAP
    bridge: str = BRIDGE
    pod_interface: str = POD_INTERFACE
    gateway: ipaddress.IPv4Interface = field(default=GUEST_NETWORK)  # type: ignore[assignment]
    guest: ipaddress.IPv4Address = field(default=GUEST_ADDRESS)  # type: ignore[assignment]


def nft_ruleset(plan: MasqueradePlan) -> str:
    """The nftables table (replacing any earlier one) for ``plan``."""
    lines = [f"table ip {NFT_TABLE} {{}}", f"delete table ip {NFT_TABLE}", f"table ip {NFT_TABLE} {{"]
    lines += ["  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;"]
    iif = f'iifname "{plan.pod_interface}"'
    if plan.ports:
        by_proto: dict[str, list[int]] = {}
        for p in plan.ports:
            by_proto.setdefault(p.protocol.lower(), []).append(p.port)
        for proto, ports in sorted(by_proto.items()):
            port_set = ", ".join(str(p) for p in sorted(set(ports)))
            lines.append(f"    {iif} {proto} dport {{ {port_set} }} dnat to {plan.guest}")
    else:
        lines.append(f"    {iif} meta l4proto {{ tcp, udp, sctp }} dnat to {plan.guest}")
    lines += ["  }", "  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;"]
    lines.append(f'    ip saddr {plan.guest} oifname "{plan.pod_interface}" masquerade')
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def link_commands(plan: MasqueradePlan) -> list[list[str]]:
    """``ip`` commands that create the bridge and tap; each tolerates an existing device."""
    return [
        ["ip", "link", "add", plan.bridge, "type", "bridge"],
        ["ip", "addr", "replace", str(plan.gateway), "dev", plan.bridge],
        ["ip", "link", "set", plan.bridge, "mtu", str(plan.mtu), "up"],
        ["ip", "tuntap", "add", "dev", plan.tap, "mode", "tap", "user", str(plan.tap_owner)],
        ["ip", "link", "set", plan.tap, "master", plan.bridge, "mtu", str(plan.mtu), "up"],
    ]


def _in_netns(netns_fd: int, argv: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/proc/self/fd/{netns_fd}", "--", *argv],
        input=input,
        capture_output=True,
        text=True,
        pass_fds=(netns_fd,),
        timeout=20,
        check=False,
    )


def apply(netns_fd: int, plan: MasqueradePlan) -> None:
    """Prepare the namespace behind ``netns_fd`` for ``plan``; safe to repeat."""
    for argv in link_commands(plan):
        proc = _in_netns(netns_fd, argv)
        if proc.returncode != 0 and "File exists" not in proc.stderr and "Device or resource busy" not in proc.stderr:
            raise NetworkSetupError(f"`{' '.join(argv)}` failed in the pod network namespace: {proc.stderr.strip()}")
    proc = _in_netns(netns_fd, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    if proc.returncode != 0:
        raise NetworkSetupError(f"enabling IPv4 forwarding in the pod failed: {proc.stderr.strip()}")
    proc = _in_netns(netns_fd, ["nft", "-f", "-"], input=nft_ruleset(plan))
    if proc.returncode != 0:
        raise NetworkSetupError(f"loading the masquerade rules failed: {proc.stderr.strip()}")


def tap_exists(netns_fd: int, plan: MasqueradePlan) -> bool:
    return _in_netns(netns_fd, ["ip", "link", "show", "dev", plan.tap]).returncode == 0


class PinnedNetns:
    """The network namespace of a live process, pinned so that a pid reuse cannot swap it.

    A pidfd holds the process; the namespace is opened through /proc only after that, and the
    process is checked to be alive afterwards: had it exited in between, its pid could have been
    reused, and the namespace is refused.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        try:
            self.fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(self._pidfd)
            raise
        if not self._alive():
            self.close()
            raise NetworkSetupError(f"process {pid} exited while its network namespace was opened")

    def _alive(self) -> bool:
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return not poller.poll(0)

    def is_host_namespace(self) -> bool:
        """True when the process shares this handler's namespace (a hostNetwork pod)."""
        mine = os.stat("/proc/self/ns/net")
        theirs = os.fstat(self.fd)
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def close(self) -> None:
        for fd in (self.fd, self._pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PinnedNetns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_netns(netns_fd: int, make: Callable[[], T], name: str = "netns") -> T:
    """``make()`` called inside the namespace ``netns_fd``; what it returns (a socket) stays there.

    It runs in a throwaway thread that enters the namespace with setns(2) and leaves again: a socket
    keeps the namespace it was created in, so it is then used from any thread, and if leaving failed,
    only that thread (never the caller's) is left in the pod's namespace.
    """
    result: list[T | BaseException] = []

    def run() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(netns_fd)
            try:
                result.append(make())
            finally:
                _setns(own)
        except BaseException as exc:
            result.append(exc)
        finally:
            os.close(own)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
