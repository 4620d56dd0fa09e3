"""The handler endpoint: mutual TLS only, console bytes both ways, one session per VMI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from devcluster.config import free_port
from podvirt_common import certs
from virt_handler.console import TAKEN_OVER_CODE
from virt_handler.launcher_client import LauncherTarget
from virt_handler.server import create_app

pytestmark = pytest.mark.unit


@dataclass
class Endpoint:
    url: str
    good_client: ssl.SSLContext
    stranger: ssl.SSLContext
    no_cert: ssl.SSLContext


def _client_context(ca: certs.KeyPair, client: certs.KeyPair | None, tmp: Path, stem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if client is not None:
        client.write(tmp / f"{stem}.crt", tmp / f"{stem}.key")
        ctx.load_cert_chain(tmp / f"{stem}.crt", tmp / f"{stem}.key")
    return ctx


@pytest.fixture
def console_echo(tmp_path: Path) -> Iterator[LauncherTarget]:
    """A launcher stand-in whose console socket upper-cases what it gets."""
    (tmp_path / "pod" / "sockets").mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "pod" / "sockets" / "console.sock"))
    server.listen(4)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"login: ")
            while data := conn.recv(1024):
                conn.sendall(data.upper())

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = server.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=loop, daemon=True)
    acceptor.start()
    try:
        yield LauncherTarget("default", "vm1", "vmi-uid", "pod-uid", tmp_path / "pod", "sockets", os.getuid())
    finally:
        stop.set()
        acceptor.join()
        server.close()


@pytest.fixture
def endpoint(tmp_path: Path, console_echo: LauncherTarget) -> Iterator[Endpoint]:
    server_ca, client_ca, other_ca = certs.new_ca("handler-ca"), certs.new_ca("virt-api-client-ca"), certs.new_ca("x")
    certs.issue(server_ca, "virt-handler", hosts=("127.0.0.1",), server=True).write(
        tmp_path / "tls.crt", tmp_path / "tls.key"
    )
    (tmp_path / "client-ca.crt").write_bytes(client_ca.cert_pem)
    port = free_port()
    app = create_app(lambda ns, name: console_echo if (ns, name) == ("default", "vm1") else None)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(tmp_path / "tls.crt"),
            ssl_keyfile=str(tmp_path / "tls.key"),
            ssl_ca_certs=str(tmp_path / "client-ca.crt"),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield Endpoint(
            url=f"wss://127.0.0.1:{port}/v1/namespaces/default/virtualmachineinstances/vm1/console",
            good_client=_client_context(server_ca, certs.issue(client_ca, "virt-api", client=True), tmp_path, "good"),
            stranger=_client_context(server_ca, certs.issue(other_ca, "intruder", client=True), tmp_path, "bad"),
            no_cert=_client_context(server_ca, None, tmp_path, "none"),
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_console_bytes_flow_both_ways(endpoint: Endpoint) -> None:
    async def session() -> bytes:
        async with connect(endpoint.url, ssl=endpoint.good_client, subprotocols=["plain.kubevirt.io"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "plain.kubevirt.io"
            greeting = await ws.recv()
            await ws.send(b"root\n")
            echoed = await ws.recv()
            return bytes(greeting) + bytes(echoed)  # type: ignore[arg-type]

    assert asyncio.run(session()) == b"login: ROOT\n"


@pytest.mark.parametrize("who", ["stranger", "no_cert"])
def test_clients_without_virt_apis_certificate_are_refused(endpoint: Endpoint, who: str) -> None:
    async def session() -> None:
        async with connect(endpoint.url, ssl=getattr(endpoint, who)) as ws:
            await ws.recv()

    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosed, InvalidHandshake, OSError)):
        asyncio.run(session())


def test_a_second_session_takes_over_the_first(endpoint: Endpoint) -> None:
    async def sessions() -> int | None:
        async with connect(endpoint.url, ssl=endpoint.good_client) as first:
            await first.recv()
            async with connect(endpoint.url, ssl=endpoint.good_client) as second:
                await second.recv()
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(first.recv(), 5)
                await second.send(b"still here")
                assert await second.recv() == b"STILL HERE"
                return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(sessions()) == TAKEN_OVER_CODE


def test_unknown_vmi_is_closed_with_a_reason(endpoint: Endpoint) -> None:
    url = endpoint.url.replace("/vm1/", "/nothere/")

    async def session() -> str:
        try:
            async with connect(url, ssl=endpoint.good_client) as ws:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.reason if exc.rcvd else ""
        except Exception as exc:  # the server may refuse the handshake instead
            return str(exc)
        return ""

    reason = asyncio.run(session())
    assert "not running here" in reason or "403" in reason
