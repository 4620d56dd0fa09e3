"""Request bodies are bounded: a declared or a streamed body over the limit is refused with 413."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from virt_api.limits import BodyLimit

pytestmark = pytest.mark.unit


def run(headers: list[tuple[bytes, bytes]], chunks: list[bytes], path: str = "/admission/x") -> tuple[int, int]:
    """(status sent, body bytes the app read) for one request through the middleware."""
    read = 0
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal read
        while True:
            message = await receive()
            read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    limited = BodyLimit(app, limits=(("/admission", 100),), default=10, refuse=lambda n: {"code": 413, "limit": n})
    asyncio.run(limited({"type": "http", "path": path, "headers": headers}, receive, send))
    if sent[0]["status"] == 413:
        assert json.loads(sent[1]["body"]) == {"code": 413, "limit": 100 if path.startswith("/admission") else 10}
    return sent[0]["status"], read


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    assert run([(b"content-length", b"101")], [b"x" * 101]) == (413, 0)


def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    status, read = run([], [b"x" * 60, b"x" * 60, b"x" * 60])
    assert status == 413 and read < 180


def test_bodies_within_their_paths_limit_pass() -> None:
    assert run([(b"content-length", b"100")], [b"x" * 100]) == (200, 100)
    assert run([], [b"x" * 11], path="/apis/subresources.kubevirt.io/v1")[0] == 413
