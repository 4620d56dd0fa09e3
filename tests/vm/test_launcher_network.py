"""The pod network through a tap the privileged step prepared: the unprivileged launcher attaches QEMU to it.

Here the test plays the privileged step (virt-handler on a real node): in a network namespace of its own it
creates ``tap0`` owned by the launcher's user and serves DHCP on it, then runs the launcher inside that
namespace. No traffic leaves the namespace.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from .harness import LauncherRun, tiny_vmi

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]
GUEST_IP = "10.0.2.2"


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"pvt{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (
            ["tuntap", "add", "dev", "tap0", "mode", "tap", "user", "107", "group", "107"],
            ["link", "set", "lo", "up"],
            ["link", "set", "tap0", "up"],
            ["addr", "add", "10.0.2.1/24", "dev", "tap0"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_masquerade_interface_attaches_to_the_prepared_tap_and_gets_dhcp(
    launcher: Callable[[], LauncherRun], pod_netns: str
) -> None:
    run = launcher()
    run.add_kernel_boot()
    config = run.base / "udhcpd.conf"
    config.write_text(
        f"start {GUEST_IP}\nend {GUEST_IP}\ninterface tap0\noption subnet 255.255.255.0\noption router 10.0.2.1\n"
        f"lease_file {run.base / 'leases'}\npidfile {run.base / 'udhcpd.pid'}\n"
    )
    (run.base / "leases").touch()
    dhcp = subprocess.Popen(["ip", "netns", "exec", pod_netns, "busybox", "udhcpd", "-f", str(config)])
    try:
        vmi = tiny_vmi("tapnet")
        vmi["spec"]["domain"]["devices"]["interfaces"] = [
            {"name": "default", "masquerade": {}, "macAddress": "02:00:00:aa:bb:cc"}
        ]
        vmi["spec"]["networks"] = [{"name": "default", "pod": {}}]
        run.start(vmi, "--network-mode", "tap", netns=pod_netns)
        run.wait_running()
        run.console().wait_for("PODVIRT-IP=" + re.escape(GUEST_IP), timeout=120)
        ping = subprocess.run(
            ["ip", "netns", "exec", pod_netns, "busybox", "ping", "-c", "1", "-W", "10", GUEST_IP],
            capture_output=True,
            check=False,
        )
        assert ping.returncode == 0, ping.stdout
        neighbours = subprocess.run(["ip", "-n", pod_netns, "neigh"], capture_output=True, text=True, check=True)
        assert "02:00:00:aa:bb:cc" in neighbours.stdout, "the guest NIC has the MAC from the spec"
    finally:
        dhcp.terminate()
        dhcp.wait(5)
