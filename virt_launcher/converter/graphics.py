"""Configurator: a VGA card with VNC on a unix socket, unless autoattachGraphicsDevice is false."""

from __future__ import annotations

from .context import ConvertContext
from .xml import Element, ensure, sub


def configure(domain: Element, ctx: ConvertContext) -> None:
    devices = ensure(domain, "devices")
    if ctx.vmi.spec.domain.devices.autoattach_graphics_device is False:
        return
    graphics = sub(devices, "graphics", type="vnc")
    sub(graphics, "listen", type="socket", socket=ctx.paths.vnc_socket)
    video = sub(devices, "video")
    sub(video, "model", type="vga", vram=16384, heads=1)
