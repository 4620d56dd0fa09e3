"""Shared builders for the launcher's unit tests: VMIs from dict fragments and conversion contexts with fake disks."""

from __future__ import annotations

from typing import Any

from kubevirt_types import VirtualMachineInstance
from virt_launcher.converter import ConvertContext, DiskSource, DomainPaths, KernelFiles, NetAttachment

PATHS = DomainPaths(
    serial_socket="/pod/private/serial0.sock",
    vnc_socket="/pod/sockets/vnc.sock",
    nvram_dir="/pod/nvram",
    guest_agent_socket="/pod/private/qga.sock",
)


def vmi(domain: dict[str, Any] | None = None, **spec: Any) -> VirtualMachineInstance:
    base: dict[str, Any] = {"memory": {"guest": "64Mi"}, "devices": {}}
    return VirtualMachineInstance.model_validate(
        {
            "metadata": {"name": "testvm", "namespace": "ns1", "uid": "0000-1111"},
            "spec": {"domain": {**base, **(domain or {})}, **spec},
        }
    )


def fake_disk(volume: dict[str, Any]) -> DiskSource:
    """What the preparation step would have made of a volume, without touching the disk."""
    name = volume["name"]
    if "containerDisk" in volume or "ephemeral" in volume:
        backing = DiskSource("file", f"/pod/volumes/{name}/disk/image.qcow2", "qcow2", readonly=True)
        return DiskSource("file", f"/pod/private/disks/{name}.qcow2", "qcow2", backing=backing)
    if "emptyDisk" in volume:
        return DiskSource("file", f"/pod/private/disks/{name}.qcow2", "qcow2")
    if "persistentVolumeClaim" in volume or "dataVolume" in volume:
        return DiskSource("block", f"/pod/volumes/{name}", "raw")
    if "hostDisk" in volume:
        return DiskSource("file", f"/pod/volumes/{name}/disk.img", "raw")
    return DiskSource("file", f"/pod/private/disks/{name}.iso", "raw", readonly=True)


def context(vm: VirtualMachineInstance, domain_type: str = "qemu", *, tap: bool = False) -> ConvertContext:
    volumes = [v.model_dump(by_alias=True, exclude_none=True) for v in vm.spec.volumes or []]
    firmware = vm.spec.domain.firmware
    kernel = None
    if firmware is not None and firmware.kernel_boot is not None and firmware.kernel_boot.container is not None:
        kernel = KernelFiles("/pod/volumes/.kernel-boot/boot/vmlinuz", "/pod/volumes/.kernel-boot/boot/initrd.img")
    networks = {
        i.name: NetAttachment("tap", "tap0") if tap else NetAttachment("user")
        for i in vm.spec.domain.devices.interfaces or []
    }
    return ConvertContext(
        vmi=vm,
        domain_type=domain_type,  # type: ignore[arg-type]
        paths=PATHS,
        disks={v["name"]: fake_disk(v) for v in volumes},
        kernel=kernel,
        networks=networks,
    )
