"""configMap, secret and serviceAccount volumes as small ISO disks holding the mounted object's keys."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from virt_launcher.errors import VolumeError

from .iso import MAX_ISO_BYTES, write_iso
from .safepath import real_directory, regular_file_in, resolve_inside

MAX_KEYS = 1024


def collect(mount: Path, field: str) -> dict[str, bytes]:
    """The object's keys as Kubernetes mounts them (skipping its hidden ``..data`` machinery)."""
    real_directory(mount, field)
    files: dict[str, bytes] = {}
    total = 0
    for name in sorted(os.listdir(mount)):
        if name.startswith("."):
            continue
        if len(files) >= MAX_KEYS:
            raise VolumeError(f"{mount} has more than {MAX_KEYS} keys", field=field)
        target = resolve_inside(mount, PurePosixPath(name), field)
        if target.is_dir():
            continue
        st = regular_file_in(target.parent, target.name, field)
        total += st.st_size
        if total > MAX_ISO_BYTES:
            raise VolumeError(f"{mount} holds more than {MAX_ISO_BYTES} bytes", field=field)
        files[name] = target.read_bytes()
    return files


def write_config_disk(path: Path, mount: Path, label: str, field: str) -> None:
    write_iso(path, label, collect(mount, field), field)
