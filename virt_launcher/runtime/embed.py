"""The embedded libvirt QEMU driver's root directory: its qemu.conf and its QEMU capabilities cache.

libvirt probes QEMU's capabilities into ``<root>/cache/qemu/capabilities`` the first time it needs them
(seconds). Two ways save a launcher that probe (see :mod:`podvirt_common.qemucaps`):

- in a pod, the handler sends the node's files with the spec (``POST /v1/sync``), and they are written
  here before the domain is defined;
- run by hand, ``--cache-dir`` names a directory whose files are copied in before the connection
  opens and which gets the probed files back after a start (one user's machine: the launcher writes
  there, so it must never be shared between tenants).

libvirt checks each cached file against the QEMU binary and its own version, so a stale file is simply
re-probed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from podvirt_common import qemucaps

log = logging.getLogger(__name__)
CAPS_SUBDIR = Path("cache/qemu/capabilities")

QEMU_CONF = """\
# Written by virt-launcher: QEMU's stdout/stderr go to a file (no virtlogd daemon).
stdio_handler = "file"
"""


def prepare_root(root: Path, cache_dir: Path | None) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/qemu.conf").write_text(QEMU_CONF)
    if cache_dir is not None:
        seed_capabilities(root, qemucaps.read_dir(cache_dir / "qemu-capabilities"))


def seed_capabilities(root: Path, files: dict[str, str]) -> list[str]:
    """Puts capability files (already checked by :func:`podvirt_common.qemucaps.check`) where this
    root's libvirt looks for them; a file libvirt already has is kept. libvirt reads a file the first
    time it needs the binary's capabilities, so this works until the first domain is defined."""
    if not files:
        return []
    return qemucaps.write_files(root / CAPS_SUBDIR, files, replace=False)


def save_capabilities(root: Path, cache_dir: Path | None) -> int:
    """Copies capability files the cache lacks (or holds older versions of); returns how many."""
    if cache_dir is None:
        return 0
    target = cache_dir / "qemu-capabilities"
    try:
        cached = qemucaps.read_dir(target)
        fresh = {k: v for k, v in qemucaps.read_dir(root / CAPS_SUBDIR).items() if cached.get(k) != v}
        return len(qemucaps.write_files(target, fresh, replace=True))
    except OSError as exc:
        log.info("capabilities cache %s not updated: %s", target, exc)
        return 0
