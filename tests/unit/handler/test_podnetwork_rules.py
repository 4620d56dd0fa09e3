"""The masquerade rules forward exactly the VMI's ports to the guest."""

from __future__ import annotations

import pytest

from virt_handler.podnetwork import MasqueradePlan, Port, nft_ruleset

pytestmark = pytest.mark.unit


def test_listed_ports_are_forwarded_by_protocol() -> None:
    rules = nft_ruleset(MasqueradePlan(tap_owner=107, ports=(Port(80), Port(22), Port(53, "UDP"))))
    assert 'iifname "eth0" tcp dport { 22, 80 } dnat to 10.0.2.2' in rules
    assert 'iifname "eth0" udp dport { 53 } dnat to 10.0.2.2' in rules
    assert 'ip saddr 10.0.2.2 oifname "eth0" masquerade' in rules


def test_no_ports_means_every_port() -> None:
    rules = nft_ruleset(MasqueradePlan(tap_owner=107))
    assert "meta l4proto { tcp, udp, sctp } dnat to 10.0.2.2" in rules
    assert "dport" not in rules


def test_the_table_is_replaced_not_appended() -> None:
    lines = nft_ruleset(MasqueradePlan(tap_owner=107)).splitlines()
    assert lines[:2] == ["table ip podvirt {}", "delete table ip podvirt"]


@pytest.mark.parametrize(("port", "proto"), [(0, "TCP"), (70000, "TCP"), (80, "ICMP")])
def test_bad_ports_are_refused(port: int, proto: str) -> None:
    with pytest.raises(ValueError, match=r"port|protocol"):
        Port(port, proto)
