"""A minimal DHCPv4 server that gives a masquerade-bound guest its one address.

Each pod's guest gets a fixed lease (address, gateway, mask, MTU, hostname, DNS) on the pod's
bridge. The listening socket is created *inside* the pod's network namespace by a thread that
enters it with setns(2) and leaves again; a socket stays in the namespace it was made in, so one
handler thread serves every pod without a process per pod and without the launcher's help.
Packets are bounded (a DHCP message fits in 576 bytes; anything over 1500 is dropped) and
parsed defensively: a malformed packet is ignored, never an exception out of the loop.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import struct
import threading
from dataclasses import dataclass

from virt_handler.podnetwork import in_netns

log = logging.getLogger("virt_handler.dhcp")

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
INFINITE_LEASE = 0xFFFFFFFF
MAX_PACKET = 1500
SO_BINDTODEVICE = 25


@dataclass(frozen=True)
class Lease:
    """What the guest behind one bridge is told."""

    address: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Interface
    mtu: int = 1500
    hostname: str | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    search: tuple[str, ...] = ()
    mac: str | None = None  # when set, only this client gets the lease


@dataclass(frozen=True)
class Request:
    op: int
    xid: bytes
    flags: bytes
    chaddr: bytes
    message_type: int
    requested: ipaddress.IPv4Address | None
    client_mac: str


def parse(packet: bytes) -> Request | None:
    """A client's BOOTREQUEST, or None for anything else or anything malformed."""
    if len(packet) < 240 or len(packet) > MAX_PACKET or packet[236:240] != MAGIC or packet[0] != 1:
        return None
    hlen = packet[2]
    if hlen != 6:
        return None
    options = _options(packet[240:])
    if options is None or 53 not in options or len(options[53]) != 1:
        return None
    requested = None
    if 50 in options and len(options[50]) == 4:
        requested = ipaddress.IPv4Address(options[50])
    chaddr = packet[28:34]
    return Request(
        op=packet[0],
        xid=packet[4:8],
        flags=packet[10:12],
        chaddr=packet[28:44],
        message_type=options[53][0],
        requested=requested,
        client_mac=":".join(f"{b:02x}" for b in chaddr),
    )


def _options(data: bytes) -> dict[int, bytes] | None:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == 255:
            return options
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            return None
        length = data[i + 1]
        if i + 2 + length > len(data):
            return None
        options[code] = data[i + 2 : i + 2 + length]
        i += 2 + length
    return options


def _opt(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def reply(req: Request, lease: Lease) -> bytes | None:
    """The server's answer to ``req`` (OFFER, ACK or NAK), or None when it gets no answer."""
    if lease.mac is not None and req.client_mac != lease.mac.lower():
        return None
    if req.message_type == DISCOVER:
        kind = OFFER
    elif req.message_type == REQUEST:
        kind = ACK if req.requested in (None, lease.address) else NAK
    elif req.message_type == INFORM:
        kind = ACK
    else:
        return None
    server = lease.gateway.ip
    header = struct.pack("!BBBB", 2, 1, 6, 0) + req.xid + b"\x00\x00" + req.flags
    yiaddr = lease.address.packed if kind != NAK else b"\x00" * 4
    header += b"\x00" * 4 + yiaddr + server.packed + b"\x00" * 4 + req.chaddr
    header += b"\x00" * 192 + MAGIC
    opts = _opt(53, bytes([kind])) + _opt(54, server.packed)
    if kind != NAK:
        opts += _opt(51, struct.pack("!I", INFINITE_LEASE))
        opts += _opt(1, lease.gateway.network.netmask.packed)
        opts += _opt(3, server.packed)
        opts += _opt(26, struct.pack("!H", lease.mtu))
        if lease.dns:
            opts += _opt(6, b"".join(d.packed for d in lease.dns[:4]))
        if lease.hostname:
            opts += _opt(12, lease.hostname.encode()[:63])
        if lease.search:
            opts += _opt(15, lease.search[0].encode()[:63])
    return header + opts + b"\xff"


def socket_in_netns(netns_fd: int, device: str) -> socket.socket:
    """A UDP socket on port 67 of ``device`` inside the namespace ``netns_fd``."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
            sock.bind(("0.0.0.0", 67))  # noqa: S104 - bound to the pod bridge by SO_BINDTODEVICE
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    return in_netns(netns_fd, make, name="dhcp-netns")


class DHCPServer:
    """Serves every registered pod's guest from one thread."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._leases: dict[str, tuple[socket.socket, Lease]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dhcp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for key in list(self._leases):
                self._remove_locked(key)

    def serve(self, key: str, netns_fd: int, device: str, lease: Lease) -> None:
        """Serve ``lease`` on ``device`` in the namespace; replaces an earlier registration of ``key``."""
        sock = socket_in_netns(netns_fd, device)
        with self._lock:
            self._remove_locked(key)
            self._leases[key] = (sock, lease)
            self._selector.register(sock, selectors.EVENT_READ, key)

    def forget(self, key: str) -> None:
        with self._lock:
            self._remove_locked(key)

    def serving(self) -> set[str]:
        with self._lock:
            return set(self._leases)

    def _remove_locked(self, key: str) -> None:
        entry = self._leases.pop(key, None)
        if entry is not None:
            self._selector.unregister(entry[0])
            entry[0].close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                empty = not self._leases
            if empty:
                self._stop.wait(0.2)
                continue
            for sel_key, _ in self._selector.select(timeout=0.2):
                with self._lock:
                    entry = self._leases.get(str(sel_key.data))
                if entry is None:
                    continue
                sock, lease = entry
                try:
                    packet = sock.recv(MAX_PACKET + 1)
                except OSError:
                    continue
                req = parse(packet)
                if req is None:
                    continue
                answer = reply(req, lease)
                if answer is None:
                    continue
                try:
                    sock.sendto(answer, ("255.255.255.255", 68))
                except OSError as exc:
                    log.warning("DHCP reply for %s failed: %s", sel_key.data, exc)
