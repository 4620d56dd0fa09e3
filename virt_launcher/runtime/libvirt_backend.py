"""The real backend: libvirt's QEMU driver embedded in this process (``qemu:///embed``), session as fallback."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import libvirt

from .backend import AgentUnavailableError, BackendError, BackendEvent, DomainStatus, EventHandler
from .embed import prepare_root, seed_capabilities

log = logging.getLogger(__name__)

STATES = ("NoState", "Running", "Blocked", "Paused", "ShuttingDown", "Shutoff", "Crashed", "PMSuspended")
STATE_REASONS: dict[int, tuple[str, ...]] = {
    1: ("Unknown", "Booted", "Migrated", "Restored", "FromSnapshot", "Unpaused", "MigrationCanceled",
        "SaveCanceled", "Wakeup", "Crashed", "Postcopy", "PostcopyFailed"),
    3: ("Unknown", "User", "Migration", "Save", "Dump", "IOError", "Watchdog", "FromSnapshot", "ShuttingDown",
        "Snapshot", "Crashed", "StartingUp", "Postcopy", "PostcopyFailed", "APIError"),
    4: ("Unknown", "User"),
    5: ("Unknown", "Shutdown", "Destroyed", "Crashed", "Migrated", "Saved", "Failed", "FromSnapshot", "Daemon"),
    6: ("Unknown", "Panicked"),
}  # fmt: skip
EVENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Defined", ("Added", "Updated", "Renamed", "FromSnapshot")),
    ("Undefined", ("Removed", "Renamed")),
    ("Started", ("Booted", "Migrated", "Restored", "FromSnapshot", "Wakeup")),
    ("Paused", ("Paused", "Migrated", "IOError", "Watchdog", "Restored", "FromSnapshot", "APIError", "Postcopy",
                "PostcopyFailed")),
    ("Resumed", ("Unpaused", "Migrated", "FromSnapshot", "Postcopy", "PostcopyFailed")),
    ("Stopped", ("Shutdown", "Destroyed", "Crashed", "Migrated", "Saved", "Failed", "FromSnapshot")),
    ("Shutdown", ("Finished", "Guest", "Host")),
    ("PMSuspended", ("Memory", "Disk")),
    ("Crashed", ("Panicked", "CrashLoaded")),
)  # fmt: skip
WATCHDOG_ACTIONS = ("None", "Pause", "Reset", "Poweroff", "Shutdown", "Debug", "Inject-NMI")
AGENT_TIMEOUT_SECONDS = 5

_loop_started = False
_loop_lock = threading.Lock()


def _name(table: tuple[str, ...], index: int) -> str:
    return table[index] if 0 <= index < len(table) else f"Unknown({index})"


def start_event_loop() -> None:
    """libvirt's default event loop on a daemon thread; needed before any connection opens."""
    global _loop_started  # noqa: PLW0603 - one loop per process, by libvirt's design
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class LibvirtBackend:
    """One domain on one libvirt connection; ``runtime`` says whether it is embedded or a session daemon."""

    def __init__(self, root: Path, cache_dir: Path | None = None, *, allow_session: bool = True) -> None:
        self.root = root
        start_event_loop()
        prepare_root(root, cache_dir)
        try:
            self.conn = libvirt.open(f"qemu:///embed?root={root}")
            self.runtime = "embed"
        except libvirt.libvirtError as exc:
            if not allow_session:
                raise BackendError(f"embedded libvirt failed to open: {exc}") from exc
            log.warning("embedded libvirt failed (%s); falling back to qemu:///session", exc)
            try:
                self.conn = libvirt.open("qemu:///session")
            except libvirt.libvirtError as exc2:
                raise BackendError(f"neither embedded nor session libvirt opened: {exc2}") from exc2
            self.runtime = "session"
        self.uri = self.conn.getURI()
        self.dom: libvirt.virDomain | None = None
        self._handler: EventHandler | None = None
        self._callbacks: list[int] = []
        self._register_callbacks()

    # --- events -------------------------------------------------------------------------------------------

    def set_event_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    def seed_capabilities(self, files: dict[str, str]) -> None:
        if self.runtime != "embed":
            return  # a session daemon keeps its cache in the user's home, filled by its own probe
        try:
            written = seed_capabilities(self.root, files)
        except OSError as exc:
            log.warning("QEMU capabilities not seeded (libvirt will probe QEMU itself): %s", exc)
            return
        log.info("QEMU capabilities seeded from the node: %s", ", ".join(written) or "libvirt had them already")

    def _ours(self, dom: libvirt.virDomain) -> bool:
        return self.dom is not None and dom.UUIDString() == self.dom.UUIDString()

    def _emit(self, dom: libvirt.virDomain, type_: str, reason: str) -> None:
        if self._handler is not None and self._ours(dom):
            try:
                self._handler(BackendEvent(type_, reason))
            except Exception:
                log.exception("domain event handler failed")

    def _register_callbacks(self) -> None:
        def lifecycle(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            if 0 <= event < len(EVENTS):
                type_, details = EVENTS[event]
                self._emit(dom, type_, _name(details, detail))

        def reboot(_conn: Any, dom: Any, _opaque: Any) -> None:
            self._emit(dom, "Rebooted", "Guest")

        def watchdog(_conn: Any, dom: Any, action: int, _opaque: Any) -> None:
            self._emit(dom, "Watchdog", _name(WATCHDOG_ACTIONS, action))

        def agent(_conn: Any, dom: Any, state: int, _reason: int, _opaque: Any) -> None:
            self._emit(dom, "AgentConnected" if state == 1 else "AgentDisconnected", "Channel")

        for event_id, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, watchdog),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, agent),
        ):
            self._callbacks.append(self.conn.domainEventRegisterAny(None, event_id, callback, None))

    # --- domain -------------------------------------------------------------------------------------------

    def define_and_start(self, xml: str, *, paused: bool) -> None:
        try:
            dom = self.conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            self.dom = dom
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
        except libvirt.libvirtError as exc:
            raise BackendError(str(exc)) from exc

    def _domain(self) -> libvirt.virDomain:
        if self.dom is None:
            raise BackendError("no domain is defined")
        return self.dom

    def _call(self, what: str, *args: Any) -> Any:
        try:
            return getattr(self._domain(), what)(*args)
        except libvirt.libvirtError as exc:
            raise BackendError(str(exc)) from exc

    def status(self) -> DomainStatus | None:
        if self.dom is None:
            return None
        try:
            state, reason = self.dom.state()
        except libvirt.libvirtError:
            return DomainStatus("NoState", "Unknown")
        return DomainStatus(_name(STATES, state), _name(STATE_REASONS.get(state, ("Unknown",)), reason))

    def shutdown(self) -> None:
        self._call("shutdownFlags", libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def destroy(self, *, graceful: bool = False) -> None:
        if self.dom is None or not self.dom.isActive():
            return
        self._call("destroyFlags", libvirt.VIR_DOMAIN_DESTROY_GRACEFUL if graceful else 0)

    def pause(self) -> None:
        self._call("suspend")

    def resume(self) -> None:
        self._call("resume")

    def reset(self) -> None:
        self._call("reset", 0)

    def reboot(self) -> None:
        # Flags 0: the guest agent when it is connected, otherwise the ACPI power button with a fake reboot.
        self._call("reboot", 0)

    def stats(self) -> dict[str, Any]:
        from .stats import normalise  # noqa: PLC0415 - only stats requests need it

        try:
            records = self.conn.domainListGetStats([self._domain()], 0, 0)
        except libvirt.libvirtError as exc:
            raise BackendError(str(exc)) from exc
        return normalise(records[0][1] if records else {})

    def guest_info(self) -> dict[str, Any]:
        dom = self._domain()
        try:
            dom.agentSetResponseTimeout(AGENT_TIMEOUT_SECONDS, 0)
            info: dict[str, Any] = dom.guestInfo(0, 0)
        except libvirt.libvirtError as exc:
            raise AgentUnavailableError(f"the guest agent did not answer: {exc.get_error_message()}") from exc
        return info

    def qemu_pidfile(self) -> Path | None:
        if self.runtime != "embed" or self.dom is None:
            return None
        return self.root / "run/qemu" / f"{self.dom.name()}.pid"

    def qemu_log(self) -> Path | None:
        if self.runtime != "embed" or self.dom is None:
            return None
        return self.root / "log/qemu" / f"{self.dom.name()}.log"

    def close(self) -> None:
        for callback_id in self._callbacks:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.domainEventDeregisterAny(callback_id)
        self._callbacks.clear()
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()
