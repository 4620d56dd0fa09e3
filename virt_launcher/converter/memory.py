"""Configurator: guest memory (memory.guest, else the memory request or limit) and the memory balloon."""

from __future__ import annotations

from kubevirt_types import Quantity
from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

from .context import ConvertContext
from .xml import Element, ensure, sub

FIELD = "spec.domain.memory"
MIN_GUEST = 1 << 20
MAX_GUEST = 1 << 44


def guest_memory_bytes(ctx: ConvertContext) -> int:
    """memory.guest, else the memory request, else the memory limit (KubeVirt's order)."""
    domain = ctx.vmi.spec.domain
    resources = domain.resources
    candidates: list[tuple[Quantity | None, str]] = [
        (domain.memory.guest if domain.memory else None, f"{FIELD}.guest"),
        ((resources.requests or {}).get("memory") if resources else None, "spec.domain.resources.requests.memory"),
        ((resources.limits or {}).get("memory") if resources else None, "spec.domain.resources.limits.memory"),
    ]
    for amount, field in candidates:
        if amount is not None:
            size = amount.as_int()
            if not MIN_GUEST <= size <= MAX_GUEST:
                raise InvalidSpecError(f"guest memory must be between 1Mi and 16Ti, not {amount}", field=field)
            return size
    raise InvalidSpecError("set memory.guest or resources.requests.memory", field=f"{FIELD}.guest")


def configure(domain: Element, ctx: ConvertContext) -> None:
    memory = ctx.vmi.spec.domain.memory
    if memory is not None and memory.max_guest is not None:
        raise UnsupportedFieldError("memory hotplug is not supported; remove maxGuest", field=f"{FIELD}.maxGuest")
    size = guest_memory_bytes(ctx)
    # libvirt rounds to KiB; say it in KiB so the domain reads back as written.
    kib = -(-size // 1024)
    sub(domain, "memory", kib, unit="KiB")
    sub(domain, "currentMemory", kib, unit="KiB")
    devices = ensure(domain, "devices")
    balloon = ctx.vmi.spec.domain.devices.autoattach_mem_balloon
    sub(devices, "memballoon", model="none" if balloon is False else "virtio")
