"""Opening paths inside pod directories without trusting them.

A launcher pod controls the contents of its own volumes, and virt-handler runs privileged on the
node, so every path below a pod directory is walked one component at a time relative to a
directory file descriptor, never following a symbolic link, and the final object's type and
owner are checked on the descriptor itself (no check-then-use race). Sockets are reached through
``/proc/self/fd/N`` of an ``O_PATH`` descriptor of the checked inode, so a launcher that swaps the
socket for a symlink after the check still cannot redirect the handler.

KubeVirt's CVEs in this area (symlinked console sockets, paths re-resolved through /proc) are
the reason this module exists; every pod path the handler uses goes through it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


class UnsafePathError(PermissionError):
    """A path in a pod directory is not what it must be (a symlink, wrong type or owner, ..)."""


@dataclass(frozen=True)
class Expect:
    """What the final object must be: its type and, when given, its owner."""

    kind: int  # stat.S_IFSOCK, stat.S_IFDIR or stat.S_IFREG
    uid: int | None = None


_KIND_NAMES = {stat.S_IFSOCK: "socket", stat.S_IFDIR: "directory", stat.S_IFREG: "regular file"}


def _components(relative: str | PurePosixPath) -> list[str]:
    rel = PurePosixPath(relative)
    if rel.is_absolute():
        raise UnsafePathError(f"{relative}: expected a path relative to the pod directory")
    parts = list(rel.parts)
    if not parts or any(p in ("..", ".", "") for p in parts):
        raise UnsafePathError(f"{relative}: '..' and '.' are not allowed in pod paths")
    return parts


@contextlib.contextmanager
def open_beneath(root: Path, relative: str | PurePosixPath, expect: Expect) -> Iterator[int]:
    """Yield an ``O_PATH`` descriptor of ``root/relative`` after checking every step.

    ``root`` itself is trusted (it is the node's own kubelet directory); everything under it is not.
    """
    parts = _components(relative)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                raise FileNotFoundError(f"{root / PurePosixPath(*parts[: i + 1])} does not exist") from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            where = root / PurePosixPath(*parts[: i + 1])
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(f"{where} is a symbolic link; pod paths must not be links")
            if not last and not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(f"{where} is not a directory")
            if last:
                if stat.S_IFMT(st.st_mode) != expect.kind:
                    want = _KIND_NAMES.get(expect.kind, oct(expect.kind))
                    raise UnsafePathError(f"{where} is not a {want}")
                if expect.uid is not None and st.st_uid != expect.uid:
                    raise UnsafePathError(f"{where} is owned by uid {st.st_uid}, expected {expect.uid}")
        yield fd
    finally:
        os.close(fd)


def connect_unix(root: Path, relative: str | PurePosixPath, owner: int | None, timeout: float) -> socket.socket:
    """Connect to the unix socket at ``root/relative``, checked as :func:`open_beneath` does."""
    with open_beneath(root, relative, Expect(stat.S_IFSOCK, owner)) as fd:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(f"/proc/self/fd/{fd}")
        except BaseException:
            sock.close()
            raise
        return sock


def read_bounded(root: Path, relative: str | PurePosixPath, limit: int, owner: int | None = None) -> bytes:
    """Read a regular file under ``root`` (checked), refusing more than ``limit`` bytes."""
    with open_beneath(root, relative, Expect(stat.S_IFREG, owner)) as path_fd:
        # The /proc magic link reopens exactly the inode checked above.
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, min(65536, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise UnsafePathError(f"{root / relative} is larger than {limit} bytes")
    return data
