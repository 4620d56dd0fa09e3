"""libvirt's QEMU capabilities cache files, as the node hands them to launchers.

libvirt probes a QEMU binary's capabilities the first time a connection needs them (about 1.5 s of CPU
here, on every launcher start, since each launcher has a libvirt of its own) and keeps the answer in
``<root>/cache/qemu/capabilities/<sha256 of the binary's path>.xml``. A file written by a trusted
producer on the same node (virt-handler's ``qemu-capabilities`` init container, which runs the launcher
image's own QEMU) saves every later launcher the probe: the handler reads the files once and sends
them with each spec hand-over; the launcher writes them into its private libvirt root before libvirt
needs them. libvirt checks each file against the binary's ctime, its own version and the host's KVM
state, and probes afresh when one differs, so a file that does not fit costs time, never correctness.

Launchers never write to the node's copy: a cache that launcher pods could write would let one
tenant's pod feed libvirt in another's.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

#: libvirt's name for a cache file: the SHA-256 of the QEMU binary's path, hex, and ``.xml``.
FILE_NAME = re.compile(r"^[0-9a-f]{64}\.xml$")
#: One file is ~85 KB for qemu-system-x86_64 7.2.
MAX_FILE_BYTES = 1 << 20
#: One file per QEMU binary (architecture) a launcher image carries.
MAX_FILES = 8


class CapabilitiesError(ValueError):
    """A capabilities set or file that breaks the rules above; the message names the entry."""


def check(files: object) -> dict[str, str]:
    """``files`` (a sync request's ``qemuCapabilities``) as a {file name: XML text} dict, or
    :class:`CapabilitiesError` naming what is wrong."""
    where = "qemuCapabilities"
    if not isinstance(files, dict):
        raise CapabilitiesError(f"{where} must be an object of file name to XML text")
    if len(files) > MAX_FILES:
        raise CapabilitiesError(f"{where} holds {len(files)} files; at most {MAX_FILES}")
    out: dict[str, str] = {}
    for name, text in files.items():
        if not isinstance(name, str) or not FILE_NAME.match(name):
            raise CapabilitiesError(f"{where}: {name!r} is not a capabilities file name (<64 hex digits>.xml)")
        if not isinstance(text, str) or len(text.encode()) > MAX_FILE_BYTES:
            raise CapabilitiesError(f"{where}.{name} must be XML text of at most {MAX_FILE_BYTES} bytes")
        out[name] = text
    return out


def read_dir(directory: Path) -> dict[str, str]:
    """The capabilities files in ``directory`` (regular files only, no symlinks followed, bounded);
    other entries are ignored. An absent directory holds none."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    try:
        files: dict[str, str] = {}
        for name in sorted(os.listdir(dir_fd)):
            if not FILE_NAME.match(name) or len(files) >= MAX_FILES:
                continue
            text = _read_regular(dir_fd, name)
            if text is not None:
                files[name] = text
        return files
    finally:
        os.close(dir_fd)


def _read_regular(dir_fd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT):
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return None
    return data.decode("utf-8", "replace")


def write_files(directory: Path, files: dict[str, str], *, replace: bool) -> list[str]:
    """Writes ``files`` (already :func:`check`-ed) into ``directory`` without following symlinks; with
    ``replace`` an existing file is replaced atomically, without it kept. Returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    written = []
    try:
        for name, text in files.items():
            if not replace and _exists(dir_fd, name):
                continue
            tmp = f".{name}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            written.append(name)
    finally:
        os.close(dir_fd)
    return written


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
