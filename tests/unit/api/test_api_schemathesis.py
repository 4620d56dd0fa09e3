"""Schemathesis explores every route of the OpenAPI document: no input makes virt-api answer 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from api_fakes import AsIfProxied, FakeApiServer, services, vm, vmi
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from virt_api.app import create_app

pytestmark = pytest.mark.unit


def _app() -> AsIfProxied:
    api = FakeApiServer()
    # A few objects whose names the fuzzer may hit, so that more than the 404 paths run.
    for namespace in ("ns", "default"):
        api.put("virtualmachines", vm(namespace=namespace, runStrategy="Manual"))
        api.put("virtualmachineinstances", vmi(namespace=namespace, AgentConnected="True"))
    return AsIfProxied(create_app(services(api)))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_virt_api_fail(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"X-Remote-User": "fuzzer"}, checks=[not_a_server_error])
