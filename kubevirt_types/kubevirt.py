"""KubeVirt: the install resource that the operator turns into a running podvirt."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KubeModel
from .core import NodePlacement
from .enums import EvictionStrategy, KubeVirtConditionType, KubeVirtPhase, PullPolicy, UninstallStrategy
from .meta import ConditionBase, ObjectMeta
from .vmi import API_VERSION


class LogVerbosity(KubeModel):
    """Log verbosity of each component (0-9)."""

    virt_api: int | None = Field(default=None, alias="virtAPI", ge=0, le=9)
    """virt-api."""
    virt_controller: int | None = Field(default=None, ge=0, le=9)
    """virt-controller."""
    virt_handler: int | None = Field(default=None, ge=0, le=9)
    """virt-handler."""
    virt_launcher: int | None = Field(default=None, ge=0, le=9)
    """virt-launcher."""
    virt_operator: int | None = Field(default=None, ge=0, le=9)
    """virt-operator."""


class DeveloperConfiguration(KubeModel):
    """Settings for development and feature previews."""

    use_emulation: bool | None = None
    """Run guests with QEMU software emulation (TCG) when /dev/kvm is unusable."""
    feature_gates: list[str] | None = None
    """Feature gates to enable."""
    log_verbosity: LogVerbosity | None = None
    """Log verbosity per component."""
    node_selectors: dict[str, str] | None = None
    """Extra node labels every VMI pod requires."""


class KubeVirtConfiguration(KubeModel):
    """Cluster-wide settings of virtual machines."""

    developer_configuration: DeveloperConfiguration | None = None
    """Emulation, feature gates, verbosity."""
    eviction_strategy: EvictionStrategy | None = None
    """Default eviction strategy of VMIs that set none."""


class ComponentConfig(KubeModel):
    """Placement of a group of podvirt components."""

    node_placement: NodePlacement | None = None
    """Where the components' pods run."""
    replicas: int | None = Field(default=None, ge=0)
    """Replicas of the control-plane deployments."""


class KubeVirtSpec(KubeModel):
    """How podvirt is installed and configured."""

    configuration: KubeVirtConfiguration | None = None
    """Cluster-wide VM settings."""
    image_tag: str | None = None
    """Image tag of the components."""
    image_registry: str | None = None
    """Registry of the component images."""
    image_pull_policy: PullPolicy | None = None
    """Pull policy of the component images."""
    uninstall_strategy: UninstallStrategy | None = None
    """Whether deleting this resource removes running VMs or is refused while any exist."""
    infra: ComponentConfig | None = None
    """Placement of the control plane (virt-api, virt-controller)."""
    workloads: ComponentConfig | None = None
    """Placement of the node agents (virt-handler) and thus of the VMs."""


class KubeVirtCondition(ConditionBase):
    """An observation about the installation."""

    type: KubeVirtConditionType
    """What is observed."""


class KubeVirtStatus(KubeModel):
    """State of the installation, written by the operator."""

    phase: KubeVirtPhase | None = None
    """Deploying, Deployed, Deleting or Deleted."""
    conditions: list[KubeVirtCondition] | None = None
    """Available, Progressing, Degraded."""
    observed_kube_virt_version: str | None = None
    """Version now installed."""
    observed_kube_virt_registry: str | None = None
    """Registry of the installed images."""
    target_kube_virt_version: str | None = None
    """Version being installed."""
    target_kube_virt_registry: str | None = None
    """Registry of the images being installed."""
    operator_version: str | None = None
    """Version of the operator."""
    observed_generation: int | None = None
    """Generation of the spec last acted upon."""
    outdated_virtual_machine_instance_workloads: int | None = None
    """VMIs still running an older launcher."""


class KubeVirt(KubeModel):
    """The podvirt installation (kubectl short name kv)."""

    api_version: Literal["kubevirt.io/v1"] = API_VERSION
    """kubevirt.io/v1."""
    kind: Literal["KubeVirt"] = "KubeVirt"
    """KubeVirt."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: KubeVirtSpec = Field(default_factory=KubeVirtSpec)
    """How to install."""
    status: KubeVirtStatus | None = None
    """State of the installation."""
