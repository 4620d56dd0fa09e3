"""What the converter needs besides the VMI: resolved disk sources, network attachments, host facts, paths."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kubevirt_types import VirtualMachineInstance

DomainType = Literal["kvm", "qemu"]
UUID_NAMESPACE = uuid.UUID("6a1d3f4e-2b7c-5d8e-9f01-a2b3c4d5e6f7")


@dataclass(frozen=True)
class DiskSource:
    """A volume made ready for QEMU: a file or block device, its format, and the image it overlays."""

    kind: Literal["file", "block"]
    path: str
    format: Literal["raw", "qcow2"]
    readonly: bool = False
    """The data must not be written whatever the disk says (config ISOs, read-only claims)."""
    backing: DiskSource | None = None
    """The read-only image under a copy-on-write overlay (containerDisk, ephemeral)."""


@dataclass(frozen=True)
class KernelFiles:
    """Kernel and initrd of a kernel boot container, as checked paths inside the pod."""

    kernel: str
    initrd: str | None = None


@dataclass(frozen=True)
class NetAttachment:
    """How one interface reaches its network: a tap prepared by the privileged step, or QEMU user networking."""

    kind: Literal["tap", "user"]
    tap: str | None = None


@dataclass(frozen=True)
class HostFirmware:
    """OVMF images of the node (Debian's ``ovmf`` package)."""

    code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    vars: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    secure_code: str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
    secure_vars: str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"


@dataclass(frozen=True)
class DomainPaths:
    """Paths the domain XML names: sockets and per-domain state inside the pod."""

    serial_socket: str
    vnc_socket: str
    nvram_dir: str
    guest_agent_socket: str


@dataclass
class ConvertContext:
    """Everything one conversion reads; ``warnings`` collects what was adapted rather than honoured."""

    vmi: VirtualMachineInstance
    domain_type: DomainType
    paths: DomainPaths
    disks: Mapping[str, DiskSource] = field(default_factory=dict)
    kernel: KernelFiles | None = None
    networks: Mapping[str, NetAttachment] = field(default_factory=dict)
    firmware: HostFirmware = field(default_factory=HostFirmware)
    warnings: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.vmi.metadata.namespace or "default"

    @property
    def name(self) -> str:
        return self.vmi.metadata.name or "vmi"

    @property
    def domain_name(self) -> str:
        """KubeVirt's naming: ``<namespace>_<name>``."""
        return f"{self.namespace}_{self.name}"

    @property
    def domain_uuid(self) -> str:
        firmware = self.vmi.spec.domain.firmware
        if firmware is not None and firmware.uuid:
            return firmware.uuid
        return str(uuid.uuid5(UUID_NAMESPACE, f"{self.namespace}/{self.name}"))

    def vcpu_count(self) -> int:
        """Sockets x cores x threads, or the CPU request/limit rounded up when no topology is given."""
        cpu = self.vmi.spec.domain.cpu
        if cpu is not None and (cpu.sockets or cpu.cores or cpu.threads):
            return (cpu.sockets or 1) * (cpu.cores or 1) * (cpu.threads or 1)
        resources = self.vmi.spec.domain.resources
        for amounts in (resources.limits, resources.requests) if resources else ():
            if amounts and "cpu" in amounts:
                return max(1, -(-amounts["cpu"].as_milli() // 1000))
        return 1


def nvram_path(ctx: ConvertContext) -> str:
    return str(Path(ctx.paths.nvram_dir) / f"{ctx.domain_name}_VARS.fd")
