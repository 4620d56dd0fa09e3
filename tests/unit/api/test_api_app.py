"""The FastAPI app: admission endpoints, the aggregated API behind the front proxy, errors as Status objects."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from api_fakes import STRANGER, AsIfProxied, FakeApiServer, FakeHandlers, services, vm, vmi
from starlette.testclient import TestClient, WebSocketDenialResponse

from virt_api.admission.webhook import warm_up
from virt_api.app import create_app
from virt_api.status import StatusError

pytestmark = pytest.mark.unit

ALICE = {"X-Remote-User": "alice", "X-Remote-Group": "system:authenticated"}
API = "/apis/subresources.kubevirt.io/v1"


def client(api: FakeApiServer | None = None, handlers: FakeHandlers | None = None, **proxied: Any) -> TestClient:
    app = create_app(services(api, handlers))
    return TestClient(AsIfProxied(app, **proxied), base_url="https://testserver", raise_server_exceptions=False)


def review(obj: dict[str, Any], resource: str, operation: str = "CREATE", old: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "kubevirt.io", "version": "v1", "kind": obj["kind"]},
            "resource": {"group": "kubevirt.io", "version": "v1", "resource": resource},
            "name": obj["metadata"]["name"],
            "namespace": "ns",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": obj,
            "oldObject": old,
        },
    }


def test_the_mutating_webhook_answers_with_a_json_patch() -> None:
    obj = vm(runStrategy="Always")
    obj["spec"]["template"]["spec"]["domain"]["resources"] = {"requests": {"memory": "64Mi"}}
    answer = client().post("/admission/mutate/virtualmachines", json=review(obj, "virtualmachines")).json()
    response = answer["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    assert patched["spec"]["template"]["spec"]["domain"]["machine"] == {"type": "q35"}


def test_the_validating_webhook_refuses_with_field_causes_and_warns() -> None:
    obj = vm(running=True)
    obj["spec"]["template"]["spec"]["domain"]["devices"]["disks"] = [{"name": "gone", "disk": {}}]
    response = (
        client().post("/admission/validate/virtualmachines", json=review(obj, "virtualmachines")).json()["response"]
    )
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    fields = [c["field"] for c in response["status"]["details"]["causes"]]
    assert "spec.template.spec.domain.devices.disks[0].name" in fields
    assert "spec.running is deprecated" in response["warnings"][0]


def test_a_migration_is_judged_against_the_vmi_it_names() -> None:
    api = FakeApiServer()
    api.put("virtualmachineinstances", vmi(name="a", LiveMigratable="True"))
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m1", "namespace": "ns"},
        "spec": {"vmiName": "a"},
    }
    path = "/admission/validate/virtualmachineinstancemigrations"
    assert (
        client(api).post(path, json=review(migration, "virtualmachineinstancemigrations")).json()["response"]["allowed"]
    )
    api.put("virtualmachineinstancemigrations", {**migration, "metadata": {"name": "m0", "namespace": "ns"}})
    refused = client(api).post(path, json=review(migration, "virtualmachineinstancemigrations")).json()["response"]
    assert not refused["allowed"] and "already migrating (m0)" in refused["status"]["message"]


def test_virt_api_may_shorten_a_vmi_grace_period_but_nobody_else_may_change_its_spec() -> None:
    old = vmi()
    new = vmi()
    new["spec"]["terminationGracePeriodSeconds"] = 0
    body = review(new, "virtualmachineinstances", "UPDATE", old)
    assert not client().post("/admission/validate/virtualmachineinstances", json=body).json()["response"]["allowed"]
    body["request"]["userInfo"]["username"] = "system:serviceaccount:kubevirt:virt-api"
    assert client().post("/admission/validate/virtualmachineinstances", json=body).json()["response"]["allowed"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", 400),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', 400),
        (b"{" + b" " * (5 * 1024 * 1024) + b"}", 413),
    ],
)
def test_a_bad_or_huge_review_is_a_status_error(body: bytes, code: int) -> None:
    answer = client().post("/admission/validate/virtualmachines", content=body)
    assert answer.status_code == code
    assert answer.json()["kind"] == "Status" and answer.json()["code"] == code


def test_admission_is_tls_only() -> None:
    answer = client(scheme="http").post("/admission/mutate/virtualmachines", json=review(vm(), "virtualmachines"))
    assert answer.status_code == 403


def test_a_review_of_the_wrong_kind_is_refused_not_crashed() -> None:
    answer = client().post("/admission/validate/virtualmachines", json=review(vmi(), "virtualmachines")).json()
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["code"] == 400


@pytest.mark.parametrize("path", ["/apis", API, f"{API}/version", f"{API}/healthz", "/apis/subresources.kubevirt.io"])
def test_discovery_version_and_health_need_the_front_proxy(path: str) -> None:
    assert client().get(path, headers=ALICE).status_code == 200
    for other in (client(certificate=None), client(certificate=STRANGER)):
        answer = other.get(path, headers=ALICE)
        assert answer.status_code == 401
        assert answer.json()["reason"] == "Unauthorized"


def test_discovery_lists_every_subresource_in_both_versions() -> None:
    for version in ("v1", "v1alpha3"):
        names = {
            r["name"]
            for r in client().get(f"/apis/subresources.kubevirt.io/{version}", headers=ALICE).json()["resources"]
        }
        assert {"virtualmachines/start", "virtualmachineinstances/console", "virtualmachineinstances/vnc"} <= names
    assert client().get("/apis/subresources.kubevirt.io/v2", headers=ALICE).status_code == 404


def test_start_through_the_aggregated_api_rewrites_the_run_strategy() -> None:
    api = FakeApiServer()
    api.put("virtualmachines", vm(runStrategy="Halted"))
    answer = client(api).put(f"{API}/namespaces/ns/virtualmachines/vm/start", headers=ALICE)
    assert answer.status_code == 202
    assert api.obj("virtualmachines", "ns", "vm")["spec"]["runStrategy"] == "Always"
    assert api.reviews[-1]["spec"]["resourceAttributes"]["subresource"] == "start"
    again = client(api).put(f"{API}/namespaces/ns/virtualmachines/vm/start", headers=ALICE)
    assert again.status_code == 409 and again.json()["reason"] == "Conflict"


def test_dry_run_decides_but_does_not_write() -> None:
    api = FakeApiServer()
    api.put("virtualmachines", vm(runStrategy="Halted"))
    answer = client(api).put(
        f"{API}/namespaces/ns/virtualmachines/vm/start", headers=ALICE, json={"kind": "StartOptions", "dryRun": ["All"]}
    )
    assert answer.status_code == 202
    assert api.obj("virtualmachines", "ns", "vm")["spec"]["runStrategy"] == "Halted"


def test_stop_with_a_grace_period_and_restart_queue_their_writes() -> None:
    api = FakeApiServer()
    api.put("virtualmachines", vm(runStrategy="Manual"))
    api.put("virtualmachineinstances", vmi())
    c = client(api)
    assert (
        c.put(f"{API}/namespaces/ns/virtualmachines/vm/stop", headers=ALICE, json={"gracePeriod": 5}).status_code == 202
    )
    assert api.obj("virtualmachineinstances", "ns", "vm")["spec"]["terminationGracePeriodSeconds"] == 5
    assert api.obj("virtualmachines", "ns", "vm")["status"]["stateChangeRequests"][0]["action"] == "Stop"
    assert c.put(f"{API}/namespaces/ns/virtualmachines/vm/restart", headers=ALICE).status_code == 202
    actions = [r["action"] for r in api.obj("virtualmachines", "ns", "vm")["status"]["stateChangeRequests"]]
    assert actions == ["Stop", "Start"]


def test_migrate_creates_a_migration() -> None:
    api = FakeApiServer()
    api.put("virtualmachines", vm())
    api.put("virtualmachineinstances", vmi())
    assert client(api).put(f"{API}/namespaces/ns/virtualmachines/vm/migrate", headers=ALICE).status_code == 202
    assert any(plural == "virtualmachineinstancemigrations" for plural, _, _ in api.objects)


def test_an_unknown_vm_is_404_and_a_bad_body_400() -> None:
    answer = client().put(f"{API}/namespaces/ns/virtualmachines/nope/start", headers=ALICE)
    assert answer.status_code == 404
    assert answer.json()["message"] == 'virtualmachines.kubevirt.io "nope" not found'
    bad = client().put(f"{API}/namespaces/ns/virtualmachines/nope/stop", headers=ALICE, json={"gracePeriod": -1})
    assert bad.status_code == 400


def test_a_user_without_rbac_is_refused_by_virt_api_itself() -> None:
    api = FakeApiServer()
    api.denied_users.add("mallory")
    api.put("virtualmachines", vm(runStrategy="Halted"))
    answer = client(api).put(f"{API}/namespaces/ns/virtualmachines/vm/start", headers={"X-Remote-User": "mallory"})
    assert answer.status_code == 403 and answer.json()["reason"] == "Forbidden"
    assert api.obj("virtualmachines", "ns", "vm")["spec"]["runStrategy"] == "Halted"


def test_vmi_actions_go_to_the_handler_of_the_vmis_node() -> None:
    api, handlers = FakeApiServer(), FakeHandlers()
    api.put("virtualmachineinstances", vmi(node="node-2"))
    c = client(api, handlers)
    assert c.put(f"{API}/namespaces/ns/virtualmachineinstances/vm/pause", headers=ALICE).status_code == 202
    assert handlers.actions == [("node-2", "ns", "vm", "pause")]
    unpause = c.put(f"{API}/namespaces/ns/virtualmachineinstances/vm/unpause", headers=ALICE)
    assert unpause.status_code == 409 and "VMI is not paused" in unpause.json()["message"]
    info = c.get(f"{API}/namespaces/ns/virtualmachineinstances/vm/guestosinfo", headers=ALICE)
    assert info.status_code == 409, "no guest agent connected"
    handlers.refuse = StatusError(503, "ServiceUnavailable", "the launcher is unreachable")
    assert c.put(f"{API}/namespaces/ns/virtualmachineinstances/vm/reset", headers=ALICE).status_code == 503


def test_guest_os_info_is_passed_through() -> None:
    api = FakeApiServer()
    api.put("virtualmachineinstances", vmi(AgentConnected="True"))
    info = client(api).get(f"{API}/namespaces/ns/virtualmachineinstances/vm/guestosinfo", headers=ALICE)
    assert info.json() == {"guestAgentVersion": "9.9", "os": {"name": "busybox"}}


def test_the_console_proxies_bytes_both_ways() -> None:
    api = FakeApiServer()
    api.put("virtualmachineinstances", vmi())
    with client(api).websocket_connect(
        f"{API}/namespaces/ns/virtualmachineinstances/vm/console", headers=ALICE, subprotocols=["plain.kubevirt.io"]
    ) as ws:
        assert ws.accepted_subprotocol == "plain.kubevirt.io"
        ws.send_bytes(b"hello")
        assert ws.receive_bytes() == b"HELLO"


def test_a_console_to_a_stopped_vmi_or_without_the_proxy_is_refused_before_upgrading() -> None:
    api = FakeApiServer()
    api.put("virtualmachineinstances", vmi(phase="Succeeded"))
    path = f"{API}/namespaces/ns/virtualmachineinstances/vm/console"
    for c, code in ((client(api), 409), (client(api, certificate=None), 401)):
        with pytest.raises(WebSocketDenialResponse) as caught, c.websocket_connect(path, headers=ALICE):
            pass
        assert caught.value.status_code == code
        assert caught.value.json()["kind"] == "Status"
    denied = client(api).get(path, headers=ALICE)
    assert denied.status_code in (404, 405), "a plain GET of a websocket route is no subresource"


def test_unknown_paths_and_methods_are_status_objects() -> None:
    c = client()
    assert c.get("/nope").json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource (GET /nope)",
        "reason": "NotFound",
        "code": 404,
    }
    assert (
        c.delete(f"{API}/namespaces/ns/virtualmachines/vm/start", headers=ALICE).json()["reason"] == "MethodNotAllowed"
    )


def test_health_and_metrics_are_open() -> None:
    c = client(certificate=None)
    assert c.get("/healthz").text == "ok"
    c.post("/admission/mutate/virtualmachines", json=review(vm(), "virtualmachines"))
    assert 'virt_api_admission_seconds_count{resource="virtualmachines",webhook="mutate"} 1.0' in c.get("/metrics").text


def test_a_status_never_blocks_a_spec_update() -> None:
    obj = vm(runStrategy="Always")
    obj["spec"]["template"]["spec"]["domain"]["resources"] = {"requests": {"memory": "64Mi"}}
    obj["status"] = {"printableStatus": "SomethingNew", "conditions": [{"type": "Weird", "status": "Maybe"}]}
    body = review(obj, "virtualmachines", "UPDATE", obj)
    assert client().post("/admission/validate/virtualmachines", json=body).json()["response"]["allowed"]
    assert client().post("/admission/mutate/virtualmachines", json=body).json()["response"]["allowed"]


def test_warming_up_builds_every_kinds_validators_without_error() -> None:
    warm_up()
