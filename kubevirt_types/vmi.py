"""VirtualMachineInstance: a running virtual machine (spec), what it is doing (status), and its template."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from ._base import LIST_MAP_BY_NAME, UNIQUE_NAMES, KubeModel, OneOf
from .core import (
    Affinity,
    ExecAction,
    HTTPGetAction,
    PodDNSConfig,
    TCPSocketAction,
    Toleration,
    TopologySpreadConstraint,
)
from .domain import DomainSpec
from .enums import (
    DNSPolicy,
    EvictionStrategy,
    StartStrategy,
    VirtualMachineInstanceConditionType,
    VirtualMachineInstancePhase,
)
from .meta import ConditionBase, LabelMap, ObjectMeta, TemplateMeta, Timestamp
from .quantity import Quantity
from .volumes import MAX_NETWORKS, MAX_VOLUMES, Network, Volume

API_VERSION: Final = "kubevirt.io/v1"


class GuestAgentPing(KubeModel):
    """Succeeds when the QEMU guest agent answers."""


class Probe(KubeModel):
    """A periodic health check of the guest."""

    rules = (OneOf(("exec_", "http_get", "tcp_socket", "guest_agent_ping"), required=True),)

    exec_: ExecAction | None = Field(default=None, alias="exec")
    """Run a command in the guest through the guest agent."""
    http_get: HTTPGetAction | None = None
    """HTTP GET against the guest."""
    tcp_socket: TCPSocketAction | None = None
    """TCP connection to the guest."""
    guest_agent_ping: GuestAgentPing | None = None
    """Ping the guest agent."""
    initial_delay_seconds: int | None = Field(default=None, ge=0)
    """Seconds after start before the first check."""
    timeout_seconds: int | None = Field(default=None, ge=1)
    """Seconds after which a check fails (default 1)."""
    period_seconds: int | None = Field(default=None, ge=1)
    """Seconds between checks (default 10)."""
    success_threshold: int | None = Field(default=None, ge=1)
    """Consecutive successes to pass after a failure (default 1)."""
    failure_threshold: int | None = Field(default=None, ge=1)
    """Consecutive failures to fail (default 3)."""


class VirtualMachineInstanceSpec(KubeModel):
    """The virtual machine to run: hardware, volumes, networks and scheduling."""

    domain: DomainSpec
    """The virtual hardware."""
    volumes: Annotated[list[Volume], UNIQUE_NAMES] | None = Field(
        default=None, max_length=MAX_VOLUMES, json_schema_extra=LIST_MAP_BY_NAME
    )
    """Data sources for the disks."""
    networks: Annotated[list[Network], UNIQUE_NAMES] | None = Field(
        default=None, max_length=MAX_NETWORKS, json_schema_extra=LIST_MAP_BY_NAME
    )
    """Networks for the interfaces."""
    node_selector: LabelMap | None = None
    """Node labels the VMI's pod requires."""
    affinity: Affinity | None = None
    """Scheduling affinity of the VMI's pod."""
    tolerations: list[Toleration] | None = None
    """Taints the VMI's pod tolerates."""
    topology_spread_constraints: list[TopologySpreadConstraint] | None = None
    """How VMI pods spread over topology domains."""
    scheduler_name: str | None = None
    """Scheduler that places the VMI's pod."""
    priority_class_name: str | None = None
    """Priority class of the VMI's pod."""
    eviction_strategy: EvictionStrategy | None = None
    """What a node drain does to the VMI: None, LiveMigrate, LiveMigrateIfPossible or External."""
    start_strategy: StartStrategy | None = None
    """Paused starts the guest with its vCPUs stopped."""
    termination_grace_period_seconds: int | None = Field(default=None, ge=0)
    """Seconds the guest gets to shut down after an ACPI power-off before it is killed."""
    hostname: str | None = Field(default=None, max_length=63)
    """Guest hostname (default: the VMI's name)."""
    subdomain: str | None = Field(default=None, max_length=63)
    """With a headless Service of this name, the guest's FQDN becomes hostname.subdomain.namespace.svc."""
    dns_policy: DNSPolicy | None = None
    """DNS policy of the VMI's pod."""
    dns_config: PodDNSConfig | None = None
    """DNS settings of the VMI's pod."""
    liveness_probe: Probe | None = None
    """The VMI is restarted when this check fails."""
    readiness_probe: Probe | None = None
    """The VMI is Ready only while this check passes."""


class VirtualMachineInstanceCondition(ConditionBase):
    """An observation about the VMI."""

    type: VirtualMachineInstanceConditionType
    """What is observed."""


class PhaseTransitionTimestamp(KubeModel):
    """When the VMI entered a phase."""

    phase: VirtualMachineInstancePhase
    """The phase entered."""
    phase_transition_timestamp: Timestamp
    """When."""


class VirtualMachineInstanceNetworkInterface(KubeModel):
    """A guest network interface as reported by libvirt or the guest agent."""

    name: str | None = None
    """Name of the interface in the VMI spec."""
    interface_name: str | None = None
    """Name inside the guest, e.g. eth0."""
    ip_address: str | None = Field(default=None, alias="ipAddress")
    """Primary IP address."""
    ip_addresses: list[str] | None = Field(default=None, alias="ipAddresses")
    """All IP addresses."""
    mac: str | None = None
    """MAC address."""
    info_source: str | None = None
    """Where the information comes from: domain, guest-agent, multus-status (comma-separated)."""
    queue_count: int | None = None
    """Number of queues."""


class GuestOSInfo(KubeModel):
    """The guest operating system, as reported by the guest agent."""

    name: str | None = None
    """OS name."""
    id: str | None = None
    """OS id, e.g. fedora."""
    kernel_release: str | None = None
    """Kernel release."""
    kernel_version: str | None = None
    """Kernel version."""
    machine: str | None = None
    """Machine hardware name, e.g. x86_64."""
    pretty_name: str | None = None
    """Human-readable OS name."""
    version: str | None = None
    """OS version."""
    version_id: str | None = None
    """OS version id."""


class MigrationState(KubeModel):
    """Progress of the VMI's most recent live migration."""

    migration_uid: str | None = None
    """UID of the VirtualMachineInstanceMigration."""
    source_node: str | None = None
    """Node migrated from."""
    source_pod: str | None = None
    """Launcher pod migrated from."""
    target_node: str | None = None
    """Node migrated to."""
    target_pod: str | None = None
    """Launcher pod migrated to."""
    target_node_address: str | None = None
    """Address of the target node's handler."""
    start_timestamp: Timestamp | None = None
    """When the migration started."""
    end_timestamp: Timestamp | None = None
    """When the migration ended."""
    completed: bool | None = None
    """The migration finished."""
    failed: bool | None = None
    """The migration failed."""
    abort_requested: bool | None = None
    """An abort was requested."""
    mode: str | None = None
    """PreCopy or PostCopy."""


class VolumeStatus(KubeModel):
    """State of one volume."""

    name: str
    """Volume name."""
    target: str | None = None
    """Device name in the guest, e.g. vda."""
    phase: str | None = None
    """Phase of a hot-plugged volume."""
    reason: str | None = None
    """Reason of the phase."""
    message: str | None = None
    """Details."""
    size: int | None = None
    """Size in bytes."""


class CPUTopology(KubeModel):
    """A CPU topology."""

    cores: int | None = None
    """Cores per socket."""
    sockets: int | None = None
    """Sockets."""
    threads: int | None = None
    """Threads per core."""


class MemoryStatus(KubeModel):
    """The guest's memory as booted and now."""

    guest_at_boot: Quantity | None = None
    """Guest memory at boot."""
    guest_current: Quantity | None = None
    """Guest memory now."""
    guest_requested: Quantity | None = None
    """Guest memory requested by the spec."""


class VirtualMachineInstanceStatus(KubeModel):
    """What the VMI is doing, written by podvirt."""

    phase: VirtualMachineInstancePhase | None = None
    """Pending, Scheduling, Scheduled, Running, Succeeded, Failed or Unknown."""
    phase_transition_timestamps: list[PhaseTransitionTimestamp] | None = None
    """When each phase was entered."""
    reason: str | None = None
    """Why the VMI is in this phase."""
    conditions: list[VirtualMachineInstanceCondition] | None = None
    """Current observations."""
    node_name: str | None = None
    """Node the VMI runs on."""
    interfaces: list[VirtualMachineInstanceNetworkInterface] | None = None
    """Guest network interfaces and their IPs."""
    guest_os_info: GuestOSInfo | None = Field(default=None, alias="guestOSInfo")
    """Guest operating system (needs the guest agent)."""
    migration_state: MigrationState | None = None
    """The latest live migration."""
    migration_method: str | None = None
    """BlockMigration or LiveMigration."""
    active_pods: dict[str, str] | None = None
    """Launcher pods of the VMI: pod UID to node name."""
    launcher_container_image_version: str | None = None
    """Image of the launcher running the VMI."""
    qos_class: str | None = None
    """QoS class of the launcher pod."""
    evacuation_node_name: str | None = None
    """Node the VMI must be moved off (set on drain)."""
    volume_status: list[VolumeStatus] | None = None
    """State of each volume."""
    current_cpu_topology: CPUTopology | None = Field(default=None, alias="currentCPUTopology")
    """CPU topology the guest runs with."""
    memory: MemoryStatus | None = None
    """Guest memory."""
    runtime_user: int | None = None
    """UID the guest runs as."""
    virtual_machine_revision_name: str | None = None
    """ControllerRevision of the owning VM this VMI was created from."""


class VirtualMachineInstance(KubeModel):
    """A running virtual machine (kubectl short name vmi)."""

    api_version: Literal["kubevirt.io/v1"] = API_VERSION
    """kubevirt.io/v1."""
    kind: Literal["VirtualMachineInstance"] = "VirtualMachineInstance"
    """VirtualMachineInstance."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: VirtualMachineInstanceSpec
    """The virtual machine to run."""
    status: VirtualMachineInstanceStatus | None = None
    """What the virtual machine is doing."""


class VirtualMachineInstanceTemplateSpec(KubeModel):
    """A template of VMIs, as used by VirtualMachine and VirtualMachineInstanceReplicaSet."""

    metadata: TemplateMeta | None = None
    """Labels and annotations of the created VMIs."""
    spec: VirtualMachineInstanceSpec | None = None
    """Spec of the created VMIs."""
