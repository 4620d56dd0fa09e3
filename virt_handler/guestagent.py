"""The guest agent as the handler sees it: what the launcher relays of libvirt's guest info, bounded.

The launcher answers ``GET /v1/guestinfo`` with libvirt's ``virDomainGetGuestInfo`` typed parameters as
one flat object (``os.id``, ``hostname``, ``if.0.addr.1.addr``, ...). A launcher pod is untrusted, so
nothing here follows its counts: indexes are read up to fixed caps, strings are cut, addresses must
parse. Three consumers:

- :func:`parse_guest_info` → :class:`GuestInfo`, what :mod:`vmistatus` writes into ``status``
  (``guestOSInfo`` with KubeVirt's field names, the guest's own interface names and addresses);
- :func:`guest_agent_info` → KubeVirt's ``VirtualMachineInstanceGuestAgentInfo``, the answer of the
  ``guestosinfo`` subresource;
- :class:`AgentTracker`, one per running VMI: when to ask the agent next (every
  :data:`POLL_INTERVAL` s while it answers, :data:`IDLE_POLL_INTERVAL` s while it does not — the
  launcher's AgentConnected event brings the next ask forward) and whether it counts as connected
  (one missed answer is forgiven, :data:`MISSES_TO_DISCONNECT` are not), driven by a caller's clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POLL_INTERVAL = 10.0
IDLE_POLL_INTERVAL = 30.0
MISSES_TO_DISCONNECT = 2
MAX_STRING = 256
MAX_INTERFACES = 16
MAX_ADDRESSES = 16
MAX_USERS = 32
MAX_FILESYSTEMS = 64

#: ``status.guestOSInfo`` field (KubeVirt's name) ← libvirt's guest info parameter.
OS_FIELDS = {
    "id": "os.id",
    "name": "os.name",
    "prettyName": "os.pretty-name",
    "version": "os.version",
    "versionId": "os.version-id",
    "kernelRelease": "os.kernel-release",
    "kernelVersion": "os.kernel-version",
    "machine": "os.machine",
}


@dataclass(frozen=True)
class GuestInterface:
    """One network interface as the guest names it, with its usable (not loopback, not link-local) addresses."""

    name: str
    mac: str
    ips: tuple[str, ...]


@dataclass(frozen=True)
class GuestInfo:
    os: tuple[tuple[str, str], ...]  # (KubeVirt field, value), only the fields the agent gave
    hostname: str
    interfaces: tuple[GuestInterface, ...]

    def os_info(self) -> dict[str, str]:
        return dict(self.os)


@dataclass(frozen=True)
class AgentState:
    """The agent as last seen: whether it answers, and the last thing it said (kept when it stops)."""

    connected: bool
    info: GuestInfo | None = None


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    return value[:MAX_STRING] if isinstance(value, str) else ""


def _number(raw: Mapping[str, Any], key: str) -> int | float | None:
    value = raw.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(raw: Mapping[str, Any], key: str, cap: int) -> int:
    value = _number(raw, key)
    return max(0, min(int(value), cap)) if value is not None else 0


def _usable_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return None
    return str(ip)


def _interfaces(raw: Mapping[str, Any]) -> tuple[GuestInterface, ...]:
    out = []
    for i in range(_count(raw, "if.count", MAX_INTERFACES)):
        name = _text(raw, f"if.{i}.name")
        mac = _text(raw, f"if.{i}.hwaddr").lower()
        if not name or name == "lo":
            continue
        ips = []
        for j in range(_count(raw, f"if.{i}.addr.count", MAX_ADDRESSES)):
            ip = _usable_ip(_text(raw, f"if.{i}.addr.{j}.addr"))
            if ip is not None and ip not in ips:
                ips.append(ip)
        ips.sort(key=lambda a: ":" in a)  # IPv4 first, as KubeVirt lists them
        out.append(GuestInterface(name, mac, tuple(ips)))
    return tuple(out)


def parse_guest_info(raw: Mapping[str, Any]) -> GuestInfo:
    """The facts ``status`` carries, from a launcher's (untrusted) guest info answer."""
    os_info = tuple((field, value) for field, key in OS_FIELDS.items() if (value := _text(raw, key)))
    return GuestInfo(os_info, _text(raw, "hostname"), _interfaces(raw))


def guest_agent_info(raw: Mapping[str, Any]) -> dict[str, Any]:
    """KubeVirt's ``VirtualMachineInstanceGuestAgentInfo`` (the ``guestosinfo`` answer) from libvirt's guest info."""
    info = parse_guest_info(raw)
    answer: dict[str, Any] = {"hostname": info.hostname, "os": info.os_info()}
    if "timezone.name" in raw:
        answer["timezone"] = f"{_text(raw, 'timezone.name')}, {int(_number(raw, 'timezone.offset') or 0)}"
    users = []
    for i in range(_count(raw, "user.count", MAX_USERS)):
        user: dict[str, Any] = {"userName": _text(raw, f"user.{i}.name")}
        if domain := _text(raw, f"user.{i}.domain"):
            user["domain"] = domain
        login = _number(raw, f"user.{i}.login-time")  # milliseconds; KubeVirt reports seconds
        if login is not None:
            user["loginTime"] = login / 1000
        users.append(user)
    answer["userList"] = users
    disks = []
    for i in range(_count(raw, "fs.count", MAX_FILESYSTEMS)):
        disk: dict[str, Any] = {
            "diskName": _text(raw, f"fs.{i}.name"),
            "mountPoint": _text(raw, f"fs.{i}.mountpoint"),
            "fileSystemType": _text(raw, f"fs.{i}.fstype"),
        }
        for field, key in (("usedBytes", f"fs.{i}.used-bytes"), ("totalBytes", f"fs.{i}.total-bytes")):
            value = _number(raw, key)
            if value is not None:
                disk[field] = int(value)
        disks.append(disk)
    answer["fsInfo"] = {"disks": disks}
    return answer


class AgentTracker:
    """When to ask one VMI's agent next, and what its answers add up to. Not thread-safe: one follower owns it."""

    def __init__(self, interval: float = POLL_INTERVAL, idle_interval: float = IDLE_POLL_INTERVAL) -> None:
        self.interval = interval
        self.idle_interval = idle_interval
        self.next_poll = 0.0
        self.misses = 0
        self.state: AgentState | None = None  # None: never asked since the handler started

    def due(self, now: float) -> bool:
        return now >= self.next_poll

    def seconds_until_due(self, now: float) -> float:
        return max(0.0, self.next_poll - now)

    def poke(self) -> None:
        """An agent (dis)connected event: ask at the next chance."""
        self.next_poll = 0.0

    def postpone(self, now: float) -> None:
        """No answer either way (the launcher itself did not answer): ask again later, change nothing."""
        self.next_poll = now + self.interval

    def answered(self, now: float, info: GuestInfo) -> bool:
        """Record an answer; True when what ``status`` shows changes."""
        self.next_poll = now + self.interval
        self.misses = 0
        return self._become(AgentState(True, info))

    def missed(self, now: float) -> bool:
        """Record a failed ask (the agent did not answer); True when what ``status`` shows changes."""
        self.misses += 1
        previous = self.state
        if previous is not None and previous.connected and self.misses < MISSES_TO_DISCONNECT:
            self.next_poll = now + self.interval
            return False
        self.next_poll = now + self.idle_interval
        return self._become(AgentState(False, previous.info if previous else None))

    def _become(self, state: AgentState) -> bool:
        changed = state != self.state
        self.state = state
        return changed
