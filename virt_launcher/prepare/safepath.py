"""Opening files named by the VMI spec or found in volume mounts without following anyone's symlinks out."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from virt_launcher.errors import InvalidSpecError, VolumeError


def check_relative(value: str, field: str) -> PurePosixPath:
    """A path inside an image or volume: no NUL, no '..', no empty name; a leading '/' means the image root."""
    if not value or "\x00" in value or len(value) > 1024:
        raise InvalidSpecError("not a usable path", field=field)
    parts = PurePosixPath(value).parts
    parts = parts[1:] if parts and parts[0] == "/" else parts
    if not parts or any(p in ("..", ".") for p in parts):
        raise InvalidSpecError(f"{value!r} must name a file without '.' or '..' components", field=field)
    return PurePosixPath(*parts)


def check_absolute(value: str, field: str) -> PurePosixPath:
    """An absolute, already-normal path (what hostDisk.path must be)."""
    path = PurePosixPath(value)
    if not path.is_absolute() or "\x00" in value or os.path.normpath(value) != value or ".." in path.parts:
        raise InvalidSpecError(f"{value!r} must be an absolute path without '.', '..' or repeated '/'", field=field)
    if path.name in ("", ".", ".."):
        raise InvalidSpecError(f"{value!r} must name a file", field=field)
    return path


def resolve_inside(root: Path, relative: PurePosixPath, field: str) -> Path:
    """``root/relative`` with every symlink resolved, refused when the result leaves ``root``.

    Symlinks are allowed inside (image layers and Kubernetes' atomic writer use them) but the path
    handed to QEMU is the resolved one, so nothing is re-resolved later.
    """
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root / relative))
    if os.path.commonpath([real_root, target]) != str(real_root):
        raise VolumeError(f"{relative} points outside its volume", field=field)
    return target


def real_directory(path: Path, field: str) -> Path:
    """``path`` itself (not a symlink) must be a directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise VolumeError(f"{path} is not mounted in the pod", field=field) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise VolumeError(f"{path} must be a directory, not a symlink or file", field=field)
    return path


def regular_file_in(directory: Path, name: str, field: str) -> os.stat_result:
    """Stat of ``directory/name`` opened without following a symlink; it must be a regular file."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise VolumeError(f"{directory / name} does not exist", field=field) from exc
    except OSError as exc:
        raise VolumeError(f"{directory / name} cannot be opened safely ({exc.strerror})", field=field) from exc
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise VolumeError(f"{directory / name} is not a regular file", field=field)
    return st


def create_sparse_in(directory: Path, name: str, size: int, field: str) -> None:
    """Creates ``directory/name`` as a new sparse raw image; refuses to touch anything already there."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o660, dir_fd=dir_fd)
    except OSError as exc:
        raise VolumeError(f"cannot create {directory / name} ({exc.strerror})", field=field) from exc
    finally:
        os.close(dir_fd)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
