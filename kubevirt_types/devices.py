"""The VMI's devices: disks (disk, cdrom, lun), network interfaces, consoles, rng, inputs, watchdog."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ._base import LIST_MAP_BY_NAME, UNIQUE_NAMES, KubeModel, OneOf
from .enums import DiskBus, DriverCache, DriverIO, InputBus, InputType, InterfaceModel, PortProtocol, WatchdogAction

#: Upper bounds on list lengths; they also bound the apiserver's cost estimate of per-item CEL rules.
MAX_DISKS = 256
MAX_INTERFACES = 64


class DiskTarget(KubeModel):
    """A disk presented to the guest as a hard disk."""

    bus: DiskBus | None = None
    """Bus: virtio (default), sata or scsi."""
    readonly: bool | None = None
    """Attach read-only."""
    pci_address: str | None = None
    """Guest PCI address (virtio only), e.g. 0000:81:01.10."""


class CDRomTarget(KubeModel):
    """A disk presented to the guest as a CD-ROM."""

    bus: DiskBus | None = None
    """Bus: sata (default) or scsi."""
    readonly: bool | None = None
    """Read-only; CD-ROMs always are (default true)."""
    tray: str | None = None
    """Tray state: closed (default) or open."""


class LunTarget(KubeModel):
    """A disk presented to the guest as a SCSI LUN."""

    bus: DiskBus | None = None
    """Bus: scsi (default)."""
    readonly: bool | None = None
    """Attach read-only."""
    reservation: bool | None = None
    """Pass SCSI persistent reservations through."""


class Disk(KubeModel):
    """How a volume appears to the guest; its name is the name of the volume."""

    rules = (OneOf(("disk", "cdrom", "lun")),)

    name: str
    """Name of the volume this disk shows."""
    disk: DiskTarget | None = None
    """Attach as a hard disk (the default)."""
    cdrom: CDRomTarget | None = None
    """Attach as a CD-ROM."""
    lun: LunTarget | None = None
    """Attach as a SCSI LUN."""
    boot_order: int | None = Field(default=None, ge=1)
    """Boot priority; 1 is tried first. Disks without one are not booted from when any disk has one."""
    serial: str | None = None
    """Serial number the guest sees."""
    cache: DriverCache | None = None
    """Host cache mode: none, writethrough or writeback."""
    io: DriverIO | None = None
    """Host I/O mode: native or threads."""
    dedicated_io_thread: bool | None = Field(default=None, alias="dedicatedIOThread")
    """Give this disk its own I/O thread."""
    shareable: bool | None = None
    """The disk may be used by several VMs at once."""


class InterfaceMasquerade(KubeModel):
    """Masquerade binding: the guest sits behind NAT on the pod's IP."""


class InterfaceBridge(KubeModel):
    """Bridge binding: the guest takes over the pod's IP through a bridge."""


class Port(KubeModel):
    """A port forwarded to the guest (masquerade binding); none listed means all ports."""

    name: str | None = None
    """Port name."""
    protocol: PortProtocol | None = None
    """TCP (default) or UDP."""
    port: int = Field(ge=1, le=65535)
    """Port number."""


class Interface(KubeModel):
    """A network card of the guest; its name is the name of the network it connects to."""

    rules = (OneOf(("masquerade", "bridge")),)

    name: str
    """Name of the network this interface connects to."""
    masquerade: InterfaceMasquerade | None = None
    """Connect through NAT on the pod's IP."""
    bridge: InterfaceBridge | None = None
    """Connect through a bridge taking the pod's IP."""
    model: InterfaceModel | None = None
    """Emulated card (default virtio)."""
    mac_address: str | None = Field(default=None, pattern=r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
    """MAC address, e.g. de:ad:00:00:be:af; generated when unset."""
    ports: list[Port] | None = Field(default=None, max_length=1024)
    """Ports forwarded to the guest (masquerade only); all when unset."""
    boot_order: int | None = Field(default=None, ge=1)
    """Boot priority for network (PXE) boot."""
    pci_address: str | None = None
    """Guest PCI address."""


class Rng(KubeModel):
    """A virtio random number generator fed from the host."""


class Input(KubeModel):
    """An input device."""

    name: str
    """Device name."""
    type: InputType
    """Device type: tablet."""
    bus: InputBus | None = None
    """Bus: usb or virtio."""


class I6300ESBWatchdog(KubeModel):
    """An emulated Intel 6300ESB watchdog."""

    action: WatchdogAction | None = None
    """What to do when the guest stops responding (default reset)."""


class Watchdog(KubeModel):
    """A watchdog device."""

    rules = (OneOf(("i6300esb",), required=True),)

    name: str
    """Device name."""
    i6300esb: I6300ESBWatchdog | None = Field(default=None, alias="i6300esb")
    """Intel 6300ESB watchdog."""


class Devices(KubeModel):
    """The guest's devices."""

    disks: Annotated[list[Disk], UNIQUE_NAMES] | None = Field(
        default=None, max_length=MAX_DISKS, json_schema_extra=LIST_MAP_BY_NAME
    )
    """Disks, CD-ROMs and LUNs, each showing one volume."""
    interfaces: Annotated[list[Interface], UNIQUE_NAMES] | None = Field(
        default=None, max_length=MAX_INTERFACES, json_schema_extra=LIST_MAP_BY_NAME
    )
    """Network cards, each attached to one network."""
    autoattach_pod_interface: bool | None = None
    """Add a default interface on the pod network when none is listed (default true)."""
    autoattach_serial_console: bool | None = None
    """Attach a serial console (default true)."""
    autoattach_graphics_device: bool | None = None
    """Attach a VGA device reachable with VNC (default true)."""
    autoattach_mem_balloon: bool | None = None
    """Attach a memory balloon device (default true)."""
    rng: Rng | None = None
    """Attach a random number generator."""
    inputs: Annotated[list[Input], UNIQUE_NAMES] | None = Field(
        default=None, max_length=16, json_schema_extra=LIST_MAP_BY_NAME
    )
    """Input devices."""
    watchdog: Watchdog | None = None
    """A watchdog."""
    network_interface_multiqueue: bool | None = None
    """One queue per vCPU on virtio network cards."""
    block_multi_queue: bool | None = None
    """One queue per vCPU on virtio disks."""
