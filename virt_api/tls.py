"""TLS for virt-api's one port: the serving context, and the client certificate handed to the app.

The port serves both the admission webhooks (the apiserver calls them without a client certificate)
and the aggregated API (the apiserver's front proxy presents one). The server context therefore asks
for a client certificate without requiring it, and trusts only the requestheader CA to sign it: a
connection presenting any other certificate fails the handshake. Whether a verified certificate came
with a request is passed to the app in the ASGI TLS extension (``scope["extensions"]["tls"]``), where
:mod:`virt_api.auth` insists on it for every aggregated-API route.

Certificates rotate in place: :meth:`ServingContext.load` puts a new chain into the live context, and
connections made from then on use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from podvirt_common.certs import write_private

Scope = dict[str, Any]


class ServingContext:
    """The server's SSL context, with a serving certificate that can be swapped while it serves."""

    def __init__(self, client_ca: bytes | None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        if client_ca:
            ctx.load_verify_locations(cadata=client_ca.decode())
            ctx.verify_mode = ssl.CERT_OPTIONAL
        self.context = ctx
        self._client_cas: set[bytes] = {client_ca} if client_ca else set()

    def load(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve ``cert_pem`` (with its chain) from now on. The key only ever touches a private temp file."""
        with tempfile.TemporaryDirectory(prefix="virt-api-tls-") as tmp:
            cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_file.write_bytes(cert_pem)
            write_private(key_file, key_pem)
            self.context.load_cert_chain(cert_file, key_file)

    def trust_client_ca(self, client_ca: bytes) -> None:
        """Also accept front-proxy certificates signed by ``client_ca`` (after the apiserver rotates it)."""
        if client_ca and client_ca not in self._client_cas:
            self.context.load_verify_locations(cadata=client_ca.decode())
            self.context.verify_mode = ssl.CERT_OPTIONAL
            self._client_cas.add(client_ca)


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        # With CERT_OPTIONAL a certificate reaching this point has been verified against the client CA.
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


class _WithTLS:
    """An ASGI app wrapper that adds one connection's TLS facts to each request's scope."""

    def __init__(self, app: Any, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": self.tls}}
        await self.app(scope, receive, send)


class TLSHttpProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, telling the app about the connection's client certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = _tls_extension(transport)
        if tls is not None:
            self.app = _WithTLS(self.app, tls)


class TLSWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, telling the app about the connection's client certificate."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        tls = _tls_extension(transport)
        if tls is not None:
            self.app = _WithTLS(self.app, tls)


def client_context(cert_file: Path, key_file: Path, ca_file: Path) -> ssl.SSLContext:
    """A client context for mutual TLS: present ``cert_file``, trust servers signed by ``ca_file``."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def files_signature(*paths: Path) -> tuple[float, ...]:
    """Modification times of ``paths``, to notice that mounted certificate files were rotated."""
    stamps: list[float] = []
    for path in paths:
        with contextlib.suppress(OSError):
            stamps.append(path.stat().st_mtime)
    return tuple(stamps)
