"""Small ISO 9660 images (Rock Ridge + Joliet names) with pycdlib: cloud-init seeds and config disks."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import pycdlib

from virt_launcher.errors import VolumeError

MAX_ISO_BYTES = 64 << 20
_LABEL_RE = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")


def _iso_name(name: str, taken: set[str]) -> str:
    """An ISO 9660 level-4-safe name; Rock Ridge and Joliet carry the real one."""
    base = re.sub(r"[^A-Z0-9_]", "_", name.upper())[:24] or "F"
    candidate, n = base, 0
    while candidate in taken:
        n += 1
        candidate = f"{base[:20]}_{n}"
    taken.add(candidate)
    return candidate


def write_iso(path: Path, label: str, files: Mapping[str, bytes], field: str) -> None:
    """Writes ``files`` (``"dir/name" -> content``) to a new ISO at ``path`` with volume label ``label``."""
    if not _LABEL_RE.match(label):
        raise VolumeError(f"{label!r} is not a usable volume label (letters, digits, _ and -)", field=field)
    total = sum(len(data) for data in files.values())
    if total > MAX_ISO_BYTES:
        raise VolumeError(f"{total} bytes is more than a config disk may hold ({MAX_ISO_BYTES})", field=field)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, joliet=3, rock_ridge="1.09", vol_ident=label)
    dirs: dict[str, str] = {"": ""}
    taken: dict[str, set[str]] = {"": set()}
    for name in sorted(files):
        parts = name.split("/")
        parent = ""
        for part in parts[:-1]:
            here = f"{parent}/{part}" if parent else part
            if here not in dirs:
                iso_dir = f"{dirs[parent]}/{_iso_name(part, taken[parent])}"
                iso.add_directory(iso_dir, rr_name=part, joliet_path=f"/{here}")
                dirs[here], taken[here] = iso_dir, set()
            parent = here
        data = files[name]
        iso_path = f"{dirs[parent]}/{_iso_name(parts[-1], taken[parent])};1"
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=parts[-1], joliet_path=f"/{name}")
    path.unlink(missing_ok=True)
    iso.write(str(path))
    iso.close()
