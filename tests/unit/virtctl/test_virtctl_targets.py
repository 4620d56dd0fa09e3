"""The target syntaxes of port-forward, ssh and scp."""

from __future__ import annotations

import pytest

from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.targets import ForwardedPort, Target, parse_port, parse_scp_location, parse_ssh_target, parse_target

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("vmi/myvmi", Target("vmi", "myvmi")),
        ("vm/myvm/dev", Target("vm", "myvm", "dev")),
        ("VirtualMachineInstances/x", Target("vmi", "x")),
        ("myvmi", Target("vmi", "myvmi")),
        ("vmi/myvmi.dev", Target("vmi", "myvmi", "dev", legacy_syntax=True)),
    ],
)
def test_targets(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["", "pod/x", "vm/", "vm/x/", "vm/x/y/z"])
def test_bad_targets_are_usage_errors(text: str) -> None:
    with pytest.raises(VirtctlError) as raised:
        parse_target(text)
    assert raised.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("8080", ForwardedPort(8080, 8080)),
        ("2222:22", ForwardedPort(2222, 22)),
        (":22", ForwardedPort(0, 22)),
        ("tcp/80:8080", ForwardedPort(80, 8080)),
    ],
)
def test_ports(text: str, port: ForwardedPort) -> None:
    assert parse_port(text) == port


@pytest.mark.parametrize(("text", "complaint"), [("udp/53", "UDP"), ("x", "not a port"), ("0", "1 to 65535")])
def test_bad_ports(text: str, complaint: str) -> None:
    with pytest.raises(VirtctlError, match=complaint):
        parse_port(text)


def test_ssh_targets_and_scp_locations() -> None:
    assert parse_ssh_target("fedora@vm/myvm/dev").user == "fedora"
    assert parse_ssh_target("vmi/x").user is None
    remote = parse_scp_location("fedora@vmi/x/ns:/tmp/f")
    assert remote.path == "/tmp/f" and remote.remote is not None and remote.remote.target == Target("vmi", "x", "ns")
    for local in ("/etc/hosts", "./a:b", "notes.txt", "~/x"):
        assert parse_scp_location(local).remote is None
