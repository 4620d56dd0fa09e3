"""The OLM bundle (OpenShift, OperatorHub): a ClusterServiceVersion made from the same objects as the plain install.

The CSV's install strategy is the operator Deployment of :func:`operator_install` and its rules those of the
operator's ClusterRole (``clusterPermissions``) and Role (``permissions``); its owned CRDs, examples and
related images come from the same functions. Install mode: OwnNamespace only. The operator installs
podvirt into its own namespace (``kubevirt`` suggested) from the ``KubeVirt`` resource there, and its
namespaced rules should not be widened to every namespace, which OLM would do for AllNamespaces.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubevirt_types.crdgen import KINDS
from virt_operator.installconfig import OPERATOR, InstallConfig

from .components import components
from .meta import Obj
from .operator import kubevirt_cr, operator_install

PACKAGE = "podvirt"
CHANNEL = "alpha"
MIN_KUBE_VERSION = "1.30.0"  # webhook matchConditions (GA in 1.30), SelfSubjectReview (1.28)

DESCRIPTIONS = {
    "VirtualMachine": ("Virtual Machine", "A virtual machine and its run strategy; it owns its running instance."),
    "VirtualMachineInstance": ("Virtual Machine Instance", "A running virtual machine, one launcher pod."),
    "VirtualMachineInstanceReplicaSet": ("Virtual Machine Instance Replica Set", "A scalable set of identical VMIs."),
    "VirtualMachineInstanceMigration": (
        "Virtual Machine Instance Migration",
        "A request to move a VMI to another node.",
    ),
    "KubeVirt": ("KubeVirt", "The installation of podvirt: one per cluster, in the operator's namespace."),
}

ICON_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">
<rect x="4" y="10" width="56" height="38" rx="4" fill="#326ce5"/>
<rect x="10" y="16" width="44" height="26" rx="2" fill="#ffffff"/>
<path d="M16 24l6 5-6 5" stroke="#326ce5" stroke-width="3" fill="none"/>
<rect x="26" y="32" width="12" height="3" fill="#326ce5"/>
<rect x="24" y="50" width="16" height="4" fill="#326ce5"/>
</svg>
"""

EXAMPLE_VM: Obj = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachine",
    "metadata": {"name": "example"},
    "spec": {
        "runStrategy": "Halted",
        "template": {
            "spec": {
                "domain": {
                    "memory": {"guest": "128Mi"},
                    "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                },
                "volumes": [
                    {"name": "root", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}}
                ],
            }
        },
    },
}


def csv_name(config: InstallConfig) -> str:
    return f"{PACKAGE}-operator.v{bundle_version(config)}"


def bundle_version(config: InstallConfig) -> str:
    return config.tag.removeprefix("v")


def referenced_images(objects: list[Obj], registry: str) -> list[str]:
    """Every image reference under ``registry`` anywhere in ``objects`` (containers and flags alike)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            start = value.find(registry + "/")
            if start >= 0 and value[start:] not in found:
                found.append(value[start:])

    walk(objects)
    return found


def _one(objects: list[Obj], kind: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind)


def cluster_service_version(config: InstallConfig) -> Obj:
    install = operator_install(config)
    deployment = _one(install, "Deployment")
    cluster_role = _one(install, "ClusterRole")
    role = _one(install, "Role")
    images = referenced_images([*install, *components(config)], config.registry)
    owned = [
        {
            "name": kind.crd_name,
            "version": "v1",
            "kind": kind.kind,
            "displayName": DESCRIPTIONS[kind.kind][0],
            "description": DESCRIPTIONS[kind.kind][1],
        }
        for kind in KINDS
    ]
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": csv_name(config),
            "namespace": "placeholder",
            "annotations": {
                "alm-examples": json.dumps([kubevirt_cr(config), EXAMPLE_VM], indent=2),
                "capabilities": "Basic Install",
                "categories": "Virtualization",
                "containerImage": config.image(OPERATOR),
                "description": "Runs KubeVirt-style virtual machines in pods (kubevirt.io/v1).",
                "operatorframework.io/suggested-namespace": config.namespace,
                "repository": "https://github.com/podvirt/podvirt",
            },
            "labels": dict(deployment["metadata"]["labels"]),
        },
        "spec": {
            "displayName": "podvirt",
            "description": (
                "podvirt runs virtual machines inside pods and speaks KubeVirt's API, kubevirt.io/v1: "
                "VirtualMachine YAML written for KubeVirt works unchanged when it uses supported features. "
                "Create one KubeVirt resource named kubevirt in the operator's namespace to install it."
            ),
            "version": bundle_version(config),
            "maturity": CHANNEL,
            "minKubeVersion": MIN_KUBE_VERSION,
            "keywords": ["virtualization", "kubevirt", "vm"],
            "provider": {"name": "podvirt"},
            "maintainers": [{"name": "podvirt", "email": "podvirt@example.org"}],
            "links": [{"name": "Source", "url": "https://github.com/podvirt/podvirt"}],
            "icon": [{"base64data": base64.b64encode(ICON_SVG.encode()).decode(), "mediatype": "image/svg+xml"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": True},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": False},
            ],
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [
                        {
                            "name": deployment["metadata"]["name"],
                            "label": dict(deployment["metadata"]["labels"]),
                            "spec": deployment["spec"],
                        }
                    ],
                    "clusterPermissions": [{"serviceAccountName": OPERATOR, "rules": cluster_role["rules"]}],
                    "permissions": [{"serviceAccountName": OPERATOR, "rules": role["rules"]}],
                },
            },
            "customresourcedefinitions": {"owned": owned},
            "relatedImages": [{"name": image.rsplit("/", 1)[1].split(":")[0], "image": image} for image in images],
        },
    }


def bundle_annotations() -> dict[str, dict[str, str]]:
    return {"annotations": bundle_labels()}


def bundle_labels() -> dict[str, str]:
    prefix = "operators.operatorframework.io.bundle"
    return {
        f"{prefix}.mediatype.v1": "registry+v1",
        f"{prefix}.manifests.v1": "manifests/",
        f"{prefix}.metadata.v1": "metadata/",
        f"{prefix}.package.v1": PACKAGE,
        f"{prefix}.channels.v1": CHANNEL,
        f"{prefix}.channel.default.v1": CHANNEL,
    }


def bundle_dockerfile() -> str:
    lines = ["# Generated by `python -m virt_operator.manifests .`; do not edit.", "FROM scratch", ""]
    lines += [f"LABEL {key}={value}" for key, value in bundle_labels().items()]
    lines += ["", "COPY bundle/manifests /manifests/", "COPY bundle/metadata /metadata/", ""]
    return "\n".join(lines)


def bundle_manifests(config: InstallConfig) -> dict[str, Obj]:
    """File name under ``bundle/manifests/`` to object: the CSV, every CRD, the operator's PriorityClass."""
    install = operator_install(config)
    files = {f"{PACKAGE}.clusterserviceversion.yaml": cluster_service_version(config)}
    for o in install:
        if o["kind"] == "CustomResourceDefinition":
            files[f"{o['metadata']['name']}.yaml"] = o
        elif o["kind"] == "PriorityClass":
            files[f"{o['metadata']['name']}.priorityclass.yaml"] = o
    return files
