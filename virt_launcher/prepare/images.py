"""Disk image facts and creation: format detection, qcow2 header safety, overlays and empty disks (qemu-img)."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
from pathlib import Path
from typing import Literal

from virt_launcher.errors import VolumeError

QCOW2_MAGIC = b"QFI\xfb"
# Formats QEMU would read differently from raw; podvirt accepts only raw and qcow2, like KubeVirt.
OTHER_MAGICS = {b"KDMV": "vmdk", b"QED\x00": "qed", b"vhdx": "vhdx", b"cone": "vpc", b"<<< ": "vdi"}
QCOW2_EXTERNAL_DATA_FILE = 1 << 2
QEMU_IMG_TIMEOUT = 60

ImageFormat = Literal["raw", "qcow2"]


def _read_header(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return os.pread(fd, 128, 0)
    finally:
        os.close(fd)


def probe(path: Path, field: str) -> tuple[ImageFormat, int]:
    """(format, virtual size) of an image, refusing qcow2 images that point at other files.

    A qcow2 header can name a backing file or an external data file anywhere on the node: that is
    how a crafted image reads host files. Such images are rejected before QEMU ever opens them.
    """
    header = _read_header(path)
    if header[:4] == QCOW2_MAGIC:
        if len(header) < 72:
            raise VolumeError(f"{path} has a truncated qcow2 header", field=field)
        version, backing_offset = struct.unpack_from(">IQ", header, 4)
        size = struct.unpack_from(">Q", header, 24)[0]
        if backing_offset != 0:
            raise VolumeError(f"{path} is a qcow2 image with a backing file; flatten it first", field=field)
        if version >= 3 and len(header) >= 80:
            incompatible = struct.unpack_from(">Q", header, 72)[0]
            if incompatible & QCOW2_EXTERNAL_DATA_FILE:
                raise VolumeError(f"{path} is a qcow2 image with an external data file", field=field)
        return "qcow2", size
    for magic, name in OTHER_MAGICS.items():
        if header.startswith(magic):
            raise VolumeError(f"{path} is a {name} image; convert it to raw or qcow2", field=field)
    return "raw", _byte_size(path)


def _byte_size(path: Path) -> int:
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    return st.st_size


def _qemu_img(args: list[str], field: str) -> None:
    try:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise VolumeError(f"qemu-img {args[0]} failed: {exc.stderr.strip()}", field=field) from exc
    except subprocess.TimeoutExpired as exc:
        raise VolumeError(f"qemu-img {args[0]} took longer than {QEMU_IMG_TIMEOUT}s", field=field) from exc


def create_overlay(overlay: Path, backing: Path, backing_format: ImageFormat, size: int, field: str) -> None:
    """A qcow2 copy-on-write overlay; ``-u`` with the size given, so qemu-img never opens the backing image."""
    overlay.unlink(missing_ok=True)
    args = ["create", "-q", "-f", "qcow2", "-u", "-F", backing_format, "-b", str(backing), str(overlay), str(size)]
    _qemu_img(args, field)


def create_empty(path: Path, size: int, field: str) -> None:
    """A sparse qcow2 disk of ``size`` bytes."""
    path.unlink(missing_ok=True)
    _qemu_img(["create", "-q", "-f", "qcow2", str(path), str(size)], field)
