"""Fakes for virtctl's tests: a loopback HTTP server that answers like the apiserver, and a kubeconfig for it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "details": {},
    "code": 404,
}
DISCOVERY = {
    "kind": "APIResourceList",
    "groupVersion": "subresources.kubevirt.io/v1",
    "resources": [
        {"name": f"virtualmachines/{s}", "namespaced": True, "kind": "StartOptions", "verbs": ["update"]}
        for s in ("start", "stop", "restart", "migrate")
    ]
    + [
        {"name": f"virtualmachineinstances/{s}", "namespaced": True, "kind": "X", "verbs": ["update", "get"]}
        for s in ("pause", "unpause", "softreboot", "reset", "console", "vnc", "guestosinfo", "portforward")
    ],
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    """Answers ``(method, path)`` from :attr:`routes`; anything else gets the apiserver's 404 for unknown URLs."""

    url: str = ""
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def route(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        self.routes[(method, path)] = (status, body if body is not None else {})

    def serve_subresources(self) -> None:
        self.route("GET", "/apis/subresources.kubevirt.io/v1", 200, DISCOVERY)

    def sent(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method]


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    body.update(reason=reason, message=message)
    if details:
        body["details"] = details
    return body


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            api.requests.append(
                Recorded(
                    self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body
                )
            )
            code, answer = api.routes.get((self.command, url.path), (404, NOT_FOUND))
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _answer  # noqa: N815

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def write_kubeconfig(path: Path, server: str, namespace: str | None = "testns") -> Path:
    context: dict[str, Any] = {"cluster": "fake", "user": "tester"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "fake", "context": context},
            {"name": "other", "context": {"cluster": "fake", "user": "tester"}},
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig for :func:`fake_api`, also in ``$KUBECONFIG`` (as a user would have it)."""
    path = write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path
