"""Discovery documents of ``subresources.kubevirt.io``: what ``kubectl api-versions`` and virtctl see."""

from __future__ import annotations

from typing import Any

GROUP = "subresources.kubevirt.io"
#: KubeVirt serves both; v1 is preferred.
VERSIONS = ("v1", "v1alpha3")

VM_SUBRESOURCES = {
    "start": ["update"],
    "stop": ["update"],
    "restart": ["update"],
    "migrate": ["update"],
    "portforward": ["get"],
}
VMI_SUBRESOURCES = {
    "pause": ["update"],
    "unpause": ["update"],
    "softreboot": ["update"],
    "reset": ["update"],
    "guestosinfo": ["get"],
    "console": ["get"],
    "vnc": ["get"],
    "portforward": ["get"],
}


def _group_version(version: str) -> dict[str, str]:
    return {"groupVersion": f"{GROUP}/{version}", "version": version}


def api_group() -> dict[str, Any]:
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [_group_version(v) for v in VERSIONS],
        "preferredVersion": _group_version(VERSIONS[0]),
    }


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}


def api_resource_list(version: str) -> dict[str, Any]:
    resources = [
        {"name": f"{plural}/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs}
        for plural, kind, subs in (
            ("virtualmachines", "VirtualMachine", VM_SUBRESOURCES),
            ("virtualmachineinstances", "VirtualMachineInstance", VMI_SUBRESOURCES),
        )
        for sub, verbs in subs.items()
    ]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{version}", "resources": resources}
