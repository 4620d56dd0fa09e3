"""Configurator: the domain type (kvm or qemu emulation) and the machine type."""

from __future__ import annotations

import re

from virt_launcher.errors import UnsupportedFieldError

from .context import ConvertContext
from .xml import Element, sub

FIELD = "spec.domain.machine.type"
DEFAULT_MACHINE = "q35"
_MACHINE_RE = re.compile(r"^(q35|pc|pc-q35-[0-9][0-9.]*|pc-i440fx-[0-9][0-9.]*)$")


def machine_type(ctx: ConvertContext) -> str:
    machine = ctx.vmi.spec.domain.machine
    value = machine.type if machine is not None and machine.type else DEFAULT_MACHINE
    if not _MACHINE_RE.match(value):
        raise UnsupportedFieldError(
            f"machine type {value!r} is not supported (use q35, pc or a versioned one)", field=FIELD
        )
    return value


def is_q35(ctx: ConvertContext) -> bool:
    return "q35" in machine_type(ctx)


def configure(domain: Element, ctx: ConvertContext) -> None:
    domain.set("type", ctx.domain_type)
    os = sub(domain, "os")
    sub(os, "type", "hvm", arch="x86_64", machine=machine_type(ctx))
