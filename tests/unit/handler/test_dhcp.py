"""The guest's DHCP server: answers its own client correctly and ignores everything else."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virt_handler.dhcp import ACK, DISCOVER, MAGIC, NAK, OFFER, REQUEST, Lease, parse, reply

pytestmark = pytest.mark.unit

MAC = bytes.fromhex("020000aabbcc")
LEASE = Lease(
    address=ipaddress.IPv4Address("10.0.2.2"),
    gateway=ipaddress.IPv4Interface("10.0.2.1/24"),
    mtu=1400,
    hostname="vm1",
    dns=(ipaddress.IPv4Address("10.96.0.10"),),
)


def client_packet(kind: int, requested: str | None = None, mac: bytes = MAC) -> bytes:
    head = struct.pack("!BBBB", 1, 1, 6, 0) + b"\x12\x34\x56\x78" + b"\x00\x00\x80\x00"
    head += b"\x00" * 16 + mac + b"\x00" * 10 + b"\x00" * 192 + MAGIC
    opts = bytes([53, 1, kind])
    if requested:
        opts += bytes([50, 4]) + ipaddress.IPv4Address(requested).packed
    return head + opts + b"\xff"


def options_of(packet: bytes) -> dict[int, bytes]:
    out, i, data = {}, 0, packet[240:]
    while data[i] != 255:
        out[data[i]] = data[i + 2 : i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return out


def test_discover_gets_an_offer_with_the_whole_lease() -> None:
    req = parse(client_packet(DISCOVER))
    assert req is not None
    assert req.client_mac == "02:00:00:aa:bb:cc"
    answer = reply(req, LEASE)
    assert answer is not None
    assert answer[4:8] == b"\x12\x34\x56\x78"  # same transaction
    assert ipaddress.IPv4Address(answer[16:20]) == LEASE.address
    opts = options_of(answer)
    assert opts[53] == bytes([OFFER])
    assert ipaddress.IPv4Address(opts[3]) == ipaddress.IPv4Address("10.0.2.1")
    assert ipaddress.IPv4Address(opts[1]) == ipaddress.IPv4Address("255.255.255.0")
    assert struct.unpack("!H", opts[26])[0] == 1400
    assert opts[12] == b"vm1"
    assert ipaddress.IPv4Address(opts[6]) == ipaddress.IPv4Address("10.96.0.10")


def test_request_for_the_leased_address_is_acked_and_another_is_refused() -> None:
    good = reply(parse(client_packet(REQUEST, "10.0.2.2")), LEASE)  # type: ignore[arg-type]
    bad = reply(parse(client_packet(REQUEST, "10.0.2.77")), LEASE)  # type: ignore[arg-type]
    assert good is not None
    assert options_of(good)[53] == bytes([ACK])
    assert bad is not None
    assert options_of(bad)[53] == bytes([NAK])


def test_a_lease_pinned_to_a_mac_ignores_other_clients() -> None:
    pinned = Lease(LEASE.address, LEASE.gateway, mac="02:00:00:aa:bb:cc")
    assert reply(parse(client_packet(DISCOVER)), pinned) is not None  # type: ignore[arg-type]
    other = parse(client_packet(DISCOVER, mac=bytes.fromhex("020000000001")))
    assert other is not None
    assert reply(other, pinned) is None


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    req = parse(data)
    if req is not None:
        reply(req, LEASE)


@given(st.binary(max_size=300))
def test_garbage_options_after_a_valid_header_never_raise(tail: bytes) -> None:
    packet = client_packet(DISCOVER)[:240] + tail
    req = parse(packet)
    if req is not None:
        reply(req, LEASE)
