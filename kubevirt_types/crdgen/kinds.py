"""The five kubevirt.io/v1 kinds as CustomResourceDefinitions: names, subresources, printer columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from kubevirt_types.kubevirt import KubeVirt
from kubevirt_types.migration import VirtualMachineInstanceMigration
from kubevirt_types.replicaset import VirtualMachineInstanceReplicaSet
from kubevirt_types.vm import VirtualMachine
from kubevirt_types.vmi import VirtualMachineInstance

from .schema import JsonSchema, structural_schema

GROUP = "kubevirt.io"
VERSION = "v1"

_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_PHASE = {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}


def _condition(name: str, condition: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "string", "jsonPath": f".status.conditions[?(@.type=='{condition}')].status", **extra}


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and how kubectl presents it."""

    model: type[BaseModel]
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[dict[str, Any], ...]
    scale: bool = False
    categories: tuple[str, ...] = ("all",)
    labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/part-of": "podvirt"})

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def crd(self) -> dict[str, Any]:
        """The CustomResourceDefinition object."""
        subresources: dict[str, Any] = {"status": {}}
        if self.scale:
            subresources["scale"] = {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.labelSelector",
            }
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.crd_name, "labels": dict(self.labels)},
            "spec": {
                "group": GROUP,
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                    "shortNames": list(self.short_names),
                    "categories": list(self.categories),
                },
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": VERSION,
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": self.schema()},
                        "subresources": subresources,
                        "additionalPrinterColumns": [dict(c) for c in self.columns],
                    }
                ],
            },
        }

    def schema(self) -> JsonSchema:
        """The root schema; the apiserver owns apiVersion, kind and metadata, so those stay plain."""
        schema = structural_schema(self.model)
        properties = schema["properties"]
        properties["apiVersion"] = {"description": "Versioned schema of this object: kubevirt.io/v1.", "type": "string"}
        properties["kind"] = {"description": f"Kind of this object: {self.kind}.", "type": "string"}
        properties["metadata"] = {"type": "object"}  # the apiserver allows nothing more here
        return schema


KINDS: tuple[Kind, ...] = (
    Kind(
        VirtualMachine,
        plural="virtualmachines",
        short_names=("vm", "vms"),
        columns=(
            _AGE,
            {
                "name": "Status",
                "type": "string",
                "jsonPath": ".status.printableStatus",
                "description": "Human-readable status",
            },
            _condition("Ready", "Ready"),
        ),
    ),
    Kind(
        VirtualMachineInstance,
        plural="virtualmachineinstances",
        short_names=("vmi", "vmis"),
        columns=(
            _AGE,
            _PHASE,
            {"name": "IP", "type": "string", "jsonPath": ".status.interfaces[0].ipAddress"},
            {"name": "NodeName", "type": "string", "jsonPath": ".status.nodeName"},
            _condition("Ready", "Ready"),
            _condition("Live-Migratable", "LiveMigratable", priority=1),
            _condition("Paused", "Paused", priority=1),
        ),
    ),
    Kind(
        VirtualMachineInstanceReplicaSet,
        plural="virtualmachineinstancereplicasets",
        short_names=("vmirs", "vmirss"),
        scale=True,
        columns=(
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas", "description": "VMIs wanted"},
            {"name": "Current", "type": "integer", "jsonPath": ".status.replicas", "description": "VMIs that exist"},
            {
                "name": "Ready",
                "type": "integer",
                "jsonPath": ".status.readyReplicas",
                "description": "VMIs that are ready",
            },
            _AGE,
        ),
    ),
    Kind(
        VirtualMachineInstanceMigration,
        plural="virtualmachineinstancemigrations",
        short_names=("vmim", "vmims"),
        columns=(
            {**_PHASE, "description": "Phase of the migration"},
            {"name": "VMI", "type": "string", "jsonPath": ".spec.vmiName", "description": "The VMI being migrated"},
        ),
    ),
    Kind(
        KubeVirt,
        plural="kubevirts",
        short_names=("kv", "kvs"),
        columns=(_AGE, _PHASE),
    ),
)
