"""Configurator: machine features (ACPI, APIC, SMM, paravirtual spinlocks, KVM hiding, Hyper-V)."""

from __future__ import annotations

from kubevirt_types import FeatureHyperv, FeatureState

from .context import ConvertContext
from .firmware import uses_secure_boot
from .xml import Element, on_off, sub

# Hyper-V enlightenments that are a plain on/off switch: (spec attribute, libvirt element).
HYPERV_SIMPLE = (
    ("relaxed", "relaxed"),
    ("vapic", "vapic"),
    ("vpindex", "vpindex"),
    ("runtime", "runtime"),
    ("synic", "synic"),
    ("reset", "reset"),
    ("frequencies", "frequencies"),
    ("reenlightenment", "reenlightenment"),
    ("tlbflush", "tlbflush"),
    ("ipi", "ipi"),
    ("evmcs", "evmcs"),
)


def _enabled(state: FeatureState | None) -> bool:
    return state is not None and state.enabled is not False


def configure(domain: Element, ctx: ConvertContext) -> None:
    spec = ctx.vmi.spec.domain.features
    features = sub(domain, "features")
    # KubeVirt attaches ACPI unless told not to; without it a graceful shutdown is impossible.
    if spec is None or spec.acpi is None or spec.acpi.enabled is not False:
        sub(features, "acpi")
    if spec is None or spec.apic is None or spec.apic.enabled is not False:
        apic = sub(features, "apic")
        if spec is not None and spec.apic is not None and spec.apic.end_of_interrupt is not None:
            apic.set("eoi", on_off(spec.apic.end_of_interrupt))
    if spec is not None and spec.hyperv is not None:
        _hyperv(sub(features, "hyperv", mode="custom"), spec.hyperv)
    if spec is not None and spec.kvm is not None and spec.kvm.hidden is not None:
        sub(sub(features, "kvm"), "hidden", state=on_off(spec.kvm.hidden))
    if spec is not None and spec.pvspinlock is not None:
        sub(features, "pvspinlock", state=on_off(spec.pvspinlock.enabled))
    smm = spec.smm if spec is not None else None
    if smm is not None or uses_secure_boot(ctx):
        sub(features, "smm", state=on_off(None if smm is None else smm.enabled))


def _hyperv(hyperv: Element, spec: FeatureHyperv) -> None:
    # libvirt's schema interleaves these elements, so their order is free.
    for attribute, element in HYPERV_SIMPLE:
        state = getattr(spec, attribute)
        if state is not None:
            sub(hyperv, element, state=on_off(state.enabled))
    if spec.spinlocks is not None:
        enabled = _enabled(spec.spinlocks)
        retries = (spec.spinlocks.spinlocks or 4096) if enabled else None
        sub(hyperv, "spinlocks", state=on_off(enabled), retries=retries)
    if spec.synictimer is not None:
        timer = sub(hyperv, "stimer", state=on_off(spec.synictimer.enabled))
        if spec.synictimer.direct is not None:
            sub(timer, "direct", state=on_off(spec.synictimer.direct.enabled))
    if spec.vendorid is not None:
        enabled = _enabled(spec.vendorid) and bool(spec.vendorid.vendorid)
        sub(hyperv, "vendor_id", state=on_off(enabled), value=spec.vendorid.vendorid if enabled else None)
