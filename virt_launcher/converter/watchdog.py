"""Configurator: an emulated i6300esb watchdog and its action."""

from __future__ import annotations

from kubevirt_types import WatchdogAction

from .context import ConvertContext
from .xml import Element, ensure, sub


def configure(domain: Element, ctx: ConvertContext) -> None:
    watchdog = ctx.vmi.spec.domain.devices.watchdog
    if watchdog is None or watchdog.i6300esb is None:
        return
    action = watchdog.i6300esb.action or WatchdogAction.RESET
    sub(ensure(domain, "devices"), "watchdog", model="i6300esb", action=action.value)
