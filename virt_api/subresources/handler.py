"""The client for "the virt-handler on node X": VMI actions, guest OS info and console/VNC streams.

This is the interface virt-api needs from virt-handler (and what virt-handler's endpoint serves), all
under ``/v1/namespaces/{namespace}/virtualmachineinstances/{name}/`` on the handler pod of the VMI's node,
over mutual TLS (virt-api presents a client certificate; the handler's serving certificate must carry the
DNS name ``--handler-server-name``, ``virt-handler`` by default, and be signed by ``--handler-ca``):

    PUT  pause | unpause | softreboot | reset      2xx when done
    GET  guestosinfo                               200 with the guest agent's information (JSON)
    GET  console | vnc  (websocket)                subprotocol ``plain.kubevirt.io``; binary frames carry
                                                   raw bytes both ways; one session per VMI and kind
                                                   (the handler closes the older one)
    GET  portforward/{port}/tcp  (websocket)       the same, joined to a TCP connection to the guest's
                                                   port; any number at once

A refusal is JSON ``{"message": ...}`` with 400 (a bad port-forward request), 404 (the VMI is not on
that node), 409 (not running), 502 (the launcher or guest failed) or 503 (the launcher is unreachable);
a console or VNC stream that cannot open is closed before it is accepted, with code 4404 or 4503.
virt-api finds the handler of a node as the running pod labelled ``kubevirt.io=virt-handler`` on that
node in virt-api's namespace, at its pod IP and ``--handler-port`` (8186) — unless the node is named in
``--handler-endpoint NODE=HOST:PORT``, which is for development setups whose handlers run as processes
on the machine rather than as pods (podvirt's end-to-end tests); a real installation never sets it.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from virt_api.status import StatusError, bad_request, unavailable
from virt_api.tls import client_context, files_signature

PLAIN_SUBPROTOCOL = "plain.kubevirt.io"
HANDLER_LABEL = "kubevirt.io=virt-handler"
DEFAULT_PORT = 8186
Action = Literal["pause", "unpause", "softreboot", "reset"]
#: What a stream connects to, as the path under the VMI: ``console``, ``vnc``, ``portforward/22/tcp``.
StreamKind = str
MAX_FRAME = 16 * 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where the handler of one node listens."""

    node: str
    host: str
    port: int = DEFAULT_PORT


class Stream(Protocol):
    """A console or VNC byte stream to a VMI."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes | None:
        """The next bytes; None once the stream has ended."""
        ...


class HandlerClient(Protocol):
    """What virt-api asks of a node's virt-handler."""

    async def locate(self, node: str) -> Endpoint: ...

    async def act(self, endpoint: Endpoint, namespace: str, name: str, action: Action) -> None: ...

    async def guest_os_info(self, endpoint: Endpoint, namespace: str, name: str) -> dict[str, Any]: ...

    def stream(
        self, endpoint: Endpoint, namespace: str, name: str, kind: StreamKind
    ) -> contextlib.AbstractAsyncContextManager[Stream]: ...


def parse_endpoint(value: str) -> Endpoint:
    """``NODE=HOST:PORT`` (the ``--handler-endpoint`` flag) as an :class:`Endpoint`."""
    node, sep, address = value.partition("=")
    host, colon, port = address.rpartition(":")
    if not (node and sep and host and colon and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{value!r} is not NODE=HOST:PORT")
    return Endpoint(node, host.strip("[]"), int(port))


def vmi_path(namespace: str, name: str, what: str) -> str:
    return f"/v1/namespaces/{quote(namespace, safe='')}/virtualmachineinstances/{quote(name, safe='')}/{what}"


def handler_error(code: int, body: bytes, node: str) -> StatusError:
    """A handler's refusal as the Status virt-api's caller gets."""
    try:
        message = str(json.loads(body).get("message") or "")
    except (ValueError, AttributeError):
        message = body[:300].decode(errors="replace")
    message = message or f"virt-handler on {node} answered {code}"
    if code == 400:
        return bad_request(message)
    if code in (404, 409):
        return StatusError(409, "Conflict", message)
    if code == 403:  # a websocket the handler closed before accepting it
        return unavailable(f"virt-handler on {node} refused the stream: {message}")
    if code == 503:
        return unavailable(message)
    return StatusError(500, "InternalError", f"virt-handler on {node}: {message}")


@dataclass(frozen=True)
class HandlerTLS:
    """virt-api's client certificate for handlers, and the CA and name a handler's certificate must have."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    server_name: str = "virt-handler"


class _WebSocketStream:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def receive(self) -> bytes | None:
        try:
            message = await self.ws.recv()
        except ConnectionClosed:
            return None
        return message.encode() if isinstance(message, str) else bytes(message)


PodLister = Callable[[str, str, str], Awaitable[list[dict[str, Any]]]]


class TLSHandlerClient:
    """:class:`HandlerClient` over HTTPS and websockets with mutual TLS; certificate files are re-read
    when they change (a rotated Secret)."""

    def __init__(
        self,
        tls: HandlerTLS,
        list_pods: PodLister,
        namespace: str,
        port: int = DEFAULT_PORT,
        fixed: Mapping[str, Endpoint] | None = None,
    ) -> None:
        self.tls = tls
        self.list_pods = list_pods
        self.namespace = namespace
        self.port = port
        #: Nodes whose handler is not a pod (``--handler-endpoint``; development clusters only).
        self.fixed = dict(fixed or {})
        self._signature: tuple[float, ...] = ()
        self._context: ssl.SSLContext | None = None
        self._http: httpx.AsyncClient | None = None

    def _ssl(self) -> ssl.SSLContext:
        signature = files_signature(self.tls.cert_file, self.tls.key_file, self.tls.ca_file)
        if self._context is None or signature != self._signature:
            self._context = client_context(self.tls.cert_file, self.tls.key_file, self.tls.ca_file)
            self._signature = signature
            self._http = None
        return self._context

    def _client(self) -> httpx.AsyncClient:
        context = self._ssl()
        if self._http is None:
            self._http = httpx.AsyncClient(verify=context, timeout=httpx.Timeout(30.0, connect=5.0))
        return self._http

    async def locate(self, node: str) -> Endpoint:
        if node in self.fixed:
            return self.fixed[node]
        pods = await self.list_pods(self.namespace, HANDLER_LABEL, f"spec.nodeName={node}")
        for pod in pods:
            status = pod.get("status") or {}
            if status.get("phase") == "Running" and status.get("podIP"):
                return Endpoint(node, str(status["podIP"]), self.port)
        raise unavailable(f"no running virt-handler on node {node}")

    def _url(self, endpoint: Endpoint, path: str, scheme: str = "https") -> str:
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        return f"{scheme}://{host}:{endpoint.port}{path}"

    async def _request(self, method: str, endpoint: Endpoint, path: str) -> httpx.Response:
        try:
            response = await self._client().request(
                method, self._url(endpoint, path), extensions={"sni_hostname": self.tls.server_name}
            )
        except httpx.HTTPError as exc:
            raise unavailable(f"virt-handler on {endpoint.node} is unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise handler_error(response.status_code, response.content, endpoint.node)
        return response

    async def act(self, endpoint: Endpoint, namespace: str, name: str, action: Action) -> None:
        await self._request("PUT", endpoint, vmi_path(namespace, name, action))

    async def guest_os_info(self, endpoint: Endpoint, namespace: str, name: str) -> dict[str, Any]:
        response = await self._request("GET", endpoint, vmi_path(namespace, name, "guestosinfo"))
        try:
            info = response.json()
        except ValueError as exc:
            raise handler_error(502, b"", endpoint.node) from exc
        return info if isinstance(info, dict) else {}

    @contextlib.asynccontextmanager
    async def stream(self, endpoint: Endpoint, namespace: str, name: str, kind: StreamKind) -> AsyncIterator[Stream]:
        url = self._url(endpoint, vmi_path(namespace, name, kind), "wss")
        try:
            ws = await connect(
                url,
                ssl=self._ssl(),
                server_hostname=self.tls.server_name,
                subprotocols=[PLAIN_SUBPROTOCOL],  # type: ignore[list-item]
                compression=None,
                open_timeout=10,
                ping_interval=20,
                ping_timeout=20,
                max_size=MAX_FRAME,
            )
        except InvalidStatus as exc:
            raise handler_error(exc.response.status_code, bytes(exc.response.body or b""), endpoint.node) from exc
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise unavailable(f"virt-handler on {endpoint.node} is unreachable: {exc}") from exc
        try:
            yield _WebSocketStream(ws)
        finally:
            await ws.close()
