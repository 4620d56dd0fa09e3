"""The handler's launcher client against scripted launchers: good answers, errors, and attacks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from virt_handler.launcher_client import (
    LauncherClient,
    LauncherError,
    LauncherTarget,
    LauncherUnreachableError,
    encode_capabilities,
)
from virt_handler.vmistatus import DomainState
from virt_launcher.runtime.protocol import parse_sync

pytestmark = pytest.mark.unit


def http(status: int, body: bytes) -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


@pytest.fixture
def sockets_root(tmp_path: Path) -> Path:
    (tmp_path / "sockets").mkdir()
    return tmp_path


def read_request(conn: socket.socket) -> bytes:
    """One request, whole: the head, then as many body bytes as it announces (they may come in pieces)."""
    conn.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    length = next((int(h.split(":", 1)[1]) for h in head.split("\r\n") if h.lower().startswith("content-length:")), 0)
    while len(data) < len(head) + 4 + length and (chunk := conn.recv(65536)):
        data += chunk
    return data


def serve(root: Path, respond: Callable[[bytes], bytes | None]) -> Iterator[list[bytes]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(root / "sockets" / "launcher.sock"))
    server.listen(4)
    seen: list[bytes] = []
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                request = read_request(conn)
                seen.append(request)
                answer = respond(request)
                if answer is not None:
                    # The client may hang up first (that is what a size limit does).
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        conn.sendall(answer)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        server.close()


def target(root: Path, owner: int | None = None) -> LauncherTarget:
    return LauncherTarget(
        "default", "vm1", "uid-1", "pod-uid", root, "sockets", owner if owner is not None else os.getuid()
    )


def test_domain_info_is_parsed(sockets_root: Path) -> None:
    body = b'{"phase":"Running","state":"Paused","reason":"User"}'
    for seen in serve(sockets_root, lambda _: http(200, body)):
        info = LauncherClient(target(sockets_root)).domain()
        assert info.phase == "Running"
        assert info.domain is not None and info.domain.state == DomainState.PAUSED and info.domain.reason == "User"
        assert seen[0].startswith(b"GET /v1/domain HTTP/1.1\r\n")


def test_a_clean_guest_shutdown_is_recognised(sockets_root: Path) -> None:
    body = b'{"phase":"Finished","state":"Shutoff","reason":"Shutdown","outcome":"Succeeded","exitCode":0}'
    for _ in serve(sockets_root, lambda _: http(200, body)):
        info = LauncherClient(target(sockets_root)).domain()
        assert info.domain is not None and info.domain.clean_shutdown and info.exit_code == 0


def test_sync_sends_the_vmi(sockets_root: Path) -> None:
    for seen in serve(sockets_root, lambda _: http(200, b'{"phase":"Preparing"}')):
        LauncherClient(target(sockets_root)).sync({"metadata": {"name": "vm1"}, "spec": {}})
        assert seen[0].startswith(b"POST /v1/sync HTTP/1.1\r\n")
        assert seen[0].endswith(b'{"vmi":{"metadata":{"name":"vm1"},"spec":{}}}')


def test_sync_sends_the_nodes_capabilities_in_the_launchers_format(sockets_root: Path) -> None:
    files = {"a" * 64 + ".xml": '<qemuCaps>\n  <emulator path="/usr/bin/qemu-system-x86_64"/>\n</qemuCaps>'}
    vmi = {"metadata": {"name": "vm1"}, "spec": {"domain": {}}}
    for seen in serve(sockets_root, lambda _: http(200, b'{"phase":"Preparing"}')):
        LauncherClient(target(sockets_root)).sync(vmi, encode_capabilities(files))
        head, body = seen[0].split(b"\r\n\r\n", 1)
        assert f"Content-Length: {len(body)}".encode() in head
        # What the launcher makes of it (its own parser, virt_launcher.runtime.protocol).
        assert parse_sync(json.loads(body)) == (vmi, files)


def test_launcher_errors_carry_reason_and_status(sockets_root: Path) -> None:
    body = b'{"error":{"reason":"Conflict","message":"the domain runs another spec"}}'
    for _ in serve(sockets_root, lambda _: http(409, body)):
        with pytest.raises(LauncherError, match="another spec") as err:
            LauncherClient(target(sockets_root)).action("pause")
        assert (err.value.status, err.value.reason) == (409, "Conflict")


def test_an_oversized_answer_is_refused(sockets_root: Path) -> None:
    huge = http(200, b'{"phase":"' + b"x" * (3 << 20) + b'"}')
    for _ in serve(sockets_root, lambda _: huge):
        with pytest.raises(LauncherError, match="exceeds"):
            LauncherClient(target(sockets_root)).domain()


def test_a_silent_launcher_times_out(sockets_root: Path) -> None:
    release = threading.Event()

    def hang(_: bytes) -> None:
        release.wait(5)

    for _ in serve(sockets_root, hang):
        with pytest.raises(LauncherUnreachableError, match="in time"):
            LauncherClient(target(sockets_root), timeout=0.5).domain()
        release.set()


def test_garbage_is_a_protocol_error_not_a_crash(sockets_root: Path) -> None:
    for _ in serve(sockets_root, lambda _: b"\x00\xffnot http at all"):
        with pytest.raises(LauncherError, match="malformed"):
            LauncherClient(target(sockets_root)).domain()


def test_a_socket_owned_by_someone_else_is_not_used(sockets_root: Path) -> None:
    for seen in serve(sockets_root, lambda _: http(200, b"{}")):
        with pytest.raises(PermissionError, match="owned by uid"):
            LauncherClient(target(sockets_root, owner=os.getuid() + 1)).domain()
        assert seen == []


def test_a_missing_socket_is_unreachable_not_failed(sockets_root: Path) -> None:
    with pytest.raises(LauncherUnreachableError):
        LauncherClient(target(sockets_root)).domain()
