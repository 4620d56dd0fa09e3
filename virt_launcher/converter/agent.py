"""Configurator: the QEMU guest agent channel (virtio-serial), so GetGuestInfo works when the guest runs one."""

from __future__ import annotations

from .context import ConvertContext
from .xml import Element, ensure, sub


def configure(domain: Element, ctx: ConvertContext) -> None:
    channel = sub(ensure(domain, "devices"), "channel", type="unix")
    # No path: libvirt places the socket in its own (private) state directory.
    sub(channel, "source", mode="bind")
    sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
