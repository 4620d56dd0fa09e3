"""Configurator: the guest clock (UTC with an offset, or a time zone) and its timers."""

from __future__ import annotations

import re

from kubevirt_types import RTCTimer, Timer
from virt_launcher.errors import InvalidSpecError

from .context import ConvertContext
from .xml import Element, sub

FIELD = "spec.domain.clock"
_TIMEZONE_RE = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")


def configure(domain: Element, ctx: ConvertContext) -> None:
    spec = ctx.vmi.spec.domain.clock
    clock = sub(domain, "clock")
    if spec is not None and spec.timezone:
        if not _TIMEZONE_RE.match(spec.timezone) or len(spec.timezone) > 64:
            raise InvalidSpecError(f"{spec.timezone!r} is not a time zone name", field=f"{FIELD}.timezone")
        clock.set("offset", "timezone")
        clock.set("timezone", spec.timezone)
    elif spec is not None and spec.utc is not None and spec.utc.offset_seconds:
        clock.set("offset", "variable")
        clock.set("adjustment", str(spec.utc.offset_seconds))
        clock.set("basis", "utc")
    else:
        clock.set("offset", "utc")
    timers = spec.timer if spec is not None else None
    if timers is None:
        return
    plain: list[tuple[str, Timer | None]] = [("hpet", timers.hpet), ("pit", timers.pit)]
    for name, timer in plain:
        if timer is not None:
            sub(clock, "timer", name=name, present=timer.present, tickpolicy=timer.tick_policy)
    if timers.rtc is not None:
        rtc: RTCTimer = timers.rtc
        sub(clock, "timer", name="rtc", present=rtc.present, tickpolicy=rtc.tick_policy, track=rtc.track)
    for name, present in (("kvmclock", timers.kvm), ("hypervclock", timers.hyperv)):
        if present is None:
            continue
        if ctx.domain_type != "kvm" and present.present is not False:
            ctx.warnings.append(f"{FIELD}.timer: {name} needs KVM; left out under emulation")
            continue
        sub(clock, "timer", name=name, present=present.present)
