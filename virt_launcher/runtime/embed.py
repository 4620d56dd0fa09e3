"""The embedded libvirt QEMU driver's root directory: its qemu.conf and the shared capabilities cache.

libvirt probes QEMU's capabilities into ``<root>/cache/qemu/capabilities`` the first time (seconds);
copying them in from a node-wide cache dir before the connection opens, and back out after a start,
makes every later launcher start warm. libvirt checks each cached file against the QEMU binary and its
own version, so a stale file is simply re-probed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
CAPS_SUBDIR = Path("cache/qemu/capabilities")

QEMU_CONF = """\
# Written by virt-launcher: QEMU's stdout/stderr go to a file (no virtlogd daemon).
stdio_handler = "file"
"""


def prepare_root(root: Path, cache_dir: Path | None) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/qemu.conf").write_text(QEMU_CONF)
    if cache_dir is None:
        return
    source = cache_dir / "qemu-capabilities"
    if not source.is_dir():
        return
    target = root / CAPS_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.glob("*.xml"):
        if entry.is_file() and not entry.is_symlink():
            shutil.copy2(entry, target / entry.name)


def save_capabilities(root: Path, cache_dir: Path | None) -> int:
    """Copies capability files the cache lacks (or holds older versions of); returns how many."""
    if cache_dir is None:
        return 0
    source = root / CAPS_SUBDIR
    target = cache_dir / "qemu-capabilities"
    saved = 0
    try:
        target.mkdir(parents=True, exist_ok=True)
        for entry in source.glob("*.xml"):
            cached = target / entry.name
            if cached.exists() and cached.read_bytes() == entry.read_bytes():
                continue
            fd, tmp = tempfile.mkstemp(dir=target, prefix=".caps-")
            os.close(fd)
            try:
                shutil.copy2(entry, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, cached)
                saved += 1
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except OSError as exc:
        log.info("capabilities cache %s not updated: %s", target, exc)
    return saved
