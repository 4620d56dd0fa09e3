"""VMI volumes -> disk sources QEMU can open: overlays, empty disks, checked host disks, claims and ISOs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kubevirt_types import HostDiskType, PersistentVolumeClaimSource, VirtualMachineInstance, Volume
from virt_launcher.converter.context import DiskSource, KernelFiles
from virt_launcher.errors import InvalidSpecError, VolumeError
from virt_launcher.layout import KERNEL_BOOT_ENTRY, PodLayout

from .cloudinit import write_config_drive, write_nocloud
from .configdisk import write_config_disk
from .images import create_empty, create_overlay, probe
from .safepath import (
    check_absolute,
    check_relative,
    create_sparse_in,
    real_directory,
    regular_file_in,
    resolve_inside,
)

CLAIM_IMAGE = "disk.img"
MAX_DISK_BYTES = 1 << 50


class VolumeResolver:
    """Turns each volume a disk refers to into a ``DiskSource``, creating files under the private dir."""

    def __init__(self, vmi: VirtualMachineInstance, layout: PodLayout) -> None:
        self.vmi = vmi
        self.layout = layout

    def resolve_all(self) -> dict[str, DiskSource]:
        volumes = {v.name: (i, v) for i, v in enumerate(self.vmi.spec.volumes or [])}
        used = {d.name for d in self.vmi.spec.domain.devices.disks or []}
        self.layout.disks_dir.mkdir(parents=True, exist_ok=True)
        return {name: self.resolve(i, volume) for name, (i, volume) in volumes.items() if name in used}

    def resolve(self, index: int, volume: Volume) -> DiskSource:
        field = f"spec.volumes[{index}]"
        entry = self.layout.volume_entry(volume.name)
        disks = self.layout.disks_dir
        if volume.container_disk is not None:
            return self._container_disk(volume, entry, f"{field}.containerDisk")
        if volume.persistent_volume_claim is not None:
            claim = volume.persistent_volume_claim
            return self._claim(entry, bool(claim.read_only), f"{field}.persistentVolumeClaim")
        if volume.data_volume is not None:
            return self._claim(entry, False, f"{field}.dataVolume")
        if volume.ephemeral is not None:
            return self._ephemeral(volume, volume.ephemeral.persistent_volume_claim, entry, f"{field}.ephemeral")
        if volume.empty_disk is not None:
            size = volume.empty_disk.capacity.as_int()
            if not 0 < size <= MAX_DISK_BYTES:
                raise InvalidSpecError("capacity must be positive and at most 1Pi", field=f"{field}.emptyDisk.capacity")
            path = disks / f"{volume.name}.qcow2"
            create_empty(path, size, f"{field}.emptyDisk")
            return DiskSource("file", str(path), "qcow2")
        if volume.host_disk is not None:
            return self._host_disk(volume, entry, f"{field}.hostDisk")
        iso = disks / f"{volume.name}.iso"
        if volume.cloud_init_no_cloud is not None:
            write_nocloud(iso, self.vmi, volume.cloud_init_no_cloud, entry, f"{field}.cloudInitNoCloud")
        elif volume.cloud_init_config_drive is not None:
            write_config_drive(iso, self.vmi, volume.cloud_init_config_drive, entry, f"{field}.cloudInitConfigDrive")
        elif volume.config_map is not None:
            source = volume.config_map
            self._config_disk(iso, entry, source.volume_label or "cfgdata", bool(source.optional), f"{field}.configMap")
        elif volume.secret is not None:
            secret = volume.secret
            self._config_disk(iso, entry, secret.volume_label or "secret", bool(secret.optional), f"{field}.secret")
        elif volume.service_account is not None:
            self._config_disk(iso, entry, "serviceaccount", False, f"{field}.serviceAccount")
        else:
            raise InvalidSpecError("the volume has no source", field=field)
        return DiskSource("file", str(iso), "raw", readonly=True)

    def _container_disk(self, volume: Volume, entry: Path, field: str) -> DiskSource:
        assert volume.container_disk is not None
        real_directory(entry, field)
        if volume.container_disk.path:
            image = resolve_inside(entry, check_relative(volume.container_disk.path, f"{field}.path"), f"{field}.path")
            regular_file_in(image.parent, image.name, f"{field}.path")
        else:
            disk_dir = real_directory(entry / "disk", field)
            names = sorted(n for n in os.listdir(disk_dir) if not n.startswith("."))
            if len(names) != 1:
                raise VolumeError(f"the image has {len(names)} files in /disk; name one with path", field=field)
            regular_file_in(disk_dir, names[0], field)
            image = disk_dir / names[0]
        return self._overlay(volume.name, image, field)

    def _overlay(self, name: str, image: Path, field: str) -> DiskSource:
        fmt, size = probe(image, field)
        overlay = self.layout.disks_dir / f"{name}.qcow2"
        create_overlay(overlay, image, fmt, size, field)
        backing = DiskSource("block" if stat.S_ISBLK(os.stat(image).st_mode) else "file", str(image), fmt, True)
        return DiskSource("file", str(overlay), "qcow2", backing=backing)

    def _claim_image(self, entry: Path, field: str) -> Path:
        try:
            st = os.lstat(entry)
        except FileNotFoundError as exc:
            raise VolumeError(f"the claim is not mounted at {entry}", field=field) from exc
        if stat.S_ISBLK(st.st_mode):
            return entry
        real_directory(entry, field)
        regular_file_in(entry, CLAIM_IMAGE, field)
        return entry / CLAIM_IMAGE

    def _claim(self, entry: Path, read_only: bool, field: str) -> DiskSource:
        image = self._claim_image(entry, field)
        fmt, _ = probe(image, field)
        return DiskSource("block" if image == entry else "file", str(image), fmt, readonly=read_only)

    def _ephemeral(
        self, volume: Volume, claim: PersistentVolumeClaimSource | None, entry: Path, field: str
    ) -> DiskSource:
        if claim is None:
            raise InvalidSpecError("ephemeral needs persistentVolumeClaim", field=f"{field}.persistentVolumeClaim")
        return self._overlay(volume.name, self._claim_image(entry, field), field)

    def _host_disk(self, volume: Volume, entry: Path, field: str) -> DiskSource:
        spec = volume.host_disk
        assert spec is not None
        # Only the file name is taken from the spec; the directory is the pod's mount of its parent.
        name = check_absolute(spec.path, f"{field}.path").name
        real_directory(entry, field)
        if not (entry / name).exists() and not (entry / name).is_symlink():
            if spec.type != HostDiskType.DISK_OR_CREATE:
                raise VolumeError(f"{spec.path} does not exist (type Disk)", field=f"{field}.path")
            if spec.capacity is None:
                raise InvalidSpecError("DiskOrCreate needs a capacity", field=f"{field}.capacity")
            size = spec.capacity.as_int()
            if not 0 < size <= MAX_DISK_BYTES:
                raise InvalidSpecError("capacity must be positive and at most 1Pi", field=f"{field}.capacity")
            fs = os.statvfs(entry)
            if size > fs.f_bavail * fs.f_frsize:
                raise VolumeError(f"{spec.path}: {size} bytes do not fit on its file system", field=f"{field}.capacity")
            create_sparse_in(entry, name, size, field)
        regular_file_in(entry, name, f"{field}.path")
        fmt, _ = probe(entry / name, field)
        return DiskSource("file", str(entry / name), fmt)

    def _config_disk(self, iso: Path, entry: Path, label: str, optional: bool, field: str) -> None:
        if optional and not entry.exists():
            entry = self.layout.disks_dir / ".empty"
            entry.mkdir(exist_ok=True)
        write_config_disk(iso, entry, label, field)

    def kernel_files(self) -> KernelFiles | None:
        firmware = self.vmi.spec.domain.firmware
        kernel_boot = firmware.kernel_boot if firmware else None
        if kernel_boot is None or kernel_boot.container is None:
            return None
        field = "spec.domain.firmware.kernelBoot.container"
        container = kernel_boot.container
        root = real_directory(self.layout.volume_entry(KERNEL_BOOT_ENTRY), field)
        if not container.kernel_path:
            raise InvalidSpecError("kernelPath is required", field=f"{field}.kernelPath")
        found: list[str] = []
        for attr, value in (("kernelPath", container.kernel_path), ("initrdPath", container.initrd_path)):
            if value is None:
                continue
            path = resolve_inside(root, check_relative(value, f"{field}.{attr}"), f"{field}.{attr}")
            regular_file_in(path.parent, path.name, f"{field}.{attr}")
            found.append(str(path))
        return KernelFiles(found[0], found[1] if len(found) > 1 else None)
