"""Configurator: the serial console, wired to the launcher's socket (QEMU connects to the launcher)."""

from __future__ import annotations

from .context import ConvertContext
from .xml import Element, ensure, sub


def configure(domain: Element, ctx: ConvertContext) -> None:
    if ctx.vmi.spec.domain.devices.autoattach_serial_console is False:
        return
    devices = ensure(domain, "devices")
    # Connect mode: the launcher listens before QEMU starts, so no early byte is lost.
    serial = sub(devices, "serial", type="unix")
    source = sub(serial, "source", mode="connect", path=ctx.paths.serial_socket)
    sub(source, "reconnect", enabled=True, timeout=1)
    sub(serial, "target", type="isa-serial", port=0)
    sub(serial, "alias", name="serial0")
