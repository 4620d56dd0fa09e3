"""Configurator: a virtio random number generator fed from the host's /dev/urandom."""

from __future__ import annotations

from .context import ConvertContext
from .xml import Element, ensure, sub


def configure(domain: Element, ctx: ConvertContext) -> None:
    if ctx.vmi.spec.domain.devices.rng is None:
        return
    rng = sub(ensure(domain, "devices"), "rng", model="virtio")
    sub(rng, "backend", "/dev/urandom", model="random")
