"""Configurator: the QEMU guest agent channel (virtio-serial), so GetGuestInfo works when the guest runs one."""

from __future__ import annotations

from .context import ConvertContext
from .xml import Element, ensure, sub


def configure(domain: Element, ctx: ConvertContext) -> None:
    channel = sub(ensure(domain, "devices"), "channel", type="unix")
    # A short path of our own: libvirt's default one, under its state directory and named after the
    # domain, is too long for a unix socket when the namespace and VMI name are long.
    sub(channel, "source", mode="bind", path=ctx.paths.guest_agent_socket)
    sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
