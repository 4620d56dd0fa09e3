"""Over real TLS on loopback: the front proxy's certificate decides, and the console crosses mutual TLS.

virt-api runs here as it does in a cluster (uvicorn with virt-api's protocols and serving context), with
fake cluster objects; a small stand-in virt-handler serves the handler endpoint with mutual TLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from api_fakes import FRONT_PROXY_CA, FRONT_PROXY_CLIENT, FakeApiServer, services, vmi
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import connect

from podvirt_common import certs
from virt_api.app import create_app
from virt_api.subresources.handler import HandlerTLS, TLSHandlerClient
from virt_api.tls import ServingContext, TLSHttpProtocol, TLSWebSocketProtocol

pytestmark = pytest.mark.unit

API = "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachineinstances/vm"
SERVING_CA = certs.new_ca("test-virt-api-ca")
SERVING = certs.issue(SERVING_CA, "virt-api", hosts=("127.0.0.1",), server=True)
INTERNAL_CA = certs.new_ca("test-podvirt-internal-ca")
HANDLER_SERVING = certs.issue(INTERNAL_CA, "virt-handler", hosts=("virt-handler",), server=True)
API_CLIENT = certs.issue(INTERNAL_CA, "virt-api", client=True)
OTHER_CA = certs.new_ca("someone-else")
IMPOSTOR = certs.issue(OTHER_CA, "front-proxy-client", client=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """An ASGI app served by uvicorn in a thread, stopped at the end."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _handler_app() -> FastAPI:
    app = FastAPI()

    @app.put("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/{action}")
    async def act(namespace: str, name: str, action: str) -> dict[str, Any]:
        return {"phase": "Running", "action": action}

    @app.websocket("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console")
    async def console(ws: WebSocket, namespace: str, name: str) -> None:
        await ws.accept(subprotocol="plain.kubevirt.io")
        await ws.send_bytes(b"login: ")
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            await ws.send_bytes(b"echo:" + (message.get("bytes") or b""))

    return app


def _write(tmp: Path, stem: str, pair: certs.KeyPair) -> tuple[Path, Path]:
    crt, key = tmp / f"{stem}.crt", tmp / f"{stem}.key"
    pair.write(crt, key)
    return crt, key


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tls")
    handler_crt, handler_key = _write(tmp, "handler", HANDLER_SERVING)
    client_crt, client_key = _write(tmp, "client", API_CLIENT)
    ca_file = tmp / "internal-ca.crt"
    ca_file.write_bytes(INTERNAL_CA.cert_pem)
    handler_port, api_port = _free_port(), _free_port()
    handler_config = uvicorn.Config(
        _handler_app(),
        host="127.0.0.1",
        port=handler_port,
        ssl_certfile=str(handler_crt),
        ssl_keyfile=str(handler_key),
        ssl_ca_certs=str(ca_file),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_config=None,
        lifespan="off",
    )
    api = FakeApiServer()
    api.put("virtualmachineinstances", vmi(node="node-1"))

    async def pods_on_loopback(namespace: str, selector: str, field: str) -> list[dict[str, Any]]:
        return [{"status": {"phase": "Running", "podIP": "127.0.0.1"}}]

    handler_client = TLSHandlerClient(
        HandlerTLS(client_crt, client_key, ca_file), pods_on_loopback, "kubevirt", port=handler_port
    )
    serving = ServingContext(FRONT_PROXY_CA.cert_pem)
    serving.load(SERVING.cert_pem, SERVING.key_pem)
    api_config = uvicorn.Config(
        create_app(services(api, handler_client)),  # type: ignore[arg-type]
        host="127.0.0.1",
        port=api_port,
        http=TLSHttpProtocol,
        ws=TLSWebSocketProtocol,
        ssl_context_factory=lambda _c, _d: serving.context,
        log_config=None,
        lifespan="off",
        ws_ping_interval=1.0,
    )
    with Served(handler_config), Served(api_config):
        yield {"base": f"https://127.0.0.1:{api_port}", "tmp": tmp, "serving": serving}


def _client(endpoints: dict[str, Any], pair: certs.KeyPair | None) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=SERVING_CA.cert_pem.decode())
    if pair is not None:
        crt, key = _write(endpoints["tmp"], f"c{id(pair)}", pair)
        ctx.load_cert_chain(crt, key)
    return httpx.Client(base_url=endpoints["base"], verify=ctx, headers={"X-Remote-User": "alice"})


def test_the_front_proxy_certificate_opens_the_aggregated_api(endpoints: dict[str, Any]) -> None:
    with _client(endpoints, FRONT_PROXY_CLIENT) as c:
        assert c.get("/apis/subresources.kubevirt.io/v1").status_code == 200


def test_without_it_the_user_header_counts_for_nothing(endpoints: dict[str, Any]) -> None:
    with _client(endpoints, None) as c:
        answer = c.get("/apis/subresources.kubevirt.io/v1")
    assert answer.status_code == 401 and answer.json()["reason"] == "Unauthorized"


def test_a_certificate_from_another_ca_does_not_even_connect(endpoints: dict[str, Any]) -> None:
    with _client(endpoints, IMPOSTOR) as c, pytest.raises(httpx.HTTPError):
        c.get("/apis/subresources.kubevirt.io/v1")


def test_the_admission_webhooks_need_no_client_certificate(endpoints: dict[str, Any]) -> None:
    with _client(endpoints, None) as c:
        answer = c.post("/admission/validate/virtualmachines", content=b"{}")
    assert answer.status_code == 400 and answer.json()["kind"] == "Status"


def test_a_vmi_action_reaches_the_handler_over_mutual_tls(endpoints: dict[str, Any]) -> None:
    with _client(endpoints, FRONT_PROXY_CLIENT) as c:
        assert c.put(f"{API}/reset").status_code == 202


def test_console_bytes_cross_virt_api_both_ways(endpoints: dict[str, Any]) -> None:
    async def session() -> list[bytes]:
        ctx = ssl.create_default_context(cadata=SERVING_CA.cert_pem.decode())
        crt, key = _write(endpoints["tmp"], "proxy", FRONT_PROXY_CLIENT)
        ctx.load_cert_chain(crt, key)
        url = endpoints["base"].replace("https", "wss") + f"{API}/console"
        async with connect(
            url,
            ssl=ctx,
            subprotocols=["plain.kubevirt.io"],
            additional_headers={"X-Remote-User": "alice"},  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "plain.kubevirt.io"
            first = await ws.recv()
            await ws.send(b"ls\n")
            second = await ws.recv()
            await asyncio.sleep(1.5)  # a ping from virt-api and its pong pass without ending the session
            await ws.send(b"x")
            third = await ws.recv()
        return [bytes(first), bytes(second), bytes(third)]  # type: ignore[arg-type]

    assert asyncio.run(session()) == [b"login: ", b"echo:ls\n", b"echo:x"]


def test_a_rotated_serving_certificate_is_served_to_new_connections(endpoints: dict[str, Any]) -> None:
    fresh = certs.issue(SERVING_CA, "virt-api", hosts=("127.0.0.1",), server=True)
    endpoints["serving"].load(fresh.cert_pem, fresh.key_pem)
    try:
        host, port = endpoints["base"].removeprefix("https://").split(":")
        served = ssl.get_server_certificate((host, int(port)))
        assert served.strip() == fresh.cert_pem.decode().strip()
    finally:
        endpoints["serving"].load(SERVING.cert_pem, SERVING.key_pem)
