"""The portforward subresource of VMIs and VMs: authorised like the console, proxied to the VMI node's handler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_fakes import AsIfProxied, EchoStream, FakeApiServer, FakeHandlers, services, vm, vmi
from starlette.testclient import TestClient, WebSocketDenialResponse

from virt_api.app import create_app
from virt_api.subresources.handler import Endpoint, HandlerTLS, TLSHandlerClient, handler_error, parse_endpoint

pytestmark = pytest.mark.unit

ALICE = {"X-Remote-User": "alice", "X-Remote-Group": "system:authenticated"}
NS = "/apis/subresources.kubevirt.io/v1/namespaces/ns"


class RecordingHandlers(FakeHandlers):
    """Echoing handlers that remember which stream of which VMI on which node was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[tuple[str, str, str, str]] = []

    @contextlib.asynccontextmanager
    async def stream(self, endpoint: Endpoint, namespace: str, name: str, kind: str) -> AsyncIterator[Any]:
        self.streams.append((endpoint.node, namespace, name, kind))
        yield EchoStream()


def client(api: FakeApiServer, handlers: FakeHandlers) -> TestClient:
    app = create_app(services(api, handlers))
    return TestClient(AsIfProxied(app), base_url="https://testserver", raise_server_exceptions=False)


def refused(c: TestClient, path: str, headers: dict[str, str] = ALICE) -> tuple[int, dict[str, Any]]:
    with pytest.raises(WebSocketDenialResponse) as caught, c.websocket_connect(path, headers=headers):
        pass
    return caught.value.status_code, caught.value.json()


def subresource_reviews(api: FakeApiServer) -> list[tuple[str, str, str, str]]:
    return [
        (a["verb"], a["resource"], a["subresource"], a["name"])
        for a in (r["spec"]["resourceAttributes"] for r in api.reviews)
    ]


@pytest.mark.parametrize("suffix", ["portforward/8080/tcp", "portforward/8080"])
def test_a_vmi_port_forward_carries_bytes_to_the_handler_of_its_node(suffix: str) -> None:
    api, handlers = FakeApiServer(), RecordingHandlers()
    api.put("virtualmachineinstances", vmi(name="web", node="node-2"))
    path = f"{NS}/virtualmachineinstances/web/{suffix}"
    with client(api, handlers).websocket_connect(path, headers=ALICE, subprotocols=["plain.kubevirt.io"]) as ws:
        assert ws.accepted_subprotocol == "plain.kubevirt.io"
        ws.send_bytes(b"get / http/1.0\r\n\r\n")
        assert ws.receive_bytes() == b"GET / HTTP/1.0\r\n\r\n"
    assert handlers.streams == [("node-2", "ns", "web", "portforward/8080/tcp")]
    assert subresource_reviews(api) == [("get", "virtualmachineinstances", "portforward", "web")]


def test_several_forwards_to_one_vmi_are_open_at_once() -> None:
    api, handlers = FakeApiServer(), RecordingHandlers()
    api.put("virtualmachineinstances", vmi(name="web"))
    c = client(api, handlers)
    with (
        c.websocket_connect(f"{NS}/virtualmachineinstances/web/portforward/22", headers=ALICE) as first,
        c.websocket_connect(f"{NS}/virtualmachineinstances/web/portforward/80", headers=ALICE) as second,
    ):
        second.send_bytes(b"two")
        first.send_bytes(b"one")
        assert (first.receive_bytes(), second.receive_bytes()) == (b"ONE", b"TWO")
    assert [s[3] for s in handlers.streams] == ["portforward/22/tcp", "portforward/80/tcp"]


def test_a_vm_port_forward_goes_to_its_vmi_and_is_authorised_on_the_vm() -> None:
    api, handlers = FakeApiServer(), RecordingHandlers()
    api.put("virtualmachines", vm(name="db"))
    api.put("virtualmachineinstances", vmi(name="db", node="node-3"))
    with client(api, handlers).websocket_connect(f"{NS}/virtualmachines/db/portforward/5432/tcp", headers=ALICE) as ws:
        ws.send_bytes(b"ping")
        assert ws.receive_bytes() == b"PING"
    assert handlers.streams == [("node-3", "ns", "db", "portforward/5432/tcp")]
    assert subresource_reviews(api) == [("get", "virtualmachines", "portforward", "db")]


def test_a_vm_without_a_running_vmi_or_no_vm_at_all_is_refused_before_upgrading() -> None:
    api, handlers = FakeApiServer(), RecordingHandlers()
    api.put("virtualmachines", vm(name="halted"))
    c = client(api, handlers)
    code, status = refused(c, f"{NS}/virtualmachines/halted/portforward/22")
    assert (code, status["reason"]) == (409, "Conflict")
    assert "VM is not running" in status["message"]
    code, status = refused(c, f"{NS}/virtualmachines/ghost/portforward/22")
    assert (code, status["message"]) == (404, 'virtualmachines.kubevirt.io "ghost" not found')
    api.put("virtualmachineinstances", vmi(name="stopped", phase="Succeeded"))
    assert refused(c, f"{NS}/virtualmachineinstances/stopped/portforward/22")[0] == 409
    assert handlers.streams == []


@pytest.mark.parametrize(
    ("suffix", "words"),
    [
        ("portforward/53/udp", "port-forward over udp is not supported by podvirt"),
        ("portforward/22/sctp", "unknown protocol 'sctp'"),
        ("portforward/0/tcp", "port '0' is not a number in 1-65535"),
        ("portforward/65536", "port '65536' is not a number in 1-65535"),
        ("portforward/ssh/tcp", "port 'ssh' is not a number in 1-65535"),
    ],
)
def test_what_podvirt_cannot_forward_is_a_400(suffix: str, words: str) -> None:
    api, handlers = FakeApiServer(), RecordingHandlers()
    api.put("virtualmachineinstances", vmi(name="web"))
    code, status = refused(client(api, handlers), f"{NS}/virtualmachineinstances/web/{suffix}")
    assert (code, status["kind"], status["reason"]) == (400, "Status", "BadRequest")
    assert words in status["message"]
    assert handlers.streams == []


def test_a_user_without_rbac_on_portforward_is_refused() -> None:
    api, handlers = FakeApiServer(), RecordingHandlers()
    api.denied_users.add("mallory")
    api.put("virtualmachineinstances", vmi(name="web"))
    code, status = refused(
        client(api, handlers), f"{NS}/virtualmachineinstances/web/portforward/22", {"X-Remote-User": "mallory"}
    )
    assert code == 403
    assert 'cannot get resource "virtualmachineinstances/portforward"' in status["message"]
    assert handlers.streams == []


def test_discovery_lists_portforward_for_vms_and_vmis() -> None:
    c = client(FakeApiServer(), FakeHandlers())
    for version in ("v1", "v1alpha3"):
        resources = c.get(f"/apis/subresources.kubevirt.io/{version}", headers=ALICE).json()["resources"]
        verbs = {r["name"]: r["verbs"] for r in resources}
        assert verbs["virtualmachineinstances/portforward"] == ["get"]
        assert verbs["virtualmachines/portforward"] == ["get"]


def test_a_handlers_400_reaches_the_user_as_a_400() -> None:
    error = handler_error(400, b'{"message": "port-forward over \'udp\' is not supported by podvirt"}', "node-1")
    assert (error.code, error.reason) == (400, "BadRequest")
    assert "not supported by podvirt" in error.message


def test_a_node_named_by_handler_endpoint_is_reached_there_without_looking_for_a_pod() -> None:
    listed: list[str] = []

    async def list_pods(namespace: str, labels: str, fields: str) -> list[dict[str, Any]]:
        listed.append(fields)
        return [{"status": {"phase": "Running", "podIP": "10.1.2.3"}}]

    tls = HandlerTLS(*(["/nonexistent"] * 3))  # type: ignore[arg-type]
    handlers = TLSHandlerClient(tls, list_pods, "kubevirt", fixed={"node-a": parse_endpoint("node-a=127.0.0.1:4100")})
    assert asyncio.run(handlers.locate("node-a")) == Endpoint("node-a", "127.0.0.1", 4100)
    assert listed == []
    assert asyncio.run(handlers.locate("node-b")) == Endpoint("node-b", "10.1.2.3", 8186)
    assert listed == ["spec.nodeName=node-b"]
    assert parse_endpoint("n=[::1]:8186") == Endpoint("n", "::1", 8186)
    for bad in ("node-a", "node-a=127.0.0.1", "=127.0.0.1:1", "n=h:0", "n=h:port"):
        with pytest.raises(ValueError, match="NODE=HOST:PORT"):
            parse_endpoint(bad)
