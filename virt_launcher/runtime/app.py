"""Wires the launcher together and runs it until its domain is finished; every exit path tears QEMU down."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from virt_launcher.errors import LauncherError
from virt_launcher.layout import PodLayout

from .api import CommandAPI
from .backend import Backend, FakeBackend
from .console import ConsoleProxy
from .controller import EXIT_ERROR, Controller, PreparedDomain
from .embed import save_capabilities
from .events import EventLog, NotifyPusher
from .guard import QemuWatchdog, kill_qemu
from .httpd import UnixHTTPServer
from .kvm import kvm_usable
from .logs import VMI_CONTEXT
from .preparer import SubprocessPreparer
from .qemulog import QemuLogFollower

log = logging.getLogger("virt-launcher")


@dataclass(frozen=True)
class LauncherConfig:
    layout: PodLayout
    vmi: dict[str, Any] | None = None
    notify_socket: Path | None = None
    cache_dir: Path | None = None
    emulation: str = "auto"
    """auto (KVM when usable), always (never KVM), never (fail without KVM)."""
    network_mode: str = "auto"
    backend: str = "libvirt"


def choose_domain_type(emulation: str, cache_dir: Path | None) -> tuple[str, str]:
    if emulation == "always":
        return "qemu", "software emulation requested"
    usable, why = kvm_usable(cache_dir)
    if usable:
        return "kvm", why
    if emulation == "never":
        raise LauncherError(f"KVM is not usable ({why}) and emulation is not allowed")
    return "qemu", f"KVM is not usable ({why}); using software emulation"


class Launcher:
    """One launcher process: owns the backend, the sockets, the helpers, and their teardown."""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config
        self.layout = config.layout
        self.events = EventLog()
        self.console: ConsoleProxy | None = None
        self.watchdog: QemuWatchdog | None = None
        self.qemu_log: QemuLogFollower | None = None
        self.pusher: NotifyPusher | None = None
        self.server: UnixHTTPServer | None = None
        self.backend: Backend | None = None
        self.controller: Controller | None = None
        self.preparer: SubprocessPreparer | None = None
        self.started = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._open()
            assert self.controller is not None
            self._install_signal_handlers()
            if self.config.vmi is not None:
                try:
                    self.controller.sync(self.config.vmi)
                except LauncherError as exc:
                    log.error("the VMI given at start was rejected: %s", exc)
                    return EXIT_ERROR
            code = self.controller.wait()
            return EXIT_ERROR if code is None else code
        except LauncherError as exc:
            log.error("%s", exc)
            return EXIT_ERROR
        finally:
            self.teardown()

    def _open(self) -> None:
        domain_type = "qemu"
        if self.config.backend != "fake":
            domain_type, why = choose_domain_type(self.config.emulation, self.config.cache_dir)
            log.info("domain type %s: %s", domain_type, why)
        preparer = SubprocessPreparer(self.layout, domain_type, self.config.network_mode)
        self.preparer = preparer
        if self.config.vmi is not None:
            preparer.start_early(self.config.vmi)  # overlaps the child's imports with opening libvirt
        else:
            preparer.start_spare()  # warm by the time the handler hands the spec over
        if self.config.backend == "fake":
            self.backend = FakeBackend()
        else:
            from .libvirt_backend import LibvirtBackend  # noqa: PLC0415 - keeps libvirt out of fake runs

            self.backend = LibvirtBackend(self.layout.libvirt_root, self.config.cache_dir)
        log.info("libvirt runtime %s at %s", self.backend.runtime, self.backend.uri)
        self.controller = Controller(
            self.backend, preparer, self.events, before_start=self._before_start, after_start=self._after_start
        )
        if self.config.notify_socket is not None:
            vmi = self.config.vmi or {}
            self.pusher = NotifyPusher(self.config.notify_socket, _owner(vmi))
            self.events.subscribe(self.pusher)
        facts = {"uri": self.backend.uri, "runtime": self.backend.runtime, "domainType": domain_type}
        api = CommandAPI(self.controller, facts, self.layout.console_log)
        self.server = UnixHTTPServer(self.layout.command_socket, api.handler(), api.body_limit)
        self.server.start()
        log.info("command socket ready at %s", self.layout.command_socket)

    def _before_start(self, prepared: PreparedDomain) -> None:
        assert self.backend is not None
        name = prepared.name
        namespace, _, vmi_name = name.partition("_")
        VMI_CONTEXT.update(namespace=namespace, name=vmi_name)
        if self.pusher is not None and not self.pusher.owner.get("name"):
            self.pusher.owner.update(namespace=namespace, name=vmi_name)
            if prepared.vmi_uid:
                self.pusher.owner["uid"] = prepared.vmi_uid
        if prepared.serial_console:
            self.console = ConsoleProxy(self.layout.serial_socket, self.layout.console_socket, self.layout.console_log)
            self.console.start()
        if self.backend.runtime == "embed":
            root = self.layout.libvirt_root
            self.watchdog = QemuWatchdog(root / "run/qemu" / f"{name}.pid")
            self.qemu_log = QemuLogFollower(root / "log/qemu" / f"{name}.log")
            self.qemu_log.start()

    def _after_start(self, prepared: PreparedDomain) -> None:
        log.info("domain %s running %.3fs after launcher start", prepared.name, time.monotonic() - self.started)
        release_free_memory()
        if self.config.cache_dir is not None and self.config.backend != "fake":
            root, cache = self.layout.libvirt_root, self.config.cache_dir
            threading.Thread(target=save_capabilities, args=(root, cache), name="caps-cache", daemon=True).start()

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            controller = self.controller
            if controller is None:
                return
            log.info("received %s; shutting the guest down", signal.Signals(signum).name)
            threading.Thread(target=controller.shutdown, name="signal-shutdown", daemon=True).start()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)

    def teardown(self) -> None:
        """Idempotent; safe at any point of a half-finished start."""
        self.events.append("LauncherExiting", "Exit", "Shutoff")
        if self.server is not None:
            self.server.stop()
        pidfile = self.backend.qemu_pidfile() if self.backend is not None else None
        if self.backend is not None:
            with contextlib.suppress(LauncherError):
                self.backend.destroy()
        kill_qemu(pidfile)
        if self.watchdog is not None:
            self.watchdog.disarm()
        if self.qemu_log is not None:
            self.qemu_log.stop()
        if self.console is not None:
            self.console.stop()
        if self.pusher is not None:
            self.pusher.close()
        if self.preparer is not None:
            self.preparer.close()
        if self.backend is not None:
            self.backend.close()


def release_free_memory() -> None:
    """Hands the heap that start-up freed (capability parsing, JSON, XML) back to the kernel."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _owner(vmi: dict[str, Any]) -> dict[str, str]:
    meta = vmi.get("metadata") or {}
    return {k: str(meta[k]) for k in ("namespace", "name", "uid") if meta.get(k)}
