"""Console proxy, event log and notify pusher, and the QEMU watchdog, each with real sockets and processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virt_launcher.runtime.console import ConsoleProxy
from virt_launcher.runtime.events import EventLog, NotifyPusher
from virt_launcher.runtime.guard import QemuWatchdog, kill_qemu, qemu_pid
from virt_launcher.runtime.httpd import Request, Response, UnixHTTPServer


@pytest.fixture
def tmp(short_tmp: Path) -> Path:
    return short_tmp


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def recv_until(sock: socket.socket, needle: bytes) -> bytes:
    data = b""
    while needle not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def console(tmp: Path) -> Iterator[tuple[ConsoleProxy, socket.socket, Path]]:
    proxy = ConsoleProxy(tmp / "serial.sock", tmp / "console.sock", tmp / "console.log", log_limit=64)
    proxy.start()
    qemu = connect(tmp / "serial.sock")  # plays QEMU's serial port
    yield proxy, qemu, tmp
    qemu.close()
    proxy.stop()


def test_guest_output_reaches_the_client_and_keystrokes_reach_the_guest(
    console: tuple[ConsoleProxy, socket.socket, Path],
) -> None:
    proxy, qemu, tmp = console
    client = connect(tmp / "console.sock")
    time.sleep(0.1)
    qemu.sendall(b"login: ")
    assert recv_until(client, b"login: ") == b"login: "
    client.sendall(b"root\n")
    assert recv_until(qemu, b"\n") == b"root\n"
    assert proxy.first_byte.is_set()


def test_a_new_client_replaces_the_old_one(console: tuple[ConsoleProxy, socket.socket, Path]) -> None:
    _, qemu, tmp = console
    old = connect(tmp / "console.sock")
    time.sleep(0.1)
    new = connect(tmp / "console.sock")
    assert old.recv(10) == b"", "the old client is closed"
    qemu.sendall(b"hello")
    assert recv_until(new, b"hello") == b"hello"


def test_output_is_logged_without_a_client_and_the_log_is_bounded(
    console: tuple[ConsoleProxy, socket.socket, Path],
) -> None:
    proxy, qemu, tmp = console
    for i in range(10):
        qemu.sendall(f"line {i:02d} ..........\n".encode())
    deadline = time.monotonic() + 5
    while proxy.bytes_from_guest < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    current, rotated = tmp / "console.log", tmp / "console.log.1"
    assert rotated.exists() and current.stat().st_size < 64 and rotated.stat().st_size == 64
    assert (rotated.read_bytes() + current.read_bytes()).endswith(b"line 09 ..........\n")


def test_event_log_polling_and_capacity() -> None:
    log = EventLog(clock=lambda: 0.0, capacity=3)
    for i in range(5):
        log.append("Paused" if i % 2 else "Resumed", "User", "Running")
    events, next_seq = log.since(1)
    assert [e.seq for e in events] == [3, 4, 5] and next_seq == 6
    assert log.since(6, wait=0.05) == ([], 6)
    assert events[0].to_dict()["time"] == "1970-01-01T00:00:00.000000Z"


def test_notify_pusher_delivers_in_order_and_retries_until_the_socket_exists(tmp: Path) -> None:
    received: list[dict[str, Any]] = []
    path = tmp / "notify.sock"
    pusher = NotifyPusher(path, {"namespace": "ns", "name": "a"})
    log = EventLog()
    log.subscribe(pusher)
    log.append("Started", "Booted", "Running")  # nobody listens yet
    time.sleep(0.3)

    def handle(request: Request) -> Response:
        received.append(request.body)
        return Response(200, {})

    server = UnixHTTPServer(path, handle)
    server.start()
    try:
        log.append("Paused", "User", "Paused")
        deadline = time.monotonic() + 10
        while sum(len(r["events"]) for r in received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pusher.close()
        server.stop()
    delivered = [e["type"] for r in received for e in r["events"]]
    assert delivered == ["Started", "Paused"]
    assert received[0]["vmi"] == {"namespace": "ns", "name": "a"}


def fake_qemu(root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A process whose command line names a libvirt root, like QEMU's does, and libvirt's pidfile for it."""
    marker = f"{root}/lib/qemu/domain-1-ns_a/master-key.aes"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
    pidfile = root / "run/qemu/ns_a.pid"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(str(process.pid))  # libvirt writes no newline
    deadline = time.monotonic() + 5
    while marker.encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has exec'd
    return process, pidfile


def test_watchdog_kills_qemu_when_the_launcher_end_of_its_pipe_closes(tmp: Path) -> None:
    process, pidfile = fake_qemu(tmp / "libvirt")
    try:
        assert qemu_pid(pidfile) == process.pid
        watchdog = QemuWatchdog(pidfile)
        os.killpg(watchdog.process.pid, signal.SIGTERM)  # a group kill does not stop it
        time.sleep(0.2)
        assert process.poll() is None
        watchdog.disarm()  # what the kernel does when the launcher dies
        assert process.wait(5) == -signal.SIGKILL
    finally:
        process.kill()


def test_watchdog_and_kill_leave_an_unrelated_process_with_a_recycled_pid_alone(tmp: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    pidfile = tmp / "libvirt/run/qemu/ns_a.pid"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(str(process.pid))
    try:
        assert qemu_pid(pidfile) is None
        assert kill_qemu(pidfile) is False
        QemuWatchdog(pidfile).disarm()
        time.sleep(0.2)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_notify_payload_is_json(tmp: Path) -> None:
    got = threading.Event()
    bodies: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp / "n.sock"))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        bodies.append(recv_until(conn, b"}]}"))
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        conn.close()
        got.set()

    threading.Thread(target=serve, daemon=True).start()
    pusher = NotifyPusher(tmp / "n.sock", {"name": "a"})
    EventLog().subscribe(pusher)
    log = EventLog()
    log.subscribe(pusher)
    log.append("Started", "Booted", "Running")
    assert got.wait(5)
    pusher.close()
    head, _, body = bodies[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/events HTTP/1.1")
    assert json.loads(body)["events"][0]["type"] == "Started"
