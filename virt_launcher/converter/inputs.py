"""Configurator: input devices (tablet on usb or virtio) and the USB controller they need, none otherwise."""

from __future__ import annotations

from kubevirt_types import InputBus
from virt_launcher.errors import InvalidSpecError

from .context import ConvertContext
from .xml import Element, ensure, sub

FIELD = "spec.domain.devices.inputs"


def configure(domain: Element, ctx: ConvertContext) -> None:
    devices = ensure(domain, "devices")
    inputs = ctx.vmi.spec.domain.devices.inputs or []
    names: set[str] = set()
    usb = False
    for i, spec in enumerate(inputs):
        if spec.name in names:
            raise InvalidSpecError(f"input name {spec.name!r} is used twice", field=f"{FIELD}[{i}].name")
        names.add(spec.name)
        bus = spec.bus or InputBus.USB
        usb = usb or bus == InputBus.USB
        sub(devices, "input", type=spec.type.value, bus=bus.value)
    # KubeVirt leaves USB out unless a device needs it: one controller less to emulate.
    sub(devices, "controller", type="usb", index=0, model="qemu-xhci" if usb else "none")
