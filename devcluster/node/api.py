"""The node agent's Kubernetes API client: asyncio, httpx, a client certificate from a kubeconfig.

Deliberately small: JSON in, JSON out, watches as async iterators of events. The agent talks to
the API as ``system:node:<name>``, so the Node authorizer and NodeRestriction decide what it may
read (only its pods' Secrets and ConfigMaps) and write (its Node, Lease, pods' status).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

USER_AGENT = "devcluster-node-agent/0.1 (stand-in for a kubelet)"
# The Node authorizer learns of a pod's Secrets and ConfigMaps a moment after the pod is bound.
FORBIDDEN_RETRY_SECONDS = 5.0


class ApiError(Exception):
    """The API answered with an error status; ``status`` is the HTTP code, ``reason`` the Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    server: str
    ssl_context: ssl.SSLContext

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.server).port or 443


@contextlib.contextmanager
def _material(entry: dict[str, Any], key: str, base: Path) -> Iterator[str | None]:
    """A file path for ``key`` or ``key-data`` of a kubeconfig entry (data goes to a private temp file)."""
    if entry.get(f"{key}-data"):
        fd, path = tempfile.mkstemp(prefix="kubeconfig-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64decode(entry[f"{key}-data"]))
            yield path
        finally:
            os.unlink(path)
    elif entry.get(key):
        yield str(base / entry[key])
    else:
        yield None


def load_kubeconfig(path: Path) -> Endpoint:
    """The server and a TLS context with the client certificate of the kubeconfig's current context."""
    doc = yaml.safe_load(path.read_text())
    contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
    context = contexts.get(doc.get("current-context", ""), next(iter(contexts.values()), {}))
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}
    users = {u["name"]: u["user"] for u in doc.get("users", [])}
    cluster = clusters.get(context.get("cluster", ""), next(iter(clusters.values()), None))
    user = users.get(context.get("user", ""), next(iter(users.values()), None))
    if cluster is None or user is None:
        raise ValueError(f"{path}: no cluster or user in the current context")
    base = path.parent
    with _material(cluster, "certificate-authority", base) as cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    with _material(user, "client-certificate", base) as cert, _material(user, "client-key", base) as key:
        if cert is None:
            raise ValueError(f"{path}: the node agent authenticates with a client certificate, and there is none")
        ctx.load_cert_chain(cert, key)
    return Endpoint(str(cluster["server"]).rstrip("/"), ctx)


class KubeClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(
            base_url=endpoint.server,
            verify=endpoint.ssl_context,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        retry_forbidden: bool = False,
    ) -> dict[str, Any]:
        """One API call; returns the decoded body. With ``retry_forbidden``, a 403 is retried for a few
        seconds, as the Node authorizer's graph catches up with a freshly bound pod."""
        delay = 0.05
        waited = 0.0
        while True:
            try:
                return await self._once(method, path, params, body, content_type)
            except ApiError as exc:
                if not (retry_forbidden and exc.status == 403 and waited < FORBIDDEN_RETRY_SECONDS):
                    raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)

    async def _once(
        self, method: str, path: str, params: dict[str, str] | None, body: Any, content_type: str
    ) -> dict[str, Any]:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else {}
        resp = await self._http.request(method, path, params=params, content=content, headers=headers)
        data = _decode(resp.content)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, str(data.get("reason", "")), str(data.get("message", resp.text[:300])))
        return data

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return await self.request("GET", path, **kw)

    async def get_or_none(self, path: str, **kw: Any) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path, **kw)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Events of a watch (``{"type", "object"}``) until the server ends it; ERROR events raise ApiError."""
        query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        timeout = httpx.Timeout(None, connect=5.0)
        async with self._http.stream("GET", path, params=query, timeout=timeout) as resp:
            if resp.status_code >= 400:
                data = _decode(await resp.aread())
                raise ApiError(resp.status_code, str(data.get("reason", "")), str(data.get("message", "")))
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    raise ApiError(
                        int(status.get("code", 500)), str(status.get("reason", "")), str(status.get("message"))
                    )
                yield event


def _decode(content: bytes) -> dict[str, Any]:
    if not content:
        return {}
    try:
        data = json.loads(content)
    except ValueError:
        return {"message": content[:300].decode(errors="replace")}
    return data if isinstance(data, dict) else {"items": data}
