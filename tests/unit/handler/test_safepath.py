"""The handler never follows a launcher's symlinks, wrong owners or oversized files."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from virt_handler.safepath import Expect, UnsafePathError, connect_unix, open_beneath, read_bounded

pytestmark = pytest.mark.unit


@pytest.fixture
def pod(tmp_path: Path) -> Path:
    (tmp_path / "volumes" / "sockets").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def listening(pod: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(pod / "volumes" / "sockets" / "console.sock"))
    server.listen(1)
    try:
        yield server
    finally:
        server.close()


def test_connects_to_a_real_socket(pod: Path, listening: socket.socket) -> None:
    client = connect_unix(pod, "volumes/sockets/console.sock", owner=os.getuid(), timeout=2)
    peer, _ = listening.accept()
    client.sendall(b"ping")
    assert peer.recv(4) == b"ping"
    client.close()
    peer.close()


def test_refuses_a_symlinked_socket(pod: Path, listening: socket.socket, tmp_path: Path) -> None:
    os.symlink(pod / "volumes" / "sockets" / "console.sock", pod / "volumes" / "sockets" / "evil.sock")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        connect_unix(pod, "volumes/sockets/evil.sock", owner=None, timeout=2)


def test_refuses_a_symlinked_directory_on_the_way(pod: Path, listening: socket.socket) -> None:
    os.symlink(pod / "volumes" / "sockets", pod / "volumes" / "redirect")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        connect_unix(pod, "volumes/redirect/console.sock", owner=None, timeout=2)


def test_refuses_a_socket_of_another_owner(pod: Path, listening: socket.socket) -> None:
    with pytest.raises(UnsafePathError, match="owned by uid"):
        connect_unix(pod, "volumes/sockets/console.sock", owner=os.getuid() + 1, timeout=2)


def test_refuses_a_regular_file_posing_as_socket(pod: Path) -> None:
    (pod / "volumes" / "sockets" / "fake.sock").write_text("not a socket")
    with pytest.raises(UnsafePathError, match="not a socket"):
        connect_unix(pod, "volumes/sockets/fake.sock", owner=None, timeout=2)


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "volumes/../../x", "volumes/./sockets"])
def test_refuses_escaping_paths(pod: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError), open_beneath(pod, bad, Expect(stat.S_IFREG)):
        pass


def test_reads_within_the_limit_and_refuses_beyond(pod: Path) -> None:
    (pod / "status").write_bytes(b"x" * 100)
    assert read_bounded(pod, "status", limit=100) == b"x" * 100
    with pytest.raises(UnsafePathError, match="larger than 99 bytes"):
        read_bounded(pod, "status", limit=99)


def test_missing_path_says_which(pod: Path) -> None:
    with pytest.raises(FileNotFoundError, match="volumes/nothing"):
        read_bounded(pod, "volumes/nothing/here", limit=10)
