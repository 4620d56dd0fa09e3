"""KubeVirt: the install resource that the operator turns into a running podvirt."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KubeModel
from .core import NodePlacement
from .enums import (
    EvictionStrategy,
    KubeVirtConditionType,
    KubeVirtPhase,
    PatchType,
    PullPolicy,
    UninstallStrategy,
    WorkloadUpdateMethod,
)
from .meta import ConditionBase, ObjectMeta
from .vmi import API_VERSION

# A Go time.Duration as metav1.Duration writes it, e.g. 1h30m0s or 500ms.
_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"


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
    cpu_allocation_ratio: int | None = Field(default=None, ge=1)
    """vCPUs per core for VMIs that request no CPU: each vCPU requests 1/ratio of a core (default 10)."""
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


class CertConfig(KubeModel):
    """Lifetime of a certificate."""

    duration: str | None = Field(default=None, pattern=_DURATION)
    """How long a certificate is valid, as a Go duration, e.g. 168h."""
    renew_before: str | None = Field(default=None, pattern=_DURATION)
    """How long before expiry it is renewed, e.g. 48h."""


class SelfSignedCertificates(KubeModel):
    """Certificates signed by podvirt's own CA."""

    ca: CertConfig | None = None
    """The CA certificate."""
    server: CertConfig | None = None
    """The serving certificates."""


class CertificateRotateStrategy(KubeModel):
    """How podvirt's internal certificates are issued and rotated."""

    self_signed: SelfSignedCertificates | None = None
    """Self-signed CA and certificates (the default)."""


class WorkloadUpdateStrategy(KubeModel):
    """What happens to running VMIs when podvirt is updated."""

    workload_update_methods: list[WorkloadUpdateMethod] | None = None
    """Ways to move VMIs onto the new launcher, in order of preference; none leaves them as they are."""
    batch_eviction_size: int | None = Field(default=None, ge=1)
    """VMIs evicted per batch."""
    batch_eviction_interval: str | None = Field(default=None, pattern=_DURATION)
    """Pause between batches, as a Go duration, e.g. 1m0s."""


class CustomizeComponentsPatch(KubeModel):
    """A patch applied to one installed resource."""

    resource_name: str = Field(min_length=1)
    """Name of the resource, e.g. virt-controller."""
    resource_type: str = Field(min_length=1)
    """Kind of the resource, e.g. Deployment."""
    patch: str
    """The patch document."""
    type: PatchType
    """json, merge or strategic."""


class CustomizeComponentsFlags(KubeModel):
    """Extra command-line flags of the components."""

    api: dict[str, str] | None = None
    """Flags of virt-api."""
    controller: dict[str, str] | None = None
    """Flags of virt-controller."""
    handler: dict[str, str] | None = None
    """Flags of virt-handler."""


class CustomizeComponents(KubeModel):
    """Changes to the installed resources beyond what the configuration offers."""

    patches: list[CustomizeComponentsPatch] | None = None
    """Patches to installed resources."""
    flags: CustomizeComponentsFlags | None = None
    """Extra flags of the components."""


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
    certificate_rotate_strategy: CertificateRotateStrategy | None = None
    """How internal certificates are rotated."""
    workload_update_strategy: WorkloadUpdateStrategy | None = None
    """What happens to running VMIs on update."""
    customize_components: CustomizeComponents | None = None
    """Patches and flags for the installed components."""
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
