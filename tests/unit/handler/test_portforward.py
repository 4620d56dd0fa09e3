"""The handler's portforward route: bytes to a TCP connection both ways, refusals as HTTP answers, and the
connection really made inside the pod's network namespace (a real one, when the tests run as root)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from virt_handler.launcher_client import LauncherTarget
from virt_handler.podnetwork import GUEST_ADDRESS
from virt_handler.portforward import ForwardError, ForwardTarget, connect_to_guest
from virt_handler.server import create_app

pytestmark = pytest.mark.unit

PATH = "/v1/namespaces/default/virtualmachineinstances/vm1/portforward"
LAUNCHER = LauncherTarget("default", "vm1", "vmi-uid", "pod-uid", Path("/nonexistent"), "sockets", None)


@pytest.fixture
def guest() -> Iterator[int]:
    """A stand-in guest service on loopback: greets, then upper-cases what it gets; returns its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"hello\n")
            while (data := conn.recv(1024)) and data != b"bye\n":
                conn.sendall(data.upper())

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=loop, daemon=True)
    acceptor.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        acceptor.join()
        server.close()


def handler_app(guest_port: int, asked: list[tuple[ForwardTarget, int]]) -> TestClient:
    """The endpoint with a connector that reaches the stand-in guest instead of a pod's namespace."""

    async def connect(target: ForwardTarget, port: int) -> socket.socket:
        asked.append((target, port))
        if port == 1:
            raise ForwardError(502, "connecting to port 1 of default/vm1 (10.0.2.2) failed: Connection refused")
        return socket.create_connection(("127.0.0.1", guest_port))

    def forward_lookup(namespace: str, name: str) -> ForwardTarget | None:
        return ForwardTarget(LAUNCHER, GUEST_ADDRESS) if (namespace, name) == ("default", "vm1") else None

    return TestClient(create_app(lambda ns, name: None, forward_lookup, connect))


def test_bytes_flow_both_ways_and_several_forwards_are_open_at_once(guest: int) -> None:
    asked: list[tuple[ForwardTarget, int]] = []
    c = handler_app(guest, asked)
    with (
        c.websocket_connect(f"{PATH}/8080/tcp", subprotocols=["plain.kubevirt.io"]) as first,
        c.websocket_connect(f"{PATH}/22/tcp") as second,
    ):
        assert first.accepted_subprotocol == "plain.kubevirt.io"
        assert first.receive_bytes() == b"hello\n" == second.receive_bytes()
        first.send_bytes(b"one\n")
        second.send_bytes(b"two\n")
        assert (first.receive_bytes(), second.receive_bytes()) == (b"ONE\n", b"TWO\n")
    assert [(t.guest, port) for t, port in asked] == [(GUEST_ADDRESS, 8080), (GUEST_ADDRESS, 22)]


def test_the_guest_closing_its_connection_ends_the_stream(guest: int) -> None:
    with handler_app(guest, []).websocket_connect(f"{PATH}/80/tcp") as ws:
        assert ws.receive_bytes() == b"hello\n"
        ws.send_bytes(b"bye\n")
        message = ws.receive()
        assert message["type"] == "websocket.close"


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        (f"{PATH}/53/udp", 400, "port-forward over 'udp' is not supported by podvirt"),
        (f"{PATH}/0/tcp", 400, "port '0' is not a number in 1-65535"),
        (f"{PATH}/65536/tcp", 400, "port '65536' is not a number in 1-65535"),
        ("/v1/namespaces/default/virtualmachineinstances/other/portforward/22/tcp", 404, "not running on this node"),
        (f"{PATH}/1/tcp", 502, "Connection refused"),
    ],
)
def test_what_cannot_be_forwarded_is_refused_with_an_http_answer(guest: int, path: str, code: int, words: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as caught, handler_app(guest, []).websocket_connect(path):
        pass
    assert caught.value.status_code == code
    assert words in caught.value.json()["message"]


def test_a_handler_without_forward_lookup_refuses_port_forwards() -> None:
    c = TestClient(create_app(lambda ns, name: None))
    with pytest.raises(WebSocketDenialResponse) as caught, c.websocket_connect(f"{PATH}/22/tcp"):
        pass
    assert caught.value.status_code == 503


def test_a_vmi_without_a_masquerade_interface_or_sharing_the_nodes_network_gets_no_forward() -> None:
    with pytest.raises(ForwardError, match="no pod network interface with masquerade binding") as caught:
        asyncio.run(connect_to_guest(ForwardTarget(LAUNCHER, None), 22, lambda _: os.getpid()))
    assert caught.value.status == 409
    with pytest.raises(ForwardError, match="shares the node's network") as caught:
        asyncio.run(connect_to_guest(ForwardTarget(LAUNCHER, GUEST_ADDRESS), 22, lambda _: os.getpid()))
    assert caught.value.status == 409


def _netns_of_this_thread() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="creating a network namespace needs root")
def test_the_connection_is_made_inside_the_pods_network_namespace() -> None:
    """A guest address that exists only inside the pod's namespace answers; the caller never leaves its own."""
    ns = f"pvpf{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    holder = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{GUEST_ADDRESS}/32", "dev", "lo"], check=True)
        program = (
            "import socket; s = socket.create_server(('10.0.2.2', 8080)); print('up', flush=True); "
            "c, _ = s.accept(); c.sendall(b'from inside the pod'); c.close(); import time; time.sleep(60)"
        )
        # `ip netns exec` execs python in place: the holder's pid is a process in the pod's namespace.
        holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", program], stdout=subprocess.PIPE)
        assert holder.stdout is not None and holder.stdout.readline() == b"up\n"
        before = _netns_of_this_thread()

        async def fetch() -> bytes:
            sock = await connect_to_guest(ForwardTarget(LAUNCHER, GUEST_ADDRESS), 8080, lambda _: holder.pid)
            reader, writer = await asyncio.open_connection(sock=sock)
            data = await reader.read()
            writer.close()
            return data

        assert asyncio.run(fetch()) == b"from inside the pod"
        assert _netns_of_this_thread() == before

        async def refused() -> None:
            await connect_to_guest(ForwardTarget(LAUNCHER, GUEST_ADDRESS), 8081, lambda _: holder.pid)

        started = time.monotonic()
        with pytest.raises(ForwardError, match="Connection refused") as caught:
            asyncio.run(refused())
        assert caught.value.status == 502 and time.monotonic() - started < 5
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
