"""Probes: each handler against real local endpoints, and the thresholds that flip ready or kill."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from devcluster.node.probes import Prober, probe_once

pytestmark = pytest.mark.unit


async def never_exec(command: list[str], limit: float) -> bool:
    raise AssertionError("no exec expected")


async def serve(handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_tcp_probe_passes_when_something_listens_and_fails_when_not() -> None:
    async def scenario() -> tuple[bool, bool]:
        server, port = await serve(lambda r, w: w.close())
        async with server:
            up, _ = await probe_once({"tcpSocket": {"port": port}}, {}, "127.0.0.1", never_exec)
        down, _ = await probe_once({"tcpSocket": {"port": port}}, {}, "127.0.0.1", never_exec)
        return up, down

    assert asyncio.run(scenario()) == (True, False)


def test_http_probe_reads_the_status_code_and_resolves_named_ports() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        code = "200 OK" if request.startswith("GET /healthz ") and "X-Probe: yes" in request else "503 Nope"
        writer.write(f"HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[bool, bool]:
        server, port = await serve(respond)
        container = {"ports": [{"name": "http", "containerPort": port}]}
        probe = {"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}
        async with server:
            good, _ = await probe_once(probe, container, "127.0.0.1", never_exec)
            bad, _ = await probe_once({"httpGet": {"path": "/other", "port": port}}, {}, "127.0.0.1", never_exec)
        return good, bad

    assert asyncio.run(scenario()) == (True, False)


def test_exec_probes_use_the_runner_with_the_timeout() -> None:
    seen: list[tuple[list[str], float]] = []

    async def runner(command: list[str], limit: float) -> bool:
        seen.append((command, limit))
        return command == ["true"]

    assert asyncio.run(probe_once({"exec": {"command": ["true"]}, "timeoutSeconds": 4}, {}, "", runner))[0]
    assert seen == [(["true"], 4.0)]


def test_readiness_follows_thresholds_and_liveness_kills() -> None:
    results = iter([False, True, True, False, False, False] + [True] * 100)
    changes: list[bool] = []
    kills: list[str] = []

    async def runner(command: list[str], limit: float) -> bool:
        return next(results) if command == ["ready"] else False

    container = {
        "name": "c",
        "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 0.001, "successThreshold": 2},
        "livenessProbe": {"exec": {"command": ["alive"]}, "periodSeconds": 0.001, "failureThreshold": 3},
    }
    prober = Prober(container, "", runner, lambda: changes.append(prober.readiness_passed), kills.append, "ns/p")
    assert prober.readiness_passed is False

    async def scenario() -> None:
        task = asyncio.create_task(prober.run())
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(scenario())
    assert changes[:3] == [True, False, True]  # ready after 2 passes, unready after 3 failures, ready again
    assert kills == ["liveness probe failed"]


def test_a_failing_startup_probe_kills_and_holds_the_other_probes() -> None:
    kills: list[str] = []

    async def runner(command: list[str], limit: float) -> bool:
        assert command == ["started"]
        return False

    container = {
        "name": "c",
        "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 0.001, "failureThreshold": 2},
        "readinessProbe": {"exec": {"command": ["ready"]}},
    }
    prober = Prober(container, "", runner, lambda: None, kills.append, "ns/p")
    asyncio.run(asyncio.wait_for(prober.run(), 5))
    assert kills == ["startup probe failed"] and not prober.startup_passed
