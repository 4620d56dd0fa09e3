"""Configurator: disks, CD-ROMs and LUNs from the resolved volume sources (bus, cache, I/O, boot order)."""

from __future__ import annotations

import re

from kubevirt_types import Disk, DiskBus, DriverCache, DriverIO
from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

from .context import ConvertContext, DiskSource
from .xml import Element, ensure, sub

FIELD = "spec.domain.devices.disks"
_ALIAS_RE = re.compile(r"[A-Za-z0-9_-]{1,60}")
_PCI_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


def device_name(prefix: str, index: int) -> str:
    """The guest device name libvirt expects: vda..vdz, vdaa.. (the same scheme as sda)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def pci_address(parent: Element, value: str, field: str) -> None:
    match = _PCI_RE.match(value)
    if match is None:
        raise InvalidSpecError(f"{value!r} is not a PCI address like 0000:01:00.0", field=field)
    domain, bus, slot, function = match.groups()
    sub(parent, "address", type="pci", domain=f"0x{domain}", bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{function}")


def claim_boot_order(domain: Element, order: int, field: str) -> None:
    """Boot orders are unique across all devices of a domain."""
    if domain.find(f"devices/*/boot[@order='{order}']") is not None:
        raise InvalidSpecError(f"boot order {order} is already used by another device", field=field)


def _kind_and_bus(disk: Disk, field: str) -> tuple[str, DiskBus, bool]:
    """(libvirt device, bus, read-only asked) of one disk; a disk with no target is a virtio disk."""
    if disk.cdrom is not None:
        bus = disk.cdrom.bus or DiskBus.SATA
        if bus == DiskBus.VIRTIO:
            raise UnsupportedFieldError(
                "a CD-ROM cannot be on the virtio bus; use sata or scsi", field=f"{field}.cdrom.bus"
            )
        return "cdrom", bus, True
    if disk.lun is not None:
        bus = disk.lun.bus or DiskBus.SCSI
        if bus != DiskBus.SCSI:
            raise UnsupportedFieldError("a LUN must be on the scsi bus", field=f"{field}.lun.bus")
        return "lun", bus, bool(disk.lun.readonly)
    target = disk.disk
    return "disk", (target.bus if target and target.bus else DiskBus.VIRTIO), bool(target and target.readonly)


def _source(parent: Element, source: DiskSource) -> None:
    if source.kind == "block":
        sub(parent, "source", dev=source.path)
    else:
        sub(parent, "source", file=source.path)


def _backing_chain(disk_el: Element, source: DiskSource) -> None:
    """States the whole chain, ending in an empty backingStore, so libvirt never probes image headers."""
    backing = source.backing
    parent = disk_el
    while backing is not None:
        store = sub(parent, "backingStore", type="block" if backing.kind == "block" else "file")
        sub(store, "format", type=backing.format)
        _source(store, backing)
        parent, backing = store, backing.backing
    sub(parent, "backingStore")


def configure(domain: Element, ctx: ConvertContext) -> None:
    devices = ensure(domain, "devices")
    spec_devices = ctx.vmi.spec.domain.devices
    counters = {"vd": 0, "sd": 0}
    need_scsi = False
    iothreads = 0
    vcpus = ctx.vcpu_count()
    for i, disk in enumerate(spec_devices.disks or []):
        field = f"{FIELD}[{i}]"
        source = ctx.disks.get(disk.name)
        if source is None:
            raise InvalidSpecError(f"no volume named {disk.name!r}", field=f"{field}.name")
        kind, bus, readonly = _kind_and_bus(disk, field)
        if kind == "lun" and source.kind != "block":
            raise UnsupportedFieldError("a LUN needs a block-mode volume", field=f"{field}.lun")
        prefix = "vd" if bus == DiskBus.VIRTIO else "sd"
        dev = device_name(prefix, counters[prefix])
        counters[prefix] += 1
        need_scsi = need_scsi or bus == DiskBus.SCSI

        el = sub(devices, "disk", type="block" if source.kind == "block" else "file", device=kind)
        driver = sub(el, "driver", name="qemu", type=source.format)
        if disk.cache is not None:
            driver.set("cache", disk.cache.value)
        if disk.io is not None:
            if disk.io == DriverIO.NATIVE and disk.cache != DriverCache.NONE:
                raise InvalidSpecError("io: native needs cache: none", field=f"{field}.io")
            driver.set("io", disk.io.value)
        if bus == DiskBus.VIRTIO and kind == "disk":
            if disk.dedicated_io_thread:
                iothreads += 1
                driver.set("iothread", str(iothreads))
            if spec_devices.block_multi_queue:
                driver.set("queues", str(vcpus))
        _source(el, source)
        if source.backing is not None:
            _backing_chain(el, source)
        target = sub(el, "target", dev=dev, bus=bus.value)
        if disk.cdrom is not None and disk.cdrom.tray:
            if disk.cdrom.tray not in ("open", "closed"):
                raise InvalidSpecError("tray must be open or closed", field=f"{field}.cdrom.tray")
            target.set("tray", disk.cdrom.tray)
        if disk.boot_order is not None:
            claim_boot_order(domain, disk.boot_order, f"{field}.bootOrder")
            sub(el, "boot", order=disk.boot_order)
        if readonly or source.readonly:
            sub(el, "readonly")
        if disk.shareable:
            sub(el, "shareable")
        if disk.serial:
            if not re.fullmatch(r"[A-Za-z0-9_.+\- ]{1,36}", disk.serial):
                raise InvalidSpecError("a serial is up to 36 letters, digits, spaces or _.+-", field=f"{field}.serial")
            sub(el, "serial", disk.serial)
        if _ALIAS_RE.fullmatch(disk.name):
            sub(el, "alias", name=f"ua-{disk.name}")
        if disk.disk is not None and disk.disk.pci_address:
            if bus != DiskBus.VIRTIO:
                raise InvalidSpecError("pciAddress needs the virtio bus", field=f"{field}.disk.pciAddress")
            pci_address(el, disk.disk.pci_address, f"{field}.disk.pciAddress")
    if need_scsi:
        sub(devices, "controller", type="scsi", index=0, model="virtio-scsi")
    if iothreads:
        sub(domain, "iothreads", iothreads)
