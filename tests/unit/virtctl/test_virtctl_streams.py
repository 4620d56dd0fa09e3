"""Streams: close frames say why a session ended; waiting uses a fake clock; port-forward and vnc relay bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_kubeconfig
from fakestreams import FakeStreams
from websockets.asyncio.server import ServerConnection

from virtctl.commands.vnc import viewer_command
from virtctl.errors import ApiError, Served, VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.streams import SessionEnd, connect_when_running, session_end
from virtctl.subresources import CONSOLE

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "reason", "why"),
    [
        (4000, "console session taken over by another client", "taken-over"),
        (1011, "session taken over", "taken-over"),
        (1000, "", "closed"),
        (1001, "going away", "closed"),
        (1006, "", "lost"),
        (None, "", "lost"),
    ],
)
def test_close_frames(code: int | None, reason: str, why: str) -> None:
    assert session_end(code, reason).why == why


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RefusingClient:
    """Stands in for KubeClient: every stream is refused with ``errors`` in turn, then opened."""

    namespace = "ns"

    def __init__(self, *errors: ApiError) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def served(self) -> Served:
        return Served(True)

    def explain(self, err: ApiError, _request: object) -> VirtctlError:
        return VirtctlError(f"explained {err.code}", ExitCode.ERROR)

    @contextlib.asynccontextmanager
    async def websocket(self, _path: str) -> Any:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        yield "the-stream"


def not_running() -> ApiError:
    return ApiError(409, {"kind": "Status", "message": "VMI is not running"})


def connect(client: RefusingClient, clock: FakeClock, wait: float) -> Any:
    async def go() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            return await connect_when_running(stack, client, CONSOLE, "vm1", wait, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_retries_with_backoff_until_the_vmi_runs() -> None:
    clock = FakeClock()
    client = RefusingClient(not_running(), ApiError(404, None), not_running(), not_running())
    assert connect(client, clock, 300) == "the-stream"
    assert client.attempts == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]


def test_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    client = RefusingClient(*[not_running() for _ in range(100)])
    with pytest.raises(VirtctlError) as raised:
        connect(client, clock, 60)
    assert raised.value.exit_code == ExitCode.TIMEOUT
    assert "gave up after 1 minute" in raised.value.message
    assert clock.now == 60


def test_a_deadline_for_a_missing_vmi_says_so() -> None:
    clock = FakeClock()
    client = RefusingClient(*[ApiError(404, None) for _ in range(100)])
    with pytest.raises(VirtctlError) as raised:
        connect(client, clock, 120)
    assert raised.value.message == "gave up after 2 minutes: VirtualMachineInstance ns/vm1 does not exist"


def test_no_wait_means_one_attempt() -> None:
    clock = FakeClock()
    with pytest.raises(VirtctlError, match="explained 409"):
        connect(RefusingClient(not_running()), clock, 0)
    assert clock.sleeps == []


def test_other_refusals_are_not_waited_for() -> None:
    clock = FakeClock()
    with pytest.raises(VirtctlError, match="explained 403"):
        connect(RefusingClient(ApiError(403, None)), clock, 300)
    assert clock.sleeps == []


# -- port-forward and vnc, as processes, against the fake websocket server ------------------------------


@pytest.fixture
def streams(tmp_path: Path) -> Iterator[tuple[FakeStreams, dict[str, str]]]:
    fake = FakeStreams().start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    try:
        yield fake, env
    finally:
        fake.stop()


KV = "/apis/kubevirt.io/v1"
RUNNING = {"kind": "VirtualMachineInstance", "status": {"phase": "Running"}}


def test_port_forward_refuses_a_vmi_that_is_not_running(streams: tuple[FakeStreams, dict[str, str]]) -> None:
    fake, env = streams
    fake.objects[f"{KV}/namespaces/testns/virtualmachineinstances/vm1"] = {"status": {"phase": "Scheduling"}}
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "port-forward", "--stdio", "vmi/vm1", "22"],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == ExitCode.CONFLICT
    assert b"is not running (phase Scheduling)" in done.stderr
    assert done.stdout == b""  # stdout carries ssh's bytes: never messages
    assert fake.paths == []


async def echo_upper(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(bytes(message).upper() if isinstance(message, bytes) else message.upper())


async def answer_once(ws: ServerConnection) -> None:
    message = await ws.recv()
    await ws.send(bytes(message).upper() if isinstance(message, bytes) else message.upper())
    await ws.close()


def test_port_forward_stdio_is_a_byte_pipe(streams: tuple[FakeStreams, dict[str, str]]) -> None:
    fake, env = streams
    fake.handler = answer_once
    fake.objects[f"{KV}/namespaces/other/virtualmachineinstances/vm1"] = RUNNING
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "port-forward", "--stdio=true", "vmi/vm1/other", "22"],
        input=b"ssh-2.0-hello\n",
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout == b"SSH-2.0-HELLO\n"
    assert fake.paths == [
        "/apis/subresources.kubevirt.io/v1/namespaces/other/virtualmachineinstances/vm1/portforward/22/tcp"
    ]


def _forward_8080(env: dict[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """``virtctl port-forward vm/vm1 :8080`` in a process of its own, output piped."""
    argv = [sys.executable, "-m", "virtctl", "port-forward", "vm/vm1", ":8080"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **popen)


def _read_line(process: subprocess.Popen[bytes], timeout: float = 20) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.stderr else ""
        os.set_blocking(process.stdout.fileno(), False)
        chunk = process.stdout.read(1) or b""
        if not chunk:
            time.sleep(0.02)
        line += chunk
    return line.decode()


def test_sigint_stops_a_port_forward_started_with_sigint_ignored(streams: tuple[FakeStreams, dict[str, str]]) -> None:
    # A shell starts background jobs with SIGINT ignored; kubectl and KubeVirt's virtctl (Go) still stop
    # on `kill -INT`, and so does this one.
    fake, env = streams
    fake.objects[f"{KV}/namespaces/testns/virtualmachineinstances/vm1"] = RUNNING
    process = _forward_8080(env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert _read_line(process).startswith("Forwarding from 127.0.0.1:")
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == ExitCode.OK
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_port_forward_tcp_one_stream_per_connection(streams: tuple[FakeStreams, dict[str, str]]) -> None:
    fake, env = streams
    fake.handler = echo_upper
    fake.objects[f"{KV}/namespaces/testns/virtualmachineinstances/vm1"] = RUNNING
    process = _forward_8080(env)
    try:
        line = _read_line(process)
        assert line.startswith("Forwarding from 127.0.0.1:") and line.rstrip().endswith("-> 8080")
        port = int(line.split(":")[1].split()[0])
        for word in (b"one", b"two"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(word)
                assert conn.recv(100) == word.upper()
        assert len(fake.paths) == 2
        assert all(
            p.endswith("/namespaces/testns/virtualmachineinstances/vm1/portforward/8080/tcp") for p in fake.paths
        )
    finally:
        process.send_signal(2)
        assert process.wait(20) == ExitCode.OK


def test_vnc_proxy_only_prints_the_port_as_json(streams: tuple[FakeStreams, dict[str, str]]) -> None:
    fake, env = streams

    async def vnc_server(ws: ServerConnection) -> None:
        await ws.send(b"RFB 003.008\n")
        await fake.record(ws)

    fake.handler = vnc_server
    process = subprocess.Popen(
        [sys.executable, "-m", "virtctl", "vnc", "--proxy-only", "vmi1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        port = json.loads(_read_line(process))["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.recv(100) == b"RFB 003.008\n"
            conn.sendall(b"RFB 003.008\n")
        assert process.wait(20) == ExitCode.OK
        assert b"".join(fake.received) == b"RFB 003.008\n"
        assert fake.paths[0].endswith("/virtualmachineinstances/vmi1/vnc")
    finally:
        if process.poll() is None:
            process.kill()


def test_vnc_viewer_choice() -> None:
    installed = {"vncviewer": "/usr/bin/vncviewer"}
    assert viewer_command("127.0.0.1", 5901, installed.get) == ["/usr/bin/vncviewer", "127.0.0.1::5901"]
    assert viewer_command("127.0.0.1", 5901, {"remote-viewer": "/rv"}.get) == ["/rv", "vnc://127.0.0.1:5901"]
    assert viewer_command("127.0.0.1", 5901, {}.get) is None


def test_session_end_is_a_value() -> None:
    assert SessionEnd("eof") == SessionEnd("eof", "")


def _fake_viewer(bin_dir: Path, script: str) -> dict[str, str]:
    bin_dir.mkdir(exist_ok=True)
    viewer = bin_dir / "remote-viewer"
    viewer.write_text(f"#!{sys.executable}\n{script}")
    viewer.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_vnc_starts_the_viewer_on_the_local_port(streams: tuple[FakeStreams, dict[str, str]], tmp_path: Path) -> None:
    fake, env = streams

    async def vnc_server(ws: ServerConnection) -> None:
        await ws.send(b"RFB 003.008\n")
        await fake.record(ws)

    fake.handler = vnc_server
    viewer = """import socket, sys
host, port = sys.argv[1].removeprefix("vnc://").rsplit(":", 1)
with socket.create_connection((host, int(port))) as conn:
    assert conn.recv(12) == b"RFB 003.008\\n"
    conn.sendall(b"RFB 003.008\\n")
"""
    env = {**env, **_fake_viewer(tmp_path / "bin", viewer)}
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "vnc", "vmi1"], capture_output=True, env=env, timeout=60, check=False
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert b"".join(fake.received) == b"RFB 003.008\n"


def test_vnc_reports_a_viewer_that_gives_up(streams: tuple[FakeStreams, dict[str, str]], tmp_path: Path) -> None:
    fake, env = streams
    fake.handler = fake.record
    env = {**env, **_fake_viewer(tmp_path / "bin", "raise SystemExit(3)\n")}
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "vnc", "vmi1"], capture_output=True, env=env, timeout=60, check=False
    )
    assert done.returncode == ExitCode.ERROR
    assert b"the VNC viewer exited (status 3) before connecting" in done.stderr
