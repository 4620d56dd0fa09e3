"""The handler's masquerade binding in real network namespaces: DHCP gives the guest its address,
the pod's address forwards the VMI's ports to the guest, and the guest's traffic leaves as the pod.

The guest is a network namespace joined to the pod's bridge by a veth pair (where QEMU's tap would
be); busybox's DHCP client asks for its address exactly as the tiny test guest does.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from virt_handler.dhcp import DHCPServer, Lease
from virt_handler.podnetwork import GUEST_ADDRESS, GUEST_NETWORK, MasqueradePlan, PinnedNetns, Port, apply, tap_exists

pytestmark = pytest.mark.netns

CLIENT_IP, POD_IP = "10.250.0.1", "10.250.0.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Namespaces:
    pod: str
    guest: str
    client: str
    holder: subprocess.Popen[bytes]


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    tag = secrets.token_hex(3)
    names = Namespaces(f"pvpod{tag}", f"pvguest{tag}", f"pvcli{tag}", None)  # type: ignore[arg-type]
    try:
        for ns in (names.pod, names.guest, names.client):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # client <-> pod "eth0", like the node bridge would give.
        sh("ip", "link", "add", f"c{tag}", "netns", names.client, "type", "veth", "peer", "eth0", "netns", names.pod)
        sh("ip", "-n", names.client, "addr", "add", f"{CLIENT_IP}/24", "dev", f"c{tag}")
        sh("ip", "-n", names.client, "link", "set", f"c{tag}", "up")
        sh("ip", "-n", names.pod, "addr", "add", f"{POD_IP}/24", "dev", "eth0")
        sh("ip", "-n", names.pod, "link", "set", "eth0", "up")
        # A process living in the pod's namespace, as the launcher would.
        names.holder = subprocess.Popen(["ip", "netns", "exec", names.pod, "sleep", "300"])
        time.sleep(0.2)
        yield names
    finally:
        if names.holder is not None:
            names.holder.kill()
            names.holder.wait()
        for ns in (names.pod, names.guest, names.client):
            sh("ip", "netns", "del", ns, check=False)


def holder_pid(names: Namespaces) -> int:
    # `ip netns exec` execs sleep in place, so the Popen pid is the process in the namespace.
    return names.holder.pid


def attach_guest(names: Namespaces, tmp_path: Path) -> dict[str, str]:
    sh("ip", "link", "add", "gv0", "netns", names.guest, "type", "veth", "peer", "gv1", "netns", names.pod)
    sh("ip", "-n", names.pod, "link", "set", "gv1", "master", "k6t-eth0", "up")
    sh("ip", "-n", names.guest, "link", "set", "gv0", "up")
    script = tmp_path / "udhcpc.sh"
    out = tmp_path / "lease.env"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = bound ] || exit 0
        ip addr add "$ip/$mask" dev "$interface"
        ip route add default via "$router"
        env > {out}
        """)
    )
    script.chmod(0o755)
    sh(
        "ip",
        "netns",
        "exec",
        names.guest,
        "busybox",
        "udhcpc",
        "-i",
        "gv0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        str(script),
    )
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def serve_once(ns: str, port: int) -> subprocess.Popen[str]:
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0',{port})); s.listen(1); print('listening', flush=True)\n"
        "c,a=s.accept(); c.sendall(('hello from '+a[0]).encode()); c.close()\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "listening"
    return proc


def connect_from(ns: str, address: str, port: int) -> str:
    code = f"import socket; s=socket.create_connection(('{address}',{port}),timeout=5); print(s.recv(100).decode())"
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", code).stdout.strip()


def test_masquerade_gives_the_guest_an_address_and_forwards_ports(namespaces: Namespaces, tmp_path: Path) -> None:
    plan = MasqueradePlan(tap_owner=107, ports=(Port(8080),), mtu=1400)
    dhcp = DHCPServer()
    dhcp.start()
    try:
        with PinnedNetns(holder_pid(namespaces)) as netns:
            assert not netns.is_host_namespace()
            apply(netns.fd, plan)
            apply(netns.fd, plan)  # idempotent
            assert tap_exists(netns.fd, plan)
            tap = sh("ip", "-n", namespaces.pod, "-d", "link", "show", "tap0").stdout
            assert "user 107" in tap
            assert "master k6t-eth0" in tap
            dhcp.serve("pod", netns.fd, plan.bridge, Lease(GUEST_ADDRESS, GUEST_NETWORK, mtu=1400, hostname="vm1"))
        lease = attach_guest(namespaces, tmp_path)
        assert lease["ip"] == str(GUEST_ADDRESS)
        assert lease["router"] == str(GUEST_NETWORK.ip)
        assert lease["hostname"] == "vm1"
        assert lease["mtu"] == "1400"

        # Inbound: the pod's address and the VMI's port reach the guest.
        server = serve_once(namespaces.guest, 8080)
        assert connect_from(namespaces.client, POD_IP, 8080) == f"hello from {CLIENT_IP}"
        server.wait(timeout=5)
        # A port the VMI does not list is not forwarded.
        other = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                namespaces.client,
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(('{POD_IP}', 9090), timeout=2)",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert other.returncode != 0
        # Outbound: the guest's connections leave with the pod's address.
        outside = serve_once(namespaces.client, 7070)
        assert connect_from(namespaces.guest, CLIENT_IP, 7070) == f"hello from {POD_IP}"
        outside.wait(timeout=5)
    finally:
        dhcp.stop()


def test_a_host_network_process_is_recognised(namespaces: Namespaces) -> None:
    with PinnedNetns(os.getpid()) as netns:
        assert netns.is_host_namespace()


def test_an_exited_process_cannot_be_pinned() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises((ProcessLookupError, FileNotFoundError)):
        PinnedNetns(proc.pid)
