"""Pod networking: address leases, namespaces on a bridge, reachability, clean-up of leftovers.

The namespace tests create a bridge and namespaces of their own (root, like the agent) on a
private range, and remove them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.node import network
from devcluster.node.network import Ipam, NetworkConfig, NetworkError

pytestmark = pytest.mark.unit


def config(bridge: str = "pvunit0", pod: str = "10.250.3.0/24", cluster: str = "10.250.0.0/16") -> NetworkConfig:
    return NetworkConfig(bridge, ipaddress.IPv4Network(pod), ipaddress.IPv4Network(cluster))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="not a valid Linux interface name"):
        config(bridge="a-bridge-name-too-long")
    with pytest.raises(ValueError, match="not inside the cluster CIDR"):
        config(pod="10.1.0.0/24")
    assert str(config().gateway) == "10.250.3.1"


def test_leases_are_unique_stable_and_released(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path / "ipam", config(pod="10.250.3.0/29"))
    first = ipam.allocate("pod-a")
    assert ipam.allocate("pod-a") == first
    others = [ipam.allocate(f"pod-{i}") for i in range(4)]
    assert len({first, *others}) == 5
    assert ipaddress.IPv4Address("10.250.3.1") not in others  # the gateway
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate("one-too-many")
    ipam.release("pod-a")
    assert ipam.lookup("pod-a") is None
    assert ipam.allocate("pod-new") == first


def test_names_are_per_node_instance_and_fit_linux_limits(tmp_path: Path) -> None:
    a = network.instance_id(tmp_path / "a", "node-1")
    b = network.instance_id(tmp_path / "b", "node-1")
    assert a != b and a.endswith("-node-1")
    assert len(network.host_veth(a, "0b8a7c26-4a47-4a43-9a3c-6b1c6fbd7e56")) <= 15


@pytest.fixture
def bridge() -> Iterator[NetworkConfig]:
    cfg = config(bridge=f"pvu{secrets.token_hex(4)}", pod="10.250.7.0/24")
    network.ensure_bridge(cfg)
    network.ensure_bridge(cfg)  # idempotent
    try:
        yield cfg
    finally:
        subprocess.run(["ip", "link", "del", cfg.bridge], capture_output=True, check=False)


def _in_netns(netns: Path, code: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={netns}", "/usr/bin/python3", "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_pods_get_a_namespace_on_the_bridge_reachable_from_the_host_and_each_other(bridge: NetworkConfig) -> None:
    instance = f"unit{os.getpid()}"
    a_ip, b_ip = ipaddress.IPv4Address("10.250.7.10"), ipaddress.IPv4Address("10.250.7.11")

    async def setup() -> tuple[Path, Path]:
        return (
            await network.setup_pod(bridge, instance, "pod-a", a_ip),
            await network.setup_pod(bridge, instance, "pod-b", b_ip),
        )

    try:
        netns_a, netns_b = asyncio.run(setup())
        server = subprocess.Popen(
            [
                "nsenter",
                f"--net={netns_a}",
                "/usr/bin/python3",
                "-c",
                "import socket; s = socket.create_server(('0.0.0.0', 9000)); "
                "c, a = s.accept(); c.sendall(a[0].encode())",
            ]
        )
        try:
            for _ in range(50):
                try:
                    with socket.create_connection((str(a_ip), 9000), timeout=2) as conn:
                        assert conn.recv(64).decode() == str(bridge.gateway)
                    break
                except ConnectionRefusedError:
                    time.sleep(0.05)
        finally:
            server.wait(5)
        routes = _in_netns(
            netns_b, "import subprocess; print(subprocess.run(['ip','route'],capture_output=True,text=True).stdout)"
        )
        assert f"default via {bridge.gateway}" in routes
        assert "lo" in _in_netns(netns_b, "import socket; print(socket.if_nameindex())")
        assert network.sweep(instance) == [network.netns_name(instance, "pod-a"), network.netns_name(instance, "pod-b")]
        assert not netns_a.exists() and not netns_b.exists()
    finally:
        network.sweep(instance)


def test_a_bridge_name_taken_by_another_kind_of_link_is_refused() -> None:
    with pytest.raises(NetworkError, match="is not a bridge"):
        network.ensure_bridge(config(bridge="lo"))
