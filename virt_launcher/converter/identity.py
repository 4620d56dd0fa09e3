"""Configurator: the domain's name, UUID, podvirt metadata, SMBIOS identity and lifecycle actions."""

from __future__ import annotations

from lxml import etree

from .context import ConvertContext
from .xml import Element, sub

METADATA_NS = "https://podvirt.dev/launcher/v1"


def configure(domain: Element, ctx: ConvertContext) -> None:
    sub(domain, "name", ctx.domain_name)
    sub(domain, "uuid", ctx.domain_uuid)
    metadata = sub(domain, "metadata")
    owner = etree.SubElement(metadata, f"{{{METADATA_NS}}}vmi", nsmap={"podvirt": METADATA_NS})
    for key, value in (("namespace", ctx.namespace), ("name", ctx.name), ("uid", ctx.vmi.metadata.uid)):
        if value:
            etree.SubElement(owner, f"{{{METADATA_NS}}}{key}").text = value

    sysinfo = sub(domain, "sysinfo", type="smbios")
    system = sub(sysinfo, "system")
    sub(system, "entry", "podvirt", name="manufacturer")
    sub(system, "entry", "None", name="product")
    sub(system, "entry", ctx.domain_uuid, name="uuid")
    firmware = ctx.vmi.spec.domain.firmware
    if firmware is not None and firmware.serial:
        sub(system, "entry", firmware.serial, name="serial")
    sub(system, "entry", "podvirt", name="family")

    # A guest power-off ends the domain (and the launcher); a guest reboot stays inside QEMU.
    sub(domain, "on_poweroff", "destroy")
    sub(domain, "on_reboot", "restart")
    sub(domain, "on_crash", "destroy")
