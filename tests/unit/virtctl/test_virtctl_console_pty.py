"""``virtctl console`` in a real pseudo-terminal against a fake websocket server on loopback.

The terminal must be raw while connected and exactly as before afterwards, on every way out:
Ctrl+], the server closing, another client taking over, the connection dropping, SIGTERM, SIGHUP.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_kubeconfig
from fakestreams import FakeStreams
from websockets.asyncio.server import ServerConnection

from virtctl import terminal
from virtctl.exitcodes import ExitCode

pytestmark = pytest.mark.unit

CONSOLE_PATH = "/apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachineinstances/vmi1/console"


@pytest.fixture
def streams() -> Iterator[FakeStreams]:
    fake = FakeStreams().start()
    try:
        yield fake
    finally:
        fake.stop()


class Session:
    """virtctl running on the slave side of a pty; the test types and reads on the master side."""

    def __init__(self, kubeconfig: Path, *args: str) -> None:
        self.master, self.slave = pty.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.output = b""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "virtctl", "console", "vmi1", *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=env,
            start_new_session=True,
        )

    def settings(self) -> list[object]:
        return termios.tcgetattr(self.slave)

    def is_raw(self) -> bool:
        return not self.settings()[3] & (termios.ECHO | termios.ICANON | termios.ISIG)

    def read_until(self, marker: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {marker!r}; output so far: {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                self.output += os.read(self.master, 4096)
        return self.output

    def wait_raw(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_raw():
            assert time.monotonic() < deadline, f"terminal never became raw; output: {self.output!r}"
            assert self.process.poll() is None, f"virtctl exited early: {self.drain()!r}"
            time.sleep(0.02)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 20) -> int:
        code = self.process.wait(timeout)
        self.drain()
        return code

    def drain(self) -> bytes:
        while select.select([self.master], [], [], 0.1)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        return self.output

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def console(streams: FakeStreams, tmp_path: Path) -> Iterator[type[Session]]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", streams.url)
    sessions: list[Session] = []

    class Bound(Session):
        def __init__(self, *args: str) -> None:
            super().__init__(kubeconfig, *args)
            sessions.append(self)

    try:
        yield Bound
    finally:
        for session in sessions:
            session.close()


def test_bytes_flow_both_ways_and_ctrl_bracket_leaves(streams: FakeStreams, console: type[Session]) -> None:
    async def server(ws: ServerConnection) -> None:
        await ws.send(b"\r\nWelcome to the guest\r\nlogin: ")
        await streams.record(ws)

    streams.handler = server
    session = console()
    session.read_until(b"Press Ctrl+] to exit console.")
    session.wait_raw()
    session.read_until(b"login: ")
    session.type(b"root\r\x03ls\x1dignored")  # Ctrl+C goes to the guest; Ctrl+] ends the session
    assert session.wait() == ExitCode.OK
    assert b"".join(streams.received) == b"root\r\x03ls"
    assert streams.paths == [CONSOLE_PATH]
    assert session.settings() == session.before


def test_taken_over_by_another_client(streams: FakeStreams, console: type[Session]) -> None:
    async def server(ws: ServerConnection) -> None:
        await ws.send(b"booting\r\n")
        await streams.proceed()
        await ws.close(4000, "console session taken over by another client")

    streams.handler = server
    session = console()
    session.wait_raw()
    streams.go_on.set()
    assert session.wait() == ExitCode.TAKEN_OVER
    assert b"was taken over by another client" in session.output
    assert session.settings() == session.before


def test_server_closes_the_console(streams: FakeStreams, console: type[Session]) -> None:
    async def server(ws: ServerConnection) -> None:
        await streams.proceed()
        await ws.close(1000, "VMI stopped")

    streams.handler = server
    session = console()
    session.wait_raw()
    streams.go_on.set()
    assert session.wait() == ExitCode.OK
    assert b"closed by the server: VMI stopped" in session.output
    assert session.settings() == session.before


def test_connection_dropped(streams: FakeStreams, console: type[Session]) -> None:
    async def server(ws: ServerConnection) -> None:
        await streams.proceed()
        ws.transport.abort()

    streams.handler = server
    session = console()
    session.wait_raw()
    streams.go_on.set()
    assert session.wait() == ExitCode.ERROR
    assert b"lost the console connection" in session.output
    assert session.settings() == session.before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_restore_the_terminal(streams: FakeStreams, console: type[Session], signum: int) -> None:
    async def server(ws: ServerConnection) -> None:
        await streams.record(ws)

    streams.handler = server
    session = console()
    session.wait_raw()
    session.process.send_signal(signum)
    assert session.wait() == ExitCode.INTERRUPTED
    assert session.settings() == session.before


def test_stopped_from_outside_the_terminal_is_restored_until_continued(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process: a test's child has no job-control shell above it, so the kernel would discard the stop.
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        seen_while_stopping: list[list[object]] = []

        def fake_kill(pid: int, signum: int) -> None:
            assert (pid, signum) == (os.getpid(), signal.SIGTSTP)
            seen_while_stopping.append(termios.tcgetattr(slave))

        monkeypatch.setattr(terminal.os, "kill", fake_kill)
        raw = terminal.RawTerminal(slave)
        raw.enable()
        assert termios.tcgetattr(slave) != before
        handler = signal.getsignal(signal.SIGTSTP)
        assert callable(handler)
        handler(signal.SIGTSTP, None)
        assert seen_while_stopping == [before]  # the shell gets its terminal back while virtctl is stopped
        assert termios.tcgetattr(slave) != before  # and raw mode returns when it continues
        raw.restore()
        assert termios.tcgetattr(slave) == before
        assert signal.getsignal(signal.SIGTSTP) == signal.SIG_DFL
    finally:
        os.close(master)
        os.close(slave)


def test_waits_while_the_vmi_is_not_running(streams: FakeStreams, console: type[Session]) -> None:
    async def server(ws: ServerConnection) -> None:
        await streams.record(ws)

    streams.handler = server
    streams.refuse(409, "VMI vmi1 is not running", times=2)
    session = console("--timeout=1")
    session.read_until(b"Waiting for VirtualMachineInstance testns/vmi1 to run")
    session.wait_raw()
    session.type(b"\x1d")
    assert session.wait() == ExitCode.OK
    assert len(streams.paths) == 3
    assert session.settings() == session.before


def test_without_waiting_a_stopped_vmi_is_refused_without_touching_the_terminal(
    streams: FakeStreams, console: type[Session]
) -> None:
    streams.refuse(
        409, 'Operation cannot be fulfilled on virtualmachineinstances.kubevirt.io "vmi1": VMI is not running'
    )
    session = console("--timeout=0")
    assert session.wait() == ExitCode.CONFLICT
    expected = b"cannot connect to the serial console of VirtualMachineInstance testns/vmi1: VMI is not running"
    assert expected in session.output.replace(b"\r\n", b" ").replace(b"\n", b" ")
    assert session.settings() == session.before


def test_without_a_terminal_input_is_sent_until_its_end(streams: FakeStreams, tmp_path: Path) -> None:
    async def server(ws: ServerConnection) -> None:
        await ws.send(b"guest output\n")
        await streams.record(ws)

    streams.handler = server
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", streams.url)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "console", "vmi1"],
        input=b"echo hi\n",
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert b"".join(streams.received) == b"echo hi\n"
