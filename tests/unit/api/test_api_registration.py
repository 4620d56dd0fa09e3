"""The webhook configurations and APIServices virt-api applies: fail closed, but never block deletion."""

from __future__ import annotations

import asyncio
import base64

import pytest
from api_fakes import FakeApiServer

from virt_api.registration import (
    RegistrationSettings,
    api_services,
    mutating_configuration,
    register,
    validating_configuration,
)

pytestmark = pytest.mark.unit

BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
VIA_SERVICE = RegistrationSettings(namespace="kubevirt")
VIA_URL = RegistrationSettings(namespace="kubevirt", service_port=18443, webhook_url="https://127.0.0.1:18443/")


def test_every_kind_is_validated_fail_closed_with_a_short_timeout() -> None:
    hooks = validating_configuration(VIA_SERVICE, BUNDLE)["webhooks"]
    guarded = {h["rules"][0]["resources"][0] for h in hooks if h["failurePolicy"] == "Fail"}
    assert guarded == {
        "virtualmachines",
        "virtualmachineinstances",
        "virtualmachineinstancereplicasets",
        "virtualmachineinstancemigrations",
        "kubevirts",
    }
    assert all(h["timeoutSeconds"] <= 10 for h in hooks)
    assert all(h["clientConfig"]["caBundle"] == base64.b64encode(BUNDLE).decode() for h in hooks)


def test_no_fail_closed_webhook_sees_a_delete_or_an_update_that_keeps_the_spec() -> None:
    for configuration in (mutating_configuration(VIA_SERVICE, BUNDLE), validating_configuration(VIA_SERVICE, BUNDLE)):
        for hook in configuration["webhooks"]:
            if hook["failurePolicy"] != "Fail":
                continue
            assert "DELETE" not in hook["rules"][0]["operations"]
            (condition,) = hook["matchConditions"]
            assert "object.spec != oldObject.spec" in condition["expression"]


def test_uninstall_protection_fails_open() -> None:
    (uninstall,) = [
        h for h in validating_configuration(VIA_SERVICE, BUNDLE)["webhooks"] if "DELETE" in h["rules"][0]["operations"]
    ]
    assert uninstall["failurePolicy"] == "Ignore"


def test_webhooks_call_the_service_or_a_url() -> None:
    hook = mutating_configuration(VIA_SERVICE, BUNDLE)["webhooks"][0]
    assert hook["clientConfig"]["service"] == {
        "namespace": "kubevirt",
        "name": "virt-api",
        "port": 443,
        "path": "/admission/mutate/virtualmachines",
    }
    by_url = mutating_configuration(VIA_URL, BUNDLE)["webhooks"][0]["clientConfig"]
    assert by_url["url"] == "https://127.0.0.1:18443/admission/mutate/virtualmachines"


def test_both_versions_of_the_subresource_api_point_at_the_service() -> None:
    services = api_services(VIA_URL, BUNDLE)
    assert [s["metadata"]["name"] for s in services] == [
        "v1.subresources.kubevirt.io",
        "v1alpha3.subresources.kubevirt.io",
    ]
    assert services[0]["spec"]["service"] == {"namespace": "kubevirt", "name": "virt-api", "port": 18443}
    assert services[0]["spec"]["versionPriority"] > services[1]["spec"]["versionPriority"]


def test_register_applies_all_four_objects() -> None:
    api = FakeApiServer()
    asyncio.run(register(api, VIA_SERVICE, BUNDLE))
    assert sorted(api.applied) == [
        "apiservices/v1.subresources.kubevirt.io",
        "apiservices/v1alpha3.subresources.kubevirt.io",
        "mutatingwebhookconfigurations/virt-api-mutator",
        "validatingwebhookconfigurations/virt-api-validator",
    ]
