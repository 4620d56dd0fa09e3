"""The launcher's one domain through its life: sync (prepare, define, start), commands, events, the outcome.

Exit codes (the pod's outcome, read by the handler and the controller):
    0  Succeeded: the guest powered itself off, or shut down within its grace period (or never started
       because the launcher was stopped before it had a spec)
    1  Failed: the guest crashed, QEMU died, it was killed, or it ignored ACPI past its grace period
    2  the launcher itself could not work (bad configuration, libvirt unavailable, a rejected spec given
       on the command line)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from virt_launcher.errors import LauncherError

from .backend import Backend, BackendError, BackendEvent
from .events import EventLog, rfc3339
from .protocol import ProtocolError

log = logging.getLogger(__name__)

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


class Phase(StrEnum):
    WAITING = "WaitingForSpec"
    PREPARING = "Preparing"
    RUNNING = "Running"
    STOPPING = "Stopping"
    FINISHED = "Finished"


@dataclass(frozen=True)
class PreparedDomain:
    """What the preparation step returns: the domain XML and the facts the runtime needs about it."""

    xml: str
    name: str
    uuid: str
    vmi_uid: str | None = None
    start_paused: bool = False
    grace_seconds: int = 30
    serial_console: bool = True
    warnings: tuple[str, ...] = ()


Preparer = Callable[[dict[str, Any]], PreparedDomain]
Hook = Callable[[PreparedDomain], None]
TimerFactory = Callable[[float, Callable[[], None]], Any]


def _default_timer(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


def spec_digest(vmi: dict[str, Any]) -> str:
    """The spec in a canonical form; compared, not hashed (hashlib would cost the launcher ~1 MiB)."""
    return json.dumps(vmi.get("spec"), sort_keys=True, separators=(",", ":"))


@dataclass
class Controller:
    backend: Backend
    prepare: Preparer
    events: EventLog
    before_start: Hook = lambda _: None
    after_start: Hook = lambda _: None
    timer: TimerFactory = _default_timer
    clock: Callable[[], float] = time.time
    phase: Phase = Phase.WAITING
    prepared: PreparedDomain | None = None
    exit_code: int | None = None
    finish_reason: str = ""
    timestamps: dict[str, float] = field(default_factory=dict)
    _digest: str | None = None
    _stop_request: str | None = None
    _grace_expired: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _sync_lock: threading.Lock = field(default_factory=threading.Lock)
    _finished: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.backend.set_event_handler(self.on_backend_event)

    # --- sync ---------------------------------------------------------------------------------------------

    def sync(self, vmi: dict[str, Any], capabilities: dict[str, str] | None = None) -> dict[str, Any]:
        """Prepares and starts the domain once (see ``protocol``); ``capabilities`` are QEMU capability
        cache files for libvirt, handed to the backend before anything needs them."""
        digest = spec_digest(vmi)
        with self._sync_lock:
            with self._lock:
                if self.phase != Phase.WAITING:
                    if digest != self._digest:
                        raise ProtocolError("Conflict", "the domain already runs another spec; changes need a new VMI")
                    return self.info()
                self.phase = Phase.PREPARING
            if capabilities:
                self.backend.seed_capabilities(capabilities)
            try:
                prepared = self.prepare(vmi)
            except LauncherError:
                with self._lock:
                    self.phase = Phase.WAITING
                raise
            with self._lock:
                self.prepared, self._digest = prepared, digest
                self.timestamps["prepared"] = self.clock()
                for warning in prepared.warnings:
                    log.warning("spec adapted: %s", warning)
                if self._stop_request is not None:
                    self._finish(EXIT_SUCCEEDED, "stopped before the domain started")
                    return self.info()
            self.before_start(prepared)
            try:
                self.backend.define_and_start(prepared.xml, paused=prepared.start_paused)
            except BackendError as exc:
                self.events.append("Failed", "StartFailed", "Shutoff", exc.message)
                with self._lock:
                    self._finish(EXIT_FAILED, f"the domain did not start: {exc.message}")
                raise
            with self._lock:
                if self.phase == Phase.PREPARING:
                    self.phase = Phase.RUNNING
                self.timestamps.setdefault("started", self.clock())
            self.after_start(prepared)
            return self.info()

    # --- commands -----------------------------------------------------------------------------------------

    def shutdown(self, grace: int | None = None) -> dict[str, Any]:
        """ACPI power-off now; destroy after ``grace`` seconds (default: the VMI's grace period)."""
        with self._lock:
            if self.phase in (Phase.WAITING, Phase.PREPARING):
                self._stop_request = "shutdown"
                if self.phase == Phase.WAITING:
                    self._finish(EXIT_SUCCEEDED, "stopped before any spec arrived")
                return self.info()
            if self.phase == Phase.FINISHED:
                return self.info()
            first = self._stop_request is None
            self._stop_request = self._stop_request or "shutdown"
            self.phase = Phase.STOPPING
            seconds = grace if grace is not None else (self.prepared.grace_seconds if self.prepared else 0)
        if first or grace is not None:
            log.info("shutting the guest down; destroying it in %ss if it is still running", seconds)
            if seconds <= 0:
                self._expire_grace()
            else:
                try:
                    self.backend.shutdown()
                except BackendError as exc:
                    log.warning("ACPI shutdown refused (%s); waiting for the grace period", exc.message)
                self.timer(float(seconds), self._expire_grace)
        return self.info()

    def _expire_grace(self) -> None:
        with self._lock:
            if self.phase == Phase.FINISHED:
                return
            self._grace_expired = True
        log.warning("grace period over; destroying the domain")
        self._destroy()

    def kill(self) -> dict[str, Any]:
        with self._lock:
            if self.phase == Phase.FINISHED:
                return self.info()
            if self.phase in (Phase.WAITING, Phase.PREPARING):
                self._stop_request = "kill"
                if self.phase == Phase.WAITING:
                    self._finish(EXIT_FAILED, "killed before any spec arrived")
                return self.info()
            self._stop_request = "kill"
            self.phase = Phase.STOPPING
        self._destroy()
        return self.info()

    def _destroy(self) -> None:
        try:
            self.backend.destroy()
        except BackendError as exc:
            log.error("destroying the domain failed: %s", exc.message)

    def _running_domain(self) -> None:
        with self._lock:
            if self.phase != Phase.RUNNING:
                raise ProtocolError("Conflict", f"the launcher is {self.phase.value}, not Running")

    def pause(self) -> dict[str, Any]:
        return self._simple(self.backend.pause)

    def unpause(self) -> dict[str, Any]:
        return self._simple(self.backend.resume)

    def reset(self) -> dict[str, Any]:
        return self._simple(self.backend.reset)

    def soft_reboot(self) -> dict[str, Any]:
        return self._simple(self.backend.reboot)

    def _simple(self, action: Callable[[], None]) -> dict[str, Any]:
        self._running_domain()
        try:
            action()
        except BackendError as exc:
            raise ProtocolError("Conflict", exc.message) from exc
        return self.info()

    def stats(self) -> dict[str, Any]:
        self._running_domain()
        return self.backend.stats()

    def guest_info(self) -> dict[str, Any]:
        self._running_domain()
        return self.backend.guest_info()

    # --- events and outcome -------------------------------------------------------------------------------

    def on_backend_event(self, event: BackendEvent) -> None:
        status = self.backend.status()
        state = status.state if status else "NoState"
        self.events.append(event.type, event.reason, state)
        if event.type != "Stopped":
            return
        with self._lock:
            if event.reason == "Shutdown" and not self._grace_expired and self._stop_request != "kill":
                self._finish(EXIT_SUCCEEDED, "the guest shut down")
            elif self._grace_expired:
                self._finish(EXIT_FAILED, "the guest did not shut down within its grace period")
            elif self._stop_request == "kill":
                self._finish(EXIT_FAILED, "the domain was killed")
            else:
                self._finish(EXIT_FAILED, f"the domain stopped: {event.reason}")

    def _finish(self, code: int, why: str) -> None:
        if self.phase == Phase.FINISHED:
            return
        self.phase = Phase.FINISHED
        self.exit_code = code
        self.timestamps["stopped"] = self.clock()
        self.finish_reason = why
        log.info("domain finished (%s): exit code %d", why, code)
        self._finished.set()

    def wait(self, timeout: float | None = None) -> int | None:
        self._finished.wait(timeout)
        return self.exit_code

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def info(self) -> dict[str, Any]:
        with self._lock:
            status = self.backend.status() if self.phase not in (Phase.WAITING, Phase.PREPARING) else None
            body: dict[str, Any] = {
                "phase": self.phase.value,
                "state": status.state if status else ("Shutoff" if self.phase == Phase.FINISHED else "NoState"),
                "reason": status.reason if status else "",
                "timestamps": {k: rfc3339(v) for k, v in self.timestamps.items()},
            }
            if self.prepared is not None:
                body.update(name=self.prepared.name, uuid=self.prepared.uuid, warnings=list(self.prepared.warnings))
            if self.exit_code is not None:
                body["exitCode"] = self.exit_code
                body["outcome"] = "Succeeded" if self.exit_code == EXIT_SUCCEEDED else "Failed"
                body["message"] = self.finish_reason
            return body
