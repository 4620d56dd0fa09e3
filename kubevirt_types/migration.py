"""VirtualMachineInstanceMigration: a request to live-migrate one VMI to another node, and its progress."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic.config import JsonDict

from ._base import KubeModel
from .enums import MigrationConditionType, MigrationPhase
from .meta import ConditionBase, LabelMap, ObjectMeta, Timestamp
from .vmi import API_VERSION, MigrationState

_IMMUTABLE_VMI_NAME: JsonDict = {
    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.vmiName is immutable"}]
}


class VirtualMachineInstanceMigrationSpec(KubeModel):
    """Which VMI to migrate."""

    vmi_name: str = Field(alias="vmiName", min_length=1, json_schema_extra=_IMMUTABLE_VMI_NAME)
    """Name of the VMI to migrate, in the migration's namespace."""
    added_node_selector: LabelMap | None = None
    """Extra node labels the migration target must have."""


class VirtualMachineInstanceMigrationCondition(ConditionBase):
    """An observation about the migration."""

    type: MigrationConditionType
    """What is observed."""


class MigrationPhaseTransitionTimestamp(KubeModel):
    """When the migration entered a phase."""

    phase: MigrationPhase
    """The phase entered."""
    phase_transition_timestamp: Timestamp
    """When."""


class VirtualMachineInstanceMigrationStatus(KubeModel):
    """Progress of the migration."""

    phase: MigrationPhase | None = None
    """Pending, Scheduling, Scheduled, PreparingTarget, TargetReady, Running, Succeeded, Failed or Unknown."""
    phase_transition_timestamps: list[MigrationPhaseTransitionTimestamp] | None = None
    """When each phase was entered."""
    conditions: list[VirtualMachineInstanceMigrationCondition] | None = None
    """Current observations."""
    migration_state: MigrationState | None = None
    """Details of the migration, as also shown on the VMI."""


class VirtualMachineInstanceMigration(KubeModel):
    """A live migration of a VMI (kubectl short name vmim)."""

    api_version: Literal["kubevirt.io/v1"] = API_VERSION
    """kubevirt.io/v1."""
    kind: Literal["VirtualMachineInstanceMigration"] = "VirtualMachineInstanceMigration"
    """VirtualMachineInstanceMigration."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: VirtualMachineInstanceMigrationSpec
    """Which VMI to migrate."""
    status: VirtualMachineInstanceMigrationStatus | None = None
    """Progress of the migration."""
