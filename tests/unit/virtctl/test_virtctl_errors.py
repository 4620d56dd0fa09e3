"""API refusals become messages a person can act on, with exit codes scripts can rely on."""

from __future__ import annotations

import json

import pytest

from virtctl import subresources as sub
from virtctl.errors import ApiError, Request, Served, explain
from virtctl.exitcodes import ExitCode

pytestmark = pytest.mark.unit

START = sub.START.request("prod", "vm1")
SOFT_REBOOT = sub.SOFT_REBOOT.request("prod", "vmi1")


def status(code: int, reason: str, message: str, details: dict[str, object] | None = None) -> ApiError:
    body: dict[str, object] = {"kind": "Status", "apiVersion": "v1", "code": code, "reason": reason, "message": message}
    if details is not None:
        body["details"] = details
    return ApiError.from_response(code, json.dumps(body).encode())


def test_forbidden_names_the_missing_permission() -> None:
    err = status(403, "Forbidden", 'User "bob" cannot update resource "virtualmachines/start"')
    problem = explain(err, START)
    assert problem.exit_code == ExitCode.FORBIDDEN
    assert problem.message.startswith('cannot start VirtualMachine prod/vm1: User "bob"')
    assert "update virtualmachines/start in API group subresources.kubevirt.io in namespace prod" in problem.message
    assert 'resources: ["virtualmachines/start"], verbs: ["update"]' in problem.message


def test_console_is_a_get_in_rbac_terms() -> None:
    problem = explain(status(403, "Forbidden", "no"), sub.CONSOLE.request("ns", "v"))
    assert 'resources: ["virtualmachineinstances/console"], verbs: ["get"]' in problem.message


def test_unauthorized_points_at_the_credentials() -> None:
    problem = explain(status(401, "Unauthorized", "Unauthorized"), START)
    assert problem.exit_code == ExitCode.FORBIDDEN
    assert "credentials" in problem.message


def test_not_found_object() -> None:
    err = status(
        404, "NotFound", 'virtualmachines.kubevirt.io "vm1" not found', {"name": "vm1", "kind": "virtualmachines"}
    )
    problem = explain(err, START, Served(True, frozenset({"virtualmachines/start"})))
    assert problem.exit_code == ExitCode.NOT_FOUND
    assert problem.message == "VirtualMachine prod/vm1 not found"


def test_not_found_when_the_vmi_of_a_vm_is_missing() -> None:
    err = status(404, "NotFound", "x", {"name": "vm1", "kind": "virtualmachineinstances"})
    assert explain(err, sub.PAUSE.request("prod", "vm1")).message == "VirtualMachineInstance prod/vm1 not found"


def test_subresource_api_absent() -> None:
    err = status(404, "NotFound", "the server could not find the requested resource")
    problem = explain(err, START, Served(group_served=False))
    assert problem.exit_code == ExitCode.UNAVAILABLE
    assert "subresources.kubevirt.io/v1 is not served" in problem.message
    assert "kubectl get apiservice v1.subresources.kubevirt.io" in problem.message


def test_server_too_old_for_a_subresource() -> None:
    err = status(404, "NotFound", "the server could not find the requested resource")
    problem = explain(err, SOFT_REBOOT, Served(True, frozenset({"virtualmachineinstances/pause"})))
    assert problem.exit_code == ExitCode.UNAVAILABLE
    assert "does not offer virtualmachineinstances/softreboot" in problem.message


def test_a_bare_403_from_a_route_virt_api_lacks_is_not_blamed_on_rbac() -> None:
    forward = sub.port_forward(22).request("ns", "vmi1")
    problem = explain(
        ApiError.from_response(403, b""), forward, Served(True, frozenset({"virtualmachineinstances/console"}))
    )
    assert problem.exit_code == ExitCode.UNAVAILABLE
    assert "does not offer virtualmachineinstances/portforward" in problem.message


def test_hint_at_the_apiservice_only_when_the_apiserver_cannot_reach_virt_api() -> None:
    reached = explain(status(503, "ServiceUnavailable", "virt-api has no client certificate"), START)
    assert "kubectl get apiservice" not in reached.message
    unreached = explain(status(503, "ServiceUnavailable", "service unavailable"), START)
    assert "kubectl get apiservice v1.subresources.kubevirt.io" in unreached.message


def test_kubevirt_api_absent() -> None:
    request = Request("get", "kubevirt.io", "virtualmachines", "ns", "vm1", "read", "VirtualMachine")
    problem = explain(status(404, "NotFound", "the server could not find the requested resource"), request)
    assert problem.exit_code == ExitCode.UNAVAILABLE
    assert "CRDs" in problem.message


def test_conflict_is_a_state_problem_in_the_servers_words() -> None:
    err = status(
        409, "Conflict", 'Operation cannot be fulfilled on virtualmachines.kubevirt.io "vm1": VM is already running'
    )
    problem = explain(err, START)
    assert problem.exit_code == ExitCode.CONFLICT
    assert problem.message == "cannot start VirtualMachine prod/vm1: VM is already running"


def test_invalid_lists_the_causes() -> None:
    err = status(422, "Invalid", "bad", {"causes": [{"field": "spec.x", "message": "must be positive"}]})
    problem = explain(err, START)
    assert problem.exit_code == ExitCode.ERROR
    assert "- spec.x: must be positive" in problem.message


@pytest.mark.parametrize("code", [502, 503, 504])
def test_virt_api_unavailable(code: int) -> None:
    problem = explain(status(code, "ServiceUnavailable", "service unavailable"), START)
    assert problem.exit_code == ExitCode.UNAVAILABLE
    assert "virt-api" in problem.message


def test_a_body_that_is_not_a_status_is_still_shown() -> None:
    err = ApiError.from_response(500, b"<html>proxy   error</html>")
    problem = explain(err, START)
    assert problem.exit_code == ExitCode.ERROR
    assert "<html>proxy error</html>" in problem.message and "HTTP 500" in problem.message
