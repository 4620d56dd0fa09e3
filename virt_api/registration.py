"""The objects that route the apiserver to virt-api, applied by virt-api itself with its current caBundle.

- ``MutatingWebhookConfiguration virt-api-mutator`` and ``ValidatingWebhookConfiguration
  virt-api-validator``: one webhook per kind, ``failurePolicy: Fail``, a short timeout, and a match
  condition that skips updates leaving the spec alone. That condition is what keeps VMs deletable while
  virt-api is down: deletions are never sent to virt-api, and neither are the metadata-only updates
  that remove finalizers; only spec changes wait for it (and are refused without it, as they must be).
- ``APIService v1.subresources.kubevirt.io`` and ``v1alpha3.subresources.kubevirt.io``, pointing at the
  Service ``--service-name`` in virt-api's namespace.

The webhooks call virt-api through that Service too, or, on a development cluster without Service
routing, at ``--webhook-url`` (e.g. ``https://127.0.0.1:8443``). Applying is server-side apply with
field manager ``virt-api``, so re-applying the same objects is a no-op.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from virt_api.apiserver import API_SERVICES, MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS, ApiServer
from virt_api.subresources.discovery import GROUP, VERSIONS

MUTATOR = "virt-api-mutator"
VALIDATOR = "virt-api-validator"
LABELS = {"app.kubernetes.io/part-of": "podvirt", "app.kubernetes.io/component": "virt-api"}

#: resource -> (singular used in webhook names, operations validated, operations mutated)
_KINDS: dict[str, tuple[str, list[str], list[str]]] = {
    "virtualmachines": ("virtualmachine", ["CREATE", "UPDATE"], ["CREATE", "UPDATE"]),
    "virtualmachineinstances": ("virtualmachineinstance", ["CREATE", "UPDATE"], ["CREATE"]),
    "virtualmachineinstancereplicasets": (
        "virtualmachineinstancereplicaset",
        ["CREATE", "UPDATE"],
        ["CREATE", "UPDATE"],
    ),
    "virtualmachineinstancemigrations": ("virtualmachineinstancemigration", ["CREATE", "UPDATE"], ["CREATE"]),
    "kubevirts": ("kubevirt", ["CREATE", "UPDATE"], []),
}

#: Updates that keep the spec (finalizer removal, labels, annotations) never need virt-api.
SPEC_CHANGED = {
    "name": "create-or-spec-changed",
    "expression": (
        "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec"
    ),
}


@dataclass(frozen=True)
class RegistrationSettings:
    namespace: str
    service_name: str = "virt-api"
    service_port: int = 443
    #: Base URL for the webhooks instead of the Service, e.g. ``https://127.0.0.1:8443`` (devcluster).
    webhook_url: str | None = None
    timeout_seconds: int = 5


def _client_config(settings: RegistrationSettings, path: str, ca_bundle: bytes) -> dict[str, Any]:
    bundle = base64.b64encode(ca_bundle).decode()
    if settings.webhook_url:
        return {"url": settings.webhook_url.rstrip("/") + path, "caBundle": bundle}
    service = {
        "namespace": settings.namespace,
        "name": settings.service_name,
        "port": settings.service_port,
        "path": path,
    }
    return {"service": service, "caBundle": bundle}


def _webhook(
    settings: RegistrationSettings, name: str, resource: str, operations: list[str], path: str, ca_bundle: bytes
) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": settings.timeout_seconds,
        "rules": [
            {
                "apiGroups": ["kubevirt.io"],
                "apiVersions": ["v1"],
                "resources": [resource],
                "operations": operations,
                "scope": "*",
            }
        ],
        "matchConditions": [SPEC_CHANGED],
        "clientConfig": _client_config(settings, path, ca_bundle),
    }


def mutating_configuration(settings: RegistrationSettings, ca_bundle: bytes) -> dict[str, Any]:
    webhooks = [
        {
            **_webhook(
                settings, f"{singular}-mutator.kubevirt.io", resource, ops, f"/admission/mutate/{resource}", ca_bundle
            ),
            "reinvocationPolicy": "Never",
        }
        for resource, (singular, _, ops) in _KINDS.items()
        if ops
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATOR, "labels": LABELS},
        "webhooks": webhooks,
    }


def validating_configuration(settings: RegistrationSettings, ca_bundle: bytes) -> dict[str, Any]:
    webhooks = [
        _webhook(
            settings, f"{singular}-validator.kubevirt.io", resource, ops, f"/admission/validate/{resource}", ca_bundle
        )
        for resource, (singular, ops, _) in _KINDS.items()
    ]
    # Refusing to uninstall while VMIs run is a courtesy: it must never make the KubeVirt resource undeletable.
    uninstall = _webhook(
        settings,
        "kubevirt-uninstall-validator.kubevirt.io",
        "kubevirts",
        ["DELETE"],
        "/admission/validate/kubevirts",
        ca_bundle,
    )
    uninstall["failurePolicy"] = "Ignore"
    del uninstall["matchConditions"]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATOR, "labels": LABELS},
        "webhooks": [*webhooks, uninstall],
    }


def api_services(settings: RegistrationSettings, ca_bundle: bytes) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.{GROUP}", "labels": LABELS},
            "spec": {
                "group": GROUP,
                "version": version,
                "groupPriorityMinimum": 1000,
                "versionPriority": 15 if version == "v1" else 10,
                "service": {
                    "namespace": settings.namespace,
                    "name": settings.service_name,
                    "port": settings.service_port,
                },
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
        }
        for version in VERSIONS
    ]


async def register(apiserver: ApiServer, settings: RegistrationSettings, ca_bundle: bytes) -> None:
    """Apply the webhook configurations and APIServices with ``ca_bundle`` (idempotent)."""
    await apiserver.apply(MUTATING_WEBHOOKS, mutating_configuration(settings, ca_bundle))
    await apiserver.apply(VALIDATING_WEBHOOKS, validating_configuration(settings, ca_bundle))
    for service in api_services(settings, ca_bundle):
        await apiserver.apply(API_SERVICES, service)
