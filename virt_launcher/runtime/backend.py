"""The narrow interface between the launcher and libvirt, and a fake backend for protocol and controller tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from virt_launcher.errors import LauncherError


class AgentUnavailableError(LauncherError):
    """The guest runs no qemu-guest-agent, or it does not answer."""

    reason = "AgentUnavailable"


class BackendError(LauncherError):
    """libvirt refused an operation."""

    reason = "Internal"


@dataclass(frozen=True)
class DomainStatus:
    state: str
    """Running, Blocked, Paused, ShuttingDown, Shutoff, Crashed, PMSuspended or NoState."""
    reason: str


@dataclass(frozen=True)
class BackendEvent:
    """A libvirt domain event, already named: Started, Paused, Resumed, Shutdown, Stopped, Crashed, ..."""

    type: str
    reason: str


EventHandler = Callable[[BackendEvent], None]


class Backend(Protocol):
    """What the controller needs from libvirt; one domain per launcher."""

    uri: str
    runtime: str
    """embed, session or fake."""

    def set_event_handler(self, handler: EventHandler) -> None: ...
    def seed_capabilities(self, files: dict[str, str]) -> None:
        """QEMU capabilities cache files for libvirt (checked names and sizes); best effort."""
        ...

    def define_and_start(self, xml: str, *, paused: bool) -> None: ...
    def status(self) -> DomainStatus | None: ...
    def shutdown(self) -> None: ...
    def destroy(self, *, graceful: bool = False) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def reset(self) -> None: ...
    def reboot(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def guest_info(self) -> dict[str, Any]: ...
    def qemu_pidfile(self) -> Path | None: ...
    def qemu_log(self) -> Path | None: ...
    def close(self) -> None: ...


@dataclass
class FakeBackend:
    """An in-memory domain that obeys the same calls and emits the same events as the libvirt backend.

    ``guest_ignores_acpi`` makes ACPI shutdown a no-op, like a guest without an ACPI daemon.
    """

    uri: str = "fake:///"
    runtime: str = "fake"
    guest_ignores_acpi: bool = False
    agent: dict[str, Any] | None = None
    calls: list[str] = field(default_factory=list)
    xml: str | None = None
    _status: DomainStatus | None = None
    _handler: EventHandler | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_event_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    def seed_capabilities(self, files: dict[str, str]) -> None:
        self.calls.append(f"seed_capabilities {','.join(sorted(files))}")

    def _emit(self, type_: str, reason: str, state: str, state_reason: str) -> None:
        with self._lock:
            self._status = DomainStatus(state, state_reason)
        if self._handler is not None:
            self._handler(BackendEvent(type_, reason))

    def _require(self, *states: str) -> None:
        if self._status is None or self._status.state not in states:
            raise BackendError(f"domain is {self._status.state if self._status else 'not defined'}")

    def define_and_start(self, xml: str, *, paused: bool) -> None:
        self.calls.append("define_and_start")
        self.xml = xml
        self._emit("Defined", "Added", "Shutoff", "Unknown")
        self._emit("Started", "Booted", "Running", "Booted")
        if paused:
            self._emit("Paused", "Paused", "Paused", "StartingUp")

    def status(self) -> DomainStatus | None:
        with self._lock:
            return self._status

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self._require("Running", "Paused")
        if not self.guest_ignores_acpi:
            self._emit("Shutdown", "Finished", "Shutoff", "Shutdown")
            self._emit("Stopped", "Shutdown", "Shutoff", "Shutdown")

    def destroy(self, *, graceful: bool = False) -> None:
        self.calls.append("destroy")
        if self._status is not None and self._status.state not in ("Shutoff", "Crashed"):
            self._emit("Stopped", "Destroyed", "Shutoff", "Destroyed")

    def pause(self) -> None:
        self.calls.append("pause")
        self._require("Running")
        self._emit("Paused", "Paused", "Paused", "User")

    def resume(self) -> None:
        self.calls.append("resume")
        self._require("Paused")
        self._emit("Resumed", "Unpaused", "Running", "Unpaused")

    def reset(self) -> None:
        self.calls.append("reset")
        self._require("Running", "Paused")
        self._emit("Rebooted", "Reset", self._status.state if self._status else "Running", "Booted")

    def reboot(self) -> None:
        self.calls.append("reboot")
        self._require("Running")
        self._emit("Rebooted", "GuestReboot", "Running", "Booted")

    def crash(self) -> None:
        """Test hook: QEMU died under the domain."""
        self._emit("Stopped", "Failed", "Shutoff", "Crashed")

    def guest_poweroff(self) -> None:
        """Test hook: the guest powered itself off."""
        self._emit("Shutdown", "Guest", "Shutoff", "Shutdown")
        self._emit("Stopped", "Shutdown", "Shutoff", "Shutdown")

    def stats(self) -> dict[str, Any]:
        self._require("Running", "Paused")
        return {"cpu": {"timeNs": 1}, "memory": {}, "vcpus": [], "blocks": [], "nets": []}

    def guest_info(self) -> dict[str, Any]:
        if self.agent is None:
            raise AgentUnavailableError("the guest agent is not connected")
        return self.agent

    def qemu_pidfile(self) -> Path | None:
        return None

    def qemu_log(self) -> Path | None:
        return None

    def close(self) -> None:
        self.calls.append("close")
