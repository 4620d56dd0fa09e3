"""The command socket over a real unix socket, with a fake backend: routes, validation, bounds, errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virt_launcher.errors import InvalidSpecError
from virt_launcher.runtime import httpd, protocol
from virt_launcher.runtime.api import CommandAPI
from virt_launcher.runtime.backend import FakeBackend
from virt_launcher.runtime.client import LauncherClient, LauncherClientError
from virt_launcher.runtime.controller import Controller, PreparedDomain
from virt_launcher.runtime.events import EventLog

VMI: dict[str, Any] = {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"domain": {"devices": {}}}}


def prepare(vmi: dict[str, Any]) -> PreparedDomain:
    if vmi["spec"].get("bad"):
        raise InvalidSpecError("not a good spec", field="spec.bad")
    return PreparedDomain(xml="<domain/>", name="ns_a", uuid="u", grace_seconds=0)


@pytest.fixture
def served(short_tmp: Path) -> Iterator[tuple[LauncherClient, Controller, Path]]:
    directory = short_tmp
    controller = Controller(FakeBackend(agent={"os": {"id": "tiny"}}), prepare, EventLog())
    (directory / "console.log").write_bytes(b"x" * 100 + b"last line\n")
    api = CommandAPI(
        controller, {"uri": "fake:///", "runtime": "fake", "domainType": "qemu"}, directory / "console.log"
    )
    server = httpd.UnixHTTPServer(directory / "launcher.sock", api.handler(), api.body_limit)
    server.start()
    yield LauncherClient(directory / "launcher.sock", timeout=5), controller, directory / "launcher.sock"
    server.stop()


def raw(path: Path, data: bytes, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_ping_names_protocol_and_runtime(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, _, _ = served
    assert client.ping() | {"pid": 0} == {
        "ok": True, "protocol": 1, "pid": 0, "uri": "fake:///", "runtime": "fake", "domainType": "qemu"
    }  # fmt: skip


def test_sync_then_lifecycle_commands_and_polled_events(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, _, _ = served
    assert client.domain()["phase"] == "WaitingForSpec"
    assert client.sync(VMI)["state"] == "Running"
    assert client.command("pause")["state"] == "Paused"
    assert client.command("unpause")["state"] == "Running"
    assert client.guest_info() == {"os": {"id": "tiny"}}
    assert client.stats()["cpu"]["timeNs"] == 1
    result = client.events(since=1)
    assert [e["type"] for e in result["events"]] == ["Defined", "Started", "Paused", "Resumed"]
    assert client.events(since=result["next"])["events"] == []
    assert client.command("kill")["outcome"] == "Failed"


def test_long_poll_returns_as_soon_as_an_event_arrives(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, controller, _ = served
    client.sync(VMI)
    next_seq = client.events()["next"]
    threading.Timer(0.2, controller.pause).start()
    started = time.monotonic()
    events = client.events(since=next_seq, wait=10)["events"]
    assert [e["type"] for e in events] == ["Paused"]
    assert time.monotonic() - started < 5


def test_spec_errors_carry_reason_and_field(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, _, _ = served
    with pytest.raises(LauncherClientError) as exc:
        client.sync({"spec": {"bad": True}})
    assert (exc.value.status, exc.value.reason, exc.value.field) == (422, "InvalidSpec", "spec.bad")


def test_capabilities_with_the_spec_are_checked_before_anything_happens(
    served: tuple[LauncherClient, Controller, Path],
) -> None:
    client, controller, _ = served
    vmi = {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"domain": {"devices": {}}}}
    for bad in ({"../../x.xml": "<a/>"}, ["<a/>"], {"f" * 64 + ".xml": 7}):
        with pytest.raises(LauncherClientError) as exc:
            client.request("POST", "/v1/sync", {"vmi": vmi, "qemuCapabilities": bad})
        assert (exc.value.status, exc.value.field) == (400, "qemuCapabilities")
    assert controller.info()["phase"] == "WaitingForSpec"


def test_shutdown_validates_its_grace_period(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, _, _ = served
    for bad in ({"gracePeriodSeconds": -1}, {"gracePeriodSeconds": "5"}, {"grace": 5}, [1]):
        with pytest.raises(LauncherClientError) as exc:
            client.request("POST", "/v1/shutdown", bad)
        assert exc.value.status == 400
    client.sync(VMI)
    assert client.shutdown(5)["outcome"] == "Succeeded"


def test_guest_agent_absence_is_503(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, controller, _ = served
    controller.backend.agent = None  # type: ignore[attr-defined]
    client.sync(VMI)
    with pytest.raises(LauncherClientError) as exc:
        client.guest_info()
    assert (exc.value.status, exc.value.reason) == (503, "AgentUnavailable")


def test_unknown_paths_methods_and_versions(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, _, _ = served
    for method, path, status in (("GET", "/v2/ping", 404), ("POST", "/v1/ping", 405), ("GET", "/v1/sync", 405)):
        with pytest.raises(LauncherClientError) as exc:
            client.request(method, path)
        assert exc.value.status == status


def test_console_log_tail(served: tuple[LauncherClient, Controller, Path]) -> None:
    client, _, _ = served
    assert client.console_log(10) == "last line\n"


def test_oversized_malformed_and_chunked_requests_are_refused(served: tuple[LauncherClient, Controller, Path]) -> None:
    _, _, path = served
    big = json.dumps({"gracePeriodSeconds": 1, "pad": "x" * 5000}).encode()
    status, body = raw(path, b"POST /v1/shutdown HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
    assert status == 400 and "exceeds" in body["error"]["message"]
    assert raw(path, b"POST /v1/kill HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}")[0] == 400
    assert raw(path, b"POST /v1/kill HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0] == 400
    assert raw(path, b"GARBAGE\r\n\r\n")[0] == 400
    assert raw(path, b"GET /v1/ping HTTP/1.1\r\nX: " + b"y" * (protocol.MAX_HEADER_BYTES + 10) + b"\r\n\r\n")[0] == 400


def test_a_client_that_stalls_is_cut_off(
    served: tuple[LauncherClient, Controller, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, path = served
    monkeypatch.setattr(httpd, "REQUEST_TIMEOUT", 0.3)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"POST /v1/kill HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408")


def test_socket_is_private_to_the_launcher_user_and_group(served: tuple[LauncherClient, Controller, Path]) -> None:
    _, _, path = served
    assert path.stat().st_mode & 0o777 == 0o660
