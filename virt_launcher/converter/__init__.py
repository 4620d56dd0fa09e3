"""VMI spec -> libvirt domain XML: an ordered chain of small configurators, validated against libvirt's schema.

Each configurator is a module with ``configure(domain, ctx)``: it reads the VMI (and the resolved volumes,
networks and host facts in ``ctx``) and adds its part of the domain with lxml. Configurators raise
``InvalidSpecError`` or ``UnsupportedFieldError`` naming the spec field at fault; the converter never silently
drops a field it cannot honour except where ``ctx.warnings`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lxml import etree

from . import (
    agent,
    clock,
    cpu,
    disks,
    features,
    firmware,
    graphics,
    identity,
    inputs,
    interfaces,
    machine,
    memory,
    rng,
    serial,
    watchdog,
)
from .context import ConvertContext, DiskSource, DomainPaths, HostFirmware, KernelFiles, NetAttachment
from .schema import SchemaError, validate
from .xml import Element, ensure, to_string

Configurator = Callable[[Element, ConvertContext], None]

CONFIGURATORS: Sequence[tuple[str, Configurator]] = (
    ("identity", identity.configure),
    ("machine", machine.configure),
    ("cpu", cpu.configure),
    ("memory", memory.configure),
    ("firmware", firmware.configure),
    ("clock", clock.configure),
    ("features", features.configure),
    ("disks", disks.configure),
    ("interfaces", interfaces.configure),
    ("serial", serial.configure),
    ("graphics", graphics.configure),
    ("rng", rng.configure),
    ("inputs", inputs.configure),
    ("watchdog", watchdog.configure),
    ("agent", agent.configure),
)


def new_domain() -> Element:
    domain = etree.Element("domain")
    ensure(domain, "devices")
    return domain


def convert(ctx: ConvertContext, *, check: bool = True) -> Element:
    """The domain element for ``ctx.vmi``; with ``check``, validated against libvirt's schema."""
    domain = new_domain()
    for _name, configure in CONFIGURATORS:
        configure(domain, ctx)
    domain.append(ensure(domain, "devices"))  # moved last, where people look for it
    if check:
        validate(domain)
    return domain


def convert_to_string(ctx: ConvertContext) -> str:
    return to_string(convert(ctx))


__all__ = [
    "CONFIGURATORS",
    "ConvertContext",
    "DiskSource",
    "DomainPaths",
    "HostFirmware",
    "KernelFiles",
    "NetAttachment",
    "SchemaError",
    "convert",
    "convert_to_string",
    "new_domain",
]
