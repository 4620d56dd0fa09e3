"""The enumerations of kubevirt.io/v1 (and the few core/v1 ones it embeds); values are the wire strings."""

from enum import StrEnum


class RunStrategy(StrEnum):
    """When a VirtualMachine's instance (VMI) should exist."""

    ALWAYS = "Always"
    RERUN_ON_FAILURE = "RerunOnFailure"
    MANUAL = "Manual"
    HALTED = "Halted"
    ONCE = "Once"


class VirtualMachineInstancePhase(StrEnum):
    """Where a VirtualMachineInstance is in its life."""

    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class VirtualMachinePrintableStatus(StrEnum):
    """The one-word state of a VirtualMachine shown by kubectl get vm."""

    STOPPED = "Stopped"
    PROVISIONING = "Provisioning"
    STARTING = "Starting"
    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPING = "Stopping"
    TERMINATING = "Terminating"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    MIGRATING = "Migrating"
    UNKNOWN = "Unknown"
    ERROR_UNSCHEDULABLE = "ErrorUnschedulable"
    ERR_IMAGE_PULL = "ErrImagePull"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    ERROR_PVC_NOT_FOUND = "ErrorPvcNotFound"
    WAITING_FOR_VOLUME_BINDING = "WaitingForVolumeBinding"


class ConditionStatus(StrEnum):
    """The status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class VirtualMachineInstanceConditionType(StrEnum):
    """Condition types of a VirtualMachineInstance."""

    READY = "Ready"
    PAUSED = "Paused"
    AGENT_CONNECTED = "AgentConnected"
    LIVE_MIGRATABLE = "LiveMigratable"
    PROVISIONING = "Provisioning"
    POD_SCHEDULED = "PodScheduled"
    SYNCHRONIZED = "Synchronized"
    DATA_VOLUMES_READY = "DataVolumesReady"


class VirtualMachineConditionType(StrEnum):
    """Condition types of a VirtualMachine; those of its VMI are mirrored onto it."""

    READY = "Ready"
    FAILURE = "Failure"
    PAUSED = "Paused"
    RESTART_REQUIRED = "RestartRequired"
    AGENT_CONNECTED = "AgentConnected"
    LIVE_MIGRATABLE = "LiveMigratable"
    PROVISIONING = "Provisioning"
    DATA_VOLUMES_READY = "DataVolumesReady"


class ReplicaSetConditionType(StrEnum):
    """Condition types of a VirtualMachineInstanceReplicaSet."""

    REPLICA_FAILURE = "ReplicaFailure"
    REPLICA_PAUSED = "ReplicaPaused"


class MigrationConditionType(StrEnum):
    """Condition types of a VirtualMachineInstanceMigration."""

    ABORT_REQUESTED = "migrationAbortRequested"
    REJECTED_BY_RESOURCE_QUOTA = "migrationRejectedByResourceQuota"


class KubeVirtConditionType(StrEnum):
    """Condition types of the KubeVirt install resource."""

    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    CREATED = "Created"


class StateChangeAction(StrEnum):
    """What a pending start/stop request of a VirtualMachine asks for."""

    START = "Start"
    STOP = "Stop"


class MigrationPhase(StrEnum):
    """Where a VirtualMachineInstanceMigration is in its life."""

    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    PREPARING_TARGET = "PreparingTarget"
    TARGET_READY = "TargetReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class KubeVirtPhase(StrEnum):
    """Where the installation described by a KubeVirt resource is."""

    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    DELETING = "Deleting"
    DELETED = "Deleted"


class EvictionStrategy(StrEnum):
    """What happens to a VMI when its node is drained."""

    NONE = "None"
    LIVE_MIGRATE = "LiveMigrate"
    LIVE_MIGRATE_IF_POSSIBLE = "LiveMigrateIfPossible"
    EXTERNAL = "External"


class StartStrategy(StrEnum):
    """How a VMI starts; Paused starts QEMU with the vCPUs stopped."""

    PAUSED = "Paused"


class DiskBus(StrEnum):
    """The bus a disk, CD-ROM or LUN is attached to."""

    VIRTIO = "virtio"
    SATA = "sata"
    SCSI = "scsi"


class DriverCache(StrEnum):
    """The host page-cache mode of a disk."""

    NONE = "none"
    WRITETHROUGH = "writethrough"
    WRITEBACK = "writeback"


class DriverIO(StrEnum):
    """The host I/O mode of a disk."""

    NATIVE = "native"
    THREADS = "threads"


class InterfaceModel(StrEnum):
    """The emulated network card."""

    VIRTIO = "virtio"
    E1000 = "e1000"
    E1000E = "e1000e"
    NE2K_PCI = "ne2k_pci"
    PCNET = "pcnet"
    RTL8139 = "rtl8139"


class PortProtocol(StrEnum):
    """The transport protocol of a forwarded port."""

    TCP = "TCP"
    UDP = "UDP"


class InputType(StrEnum):
    """The kind of input device."""

    TABLET = "tablet"


class InputBus(StrEnum):
    """The bus of an input device."""

    USB = "usb"
    VIRTIO = "virtio"


class WatchdogAction(StrEnum):
    """What the watchdog does when the guest stops petting it."""

    POWEROFF = "poweroff"
    RESET = "reset"
    SHUTDOWN = "shutdown"


class TimerTickPolicy(StrEnum):
    """What a timer does with ticks the guest missed."""

    DELAY = "delay"
    CATCHUP = "catchup"
    MERGE = "merge"
    DISCARD = "discard"


class RTCTrack(StrEnum):
    """What the real-time clock follows."""

    GUEST = "guest"
    WALL = "wall"


class HostDiskType(StrEnum):
    """Whether a host disk image must exist or is created."""

    DISK = "Disk"
    DISK_OR_CREATE = "DiskOrCreate"


class PullPolicy(StrEnum):
    """When a container image is pulled."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The effect of a taint."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class NodeSelectorOperator(StrEnum):
    """How a node selector requirement relates a node's label (or field) to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class LabelSelectorOperator(StrEnum):
    """How a label selector requirement relates a label to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class URIScheme(StrEnum):
    """The scheme of an HTTP probe."""

    HTTP = "HTTP"
    HTTPS = "HTTPS"


class DNSPolicy(StrEnum):
    """How the VMI's pod resolves names."""

    CLUSTER_FIRST_WITH_HOST_NET = "ClusterFirstWithHostNet"
    CLUSTER_FIRST = "ClusterFirst"
    DEFAULT = "Default"
    NONE = "None"


class UninstallStrategy(StrEnum):
    """What deleting the KubeVirt resource does while VMs still exist."""

    REMOVE_WORKLOADS = "RemoveWorkloads"
    BLOCK_UNINSTALL_IF_WORKLOADS_EXIST = "BlockUninstallIfWorkloadsExist"


class WorkloadUpdateMethod(StrEnum):
    """How a running VMI is moved onto an updated launcher."""

    LIVE_MIGRATE = "LiveMigrate"
    EVICT = "Evict"


class PatchType(StrEnum):
    """The format of a component patch."""

    JSON = "json"
    MERGE = "merge"
    STRATEGIC = "strategic"
