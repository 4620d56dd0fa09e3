"""VirtualMachineInstanceReplicaSet: keeps a number of identical VMIs running, scalable like a ReplicaSet."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KubeModel
from .enums import ReplicaSetConditionType
from .meta import ConditionBase, LabelSelector, ObjectMeta
from .vmi import API_VERSION, VirtualMachineInstanceTemplateSpec


class VirtualMachineInstanceReplicaSetSpec(KubeModel):
    """How many VMIs of which template."""

    replicas: int | None = Field(default=None, ge=0)
    """Number of VMIs wanted (default 1)."""
    selector: LabelSelector
    """Labels of the VMIs this replica set owns; must match the template's labels."""
    template: VirtualMachineInstanceTemplateSpec
    """The VMIs to create."""
    paused: bool | None = None
    """Stop creating and deleting VMIs."""


class VirtualMachineInstanceReplicaSetCondition(ConditionBase):
    """An observation about the replica set."""

    type: ReplicaSetConditionType
    """What is observed."""


class VirtualMachineInstanceReplicaSetStatus(KubeModel):
    """How many VMIs exist and are ready."""

    replicas: int | None = Field(default=None, ge=0)
    """VMIs owned that are neither final nor being deleted."""
    ready_replicas: int | None = Field(default=None, ge=0)
    """VMIs owned that are ready."""
    label_selector: str | None = None
    """The selector as a string, for the scale subresource (and HorizontalPodAutoscaler)."""
    conditions: list[VirtualMachineInstanceReplicaSetCondition] | None = None
    """Current observations."""


class VirtualMachineInstanceReplicaSet(KubeModel):
    """A set of identical VMIs (kubectl short name vmirs)."""

    api_version: Literal["kubevirt.io/v1"] = API_VERSION
    """kubevirt.io/v1."""
    kind: Literal["VirtualMachineInstanceReplicaSet"] = "VirtualMachineInstanceReplicaSet"
    """VirtualMachineInstanceReplicaSet."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: VirtualMachineInstanceReplicaSetSpec
    """The wanted VMIs."""
    status: VirtualMachineInstanceReplicaSetStatus | None = None
    """The VMIs that exist."""
