"""The guest agent as the handler reads it: libvirt's guest info parsed with bounds, KubeVirt's shapes,
and when to ask again (a fake clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from virt_handler.guestagent import (
    MAX_INTERFACES,
    MAX_STRING,
    AgentTracker,
    GuestInterface,
    guest_agent_info,
    parse_guest_info,
)
from virt_handler.launcher_client import LauncherError, LauncherUnreachableError
from virt_handler.vmisync import VMIMemory, VMISync

pytestmark = pytest.mark.unit

# What libvirt 9.0's virDomainGetGuestInfo gave for the cloud guest (abridged).
DEBIAN: dict[str, Any] = {
    "os.id": "debian",
    "os.name": "Debian GNU/Linux",
    "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
    "os.version": "12 (bookworm)",
    "os.version-id": "12",
    "os.kernel-release": "6.1.0-28-amd64",
    "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
    "os.machine": "x86_64",
    "hostname": "cloudvm",
    "timezone.name": "UTC",
    "timezone.offset": 0,
    "user.count": 1,
    "user.0.name": "podvirt",
    "user.0.login-time": 1764097200123,
    "fs.count": 1,
    "fs.0.name": "vda1",
    "fs.0.mountpoint": "/",
    "fs.0.fstype": "ext4",
    "fs.0.total-bytes": 2040373248,
    "fs.0.used-bytes": 800000000,
    "if.count": 2,
    "if.0.name": "lo",
    "if.0.hwaddr": "00:00:00:00:00:00",
    "if.0.addr.count": 2,
    "if.0.addr.0.type": "ipv4",
    "if.0.addr.0.addr": "127.0.0.1",
    "if.0.addr.1.type": "ipv6",
    "if.0.addr.1.addr": "::1",
    "if.1.name": "enp1s0",
    "if.1.hwaddr": "52:54:00:AB:CD:EF",
    "if.1.addr.count": 3,
    "if.1.addr.0.type": "ipv6",
    "if.1.addr.0.addr": "fd10:0:2::2",
    "if.1.addr.1.type": "ipv6",
    "if.1.addr.1.addr": "fe80::5054:ff:feab:cdef",
    "if.1.addr.2.type": "ipv4",
    "if.1.addr.2.addr": "10.0.2.2",
}


def test_os_info_uses_kubevirts_field_names() -> None:
    assert parse_guest_info(DEBIAN).os_info() == {
        "id": "debian",
        "name": "Debian GNU/Linux",
        "prettyName": "Debian GNU/Linux 12 (bookworm)",
        "version": "12 (bookworm)",
        "versionId": "12",
        "kernelRelease": "6.1.0-28-amd64",
        "kernelVersion": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
        "machine": "x86_64",
    }


def test_interfaces_skip_loopback_and_link_local_and_list_ipv4_first() -> None:
    assert parse_guest_info(DEBIAN).interfaces == (
        GuestInterface("enp1s0", "52:54:00:ab:cd:ef", ("10.0.2.2", "fd10:0:2::2")),
    )


def test_a_lying_launcher_cannot_inflate_or_poison_the_answer() -> None:
    raw: dict[str, Any] = {"os.id": "x" * 100_000, "os.name": ["not", "text"], "if.count": 10**9}
    for i in range(MAX_INTERFACES + 5):
        raw[f"if.{i}.name"] = f"eth{i}"
        raw[f"if.{i}.addr.count"] = 10**9
        raw[f"if.{i}.addr.0.addr"] = "10.1.0.1; rm -rf /"
        raw[f"if.{i}.addr.1.addr"] = "10.1.0.2"
    info = parse_guest_info(raw)
    assert info.os_info() == {"id": "x" * MAX_STRING}
    assert len(info.interfaces) == MAX_INTERFACES
    assert all(i.ips == ("10.1.0.2",) for i in info.interfaces)
    assert parse_guest_info({"if.count": "3", "user.count": True}).interfaces == ()


def test_guestosinfo_answer_has_kubevirts_shape() -> None:
    answer = guest_agent_info(DEBIAN)
    assert answer["hostname"] == "cloudvm"
    assert answer["os"]["prettyName"] == "Debian GNU/Linux 12 (bookworm)"
    assert answer["timezone"] == "UTC, 0"
    assert answer["userList"] == [{"userName": "podvirt", "loginTime": 1764097200.123}]
    assert answer["fsInfo"] == {
        "disks": [
            {
                "diskName": "vda1",
                "mountPoint": "/",
                "fileSystemType": "ext4",
                "usedBytes": 800000000,
                "totalBytes": 2040373248,
            }
        ]
    }


def connected(tracker: AgentTracker) -> bool | None:
    """None: never asked."""
    return None if tracker.state is None else tracker.state.connected


def test_tracker_asks_at_once_then_every_interval() -> None:
    tracker = AgentTracker(interval=10, idle_interval=30)
    assert tracker.due(0.0) and connected(tracker) is None
    assert tracker.missed(100.0) is True  # first look: not connected (yet)
    assert not tracker.due(125.0) and tracker.seconds_until_due(125.0) == 5.0
    tracker.poke()  # an AgentConnected event
    assert tracker.due(126.0)
    tracker.answered(126.0, parse_guest_info(DEBIAN))
    assert not tracker.due(135.0) and tracker.due(136.0)
    tracker.postpone(136.0)  # the launcher did not answer at all
    assert not tracker.due(145.0) and connected(tracker) is True


def test_tracker_reports_changes_only() -> None:
    tracker = AgentTracker()
    info = parse_guest_info(DEBIAN)
    assert tracker.answered(0, info) is True
    assert connected(tracker) is True
    assert tracker.answered(10, info) is False
    assert tracker.answered(20, parse_guest_info({**DEBIAN, "os.version-id": "13"})) is True


def test_one_missed_answer_is_forgiven_two_disconnect_and_keep_the_last_info() -> None:
    tracker = AgentTracker()
    info = parse_guest_info(DEBIAN)
    tracker.answered(0, info)
    assert tracker.missed(10) is False
    assert connected(tracker) is True
    assert tracker.missed(20) is True
    assert tracker.state is not None and not tracker.state.connected and tracker.state.info == info
    assert tracker.missed(30) is False
    assert tracker.answered(40, info) is True


class FakeClient:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer

    def guest_info(self) -> dict[str, Any]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def poll(answer: dict[str, Any] | Exception, sync: VMISync, mem: Any) -> bool:
    return sync._poll_agent("ns/vm", FakeClient(answer), mem)  # type: ignore[arg-type]


def test_the_sync_polls_into_the_vmis_memory_and_ignores_an_unreachable_launcher() -> None:
    sync = VMISync(kube=None, node="n", kubelet_root=Path("/nonexistent"), dhcp=None, enqueue=lambda k: None)  # type: ignore[arg-type]
    mem = VMIMemory()
    assert poll(LauncherUnreachableError("socket gone"), sync, mem) is False
    assert connected(mem.agent) is None, "a lost launcher says nothing about the agent"
    assert poll(DEBIAN, sync, mem) is True
    assert connected(mem.agent) is True
    agent_gone = LauncherError("the guest agent did not answer", 503, "AgentUnavailable")
    assert poll(agent_gone, sync, mem) is False
    assert poll(agent_gone, sync, mem) is True
    assert connected(mem.agent) is False
