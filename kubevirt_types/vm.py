"""VirtualMachine: a virtual machine that outlives its runs; its runStrategy decides when a VMI exists."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Exclusive, KubeModel
from .datavolume import DataVolumeTemplateSpec
from .enums import RunStrategy, StateChangeAction, VirtualMachineConditionType, VirtualMachinePrintableStatus
from .meta import ConditionBase, ObjectMeta, Timestamp
from .vmi import API_VERSION, VirtualMachineInstanceTemplateSpec

RUNNING_AND_RUN_STRATEGY = (
    "spec.running and spec.runStrategy are mutually exclusive: "
    "remove spec.running and use spec.runStrategy (running: true is runStrategy: Always, false is Halted)"
)


class VirtualMachineSpec(KubeModel):
    """The desired virtual machine and when it should run."""

    rules = (Exclusive("running", "run_strategy", RUNNING_AND_RUN_STRATEGY),)

    running: bool | None = None
    """Deprecated: true is runStrategy Always, false is Halted. Mutually exclusive with runStrategy."""
    run_strategy: RunStrategy | None = None
    """When a VMI should exist: Always, RerunOnFailure, Manual, Halted or Once."""
    template: VirtualMachineInstanceTemplateSpec
    """The VMI to create when the VM runs."""
    data_volume_templates: list[DataVolumeTemplateSpec] | None = Field(default=None, max_length=256)
    """DataVolumes created with the VM and deleted with it."""


class VirtualMachineCondition(ConditionBase):
    """An observation about the VM."""

    type: VirtualMachineConditionType
    """What is observed."""


class VirtualMachineStateChangeRequest(KubeModel):
    """A pending start or stop request (Manual and RerunOnFailure strategies), consumed by the controller."""

    action: StateChangeAction
    """Start or Stop."""
    data: dict[str, str] | None = None
    """Details of the request, e.g. that the VM starts paused."""
    uid: str | None = None
    """For Stop: only stop the VMI with this UID."""


class VirtualMachineStartFailure(KubeModel):
    """Back-off state after VMIs of this VM failed to start."""

    consecutive_fail_count: int | None = Field(default=None, ge=0)
    """How many starts failed in a row."""
    last_failed_vmi_uid: str | None = Field(default=None, alias="lastFailedVMIUID")
    """UID of the VMI that failed last."""
    retry_after_timestamp: Timestamp | None = None
    """Earliest time of the next start attempt."""


class VirtualMachineStatus(KubeModel):
    """What the VM is doing, written by podvirt."""

    printable_status: VirtualMachinePrintableStatus | None = None
    """One-word state shown by kubectl get vm."""
    created: bool | None = None
    """A VMI of this VM exists."""
    ready: bool | None = None
    """The VMI of this VM is running and ready."""
    conditions: list[VirtualMachineCondition] | None = None
    """Current observations, including those of the VMI."""
    state_change_requests: list[VirtualMachineStateChangeRequest] | None = None
    """Pending start and stop requests."""
    start_failure: VirtualMachineStartFailure | None = None
    """Back-off after failed starts."""
    run_strategy: RunStrategy | None = None
    """The run strategy in effect."""
    observed_generation: int | None = None
    """Generation of the VM spec last acted upon."""
    desired_generation: int | None = None
    """Generation of the VM spec the VMI should have."""


class VirtualMachine(KubeModel):
    """A virtual machine (kubectl short name vm)."""

    api_version: Literal["kubevirt.io/v1"] = API_VERSION
    """kubevirt.io/v1."""
    kind: Literal["VirtualMachine"] = "VirtualMachine"
    """VirtualMachine."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: VirtualMachineSpec
    """The desired virtual machine."""
    status: VirtualMachineStatus | None = None
    """What the virtual machine is doing."""
