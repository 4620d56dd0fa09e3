"""Where a VMI's disks come from (volumes) and what its interfaces connect to (networks)."""

from __future__ import annotations

from pydantic import Field

from ._base import KubeModel, OneOf
from .core import LocalObjectReference
from .enums import HostDiskType, PullPolicy
from .quantity import Quantity

MAX_VOLUMES = 256
MAX_NETWORKS = 64


class ContainerDiskSource(KubeModel):
    """A disk image shipped in a container image; changes are discarded when the VMI ends."""

    image: str
    """Container image holding the disk image."""
    image_pull_secret: str | None = None
    """Secret to pull the image with."""
    path: str | None = None
    """Path of the disk image inside the container image (default: the single file in /disk)."""
    image_pull_policy: PullPolicy | None = None
    """When to pull the image."""


class CloudInitSource(KubeModel):
    """cloud-init user data and network data, inline, base64-encoded or from a Secret."""

    rules = (
        OneOf(("user_data", "user_data_base64", "user_data_secret_ref")),
        OneOf(("network_data", "network_data_base64", "network_data_secret_ref")),
    )

    user_data: str | None = None
    """User data (e.g. a #cloud-config document)."""
    user_data_base64: str | None = None
    """User data, base64-encoded."""
    user_data_secret_ref: LocalObjectReference | None = None
    """Secret whose userdata (or userData) key holds the user data."""
    network_data: str | None = None
    """Network configuration."""
    network_data_base64: str | None = None
    """Network configuration, base64-encoded."""
    network_data_secret_ref: LocalObjectReference | None = None
    """Secret whose networkdata (or networkData) key holds the network configuration."""


class PersistentVolumeClaimSource(KubeModel):
    """A PersistentVolumeClaim in the VMI's namespace."""

    claim_name: str
    """Name of the claim."""
    read_only: bool | None = None
    """Mount the claim read-only."""
    hotpluggable: bool | None = None
    """The volume can be hot-plugged and unplugged."""


class DataVolumeSource(KubeModel):
    """A DataVolume (CDI) and the claim of the same name it populates."""

    name: str
    """Name of the DataVolume."""
    hotpluggable: bool | None = None
    """The volume can be hot-plugged and unplugged."""


class EmptyDiskSource(KubeModel):
    """A fresh sparse disk that lives as long as the VMI."""

    capacity: Quantity
    """Size of the disk."""


class EphemeralVolumeSource(KubeModel):
    """A PersistentVolumeClaim used as a read-only backing image with a copy-on-write overlay."""

    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    """The backing claim."""


class HostDiskSource(KubeModel):
    """A disk image file on the node."""

    path: str
    """Path of the image file on the node."""
    type: HostDiskType
    """Disk (must exist) or DiskOrCreate."""
    capacity: Quantity | None = None
    """Size of the image when it is created."""
    shared: bool | None = None
    """The image is on shared storage (allows live migration)."""


class ConfigMapSource(KubeModel):
    """A ConfigMap's keys as files on a small disk."""

    name: str
    """Name of the ConfigMap."""
    optional: bool | None = None
    """Start even if the ConfigMap does not exist."""
    volume_label: str | None = None
    """File-system label of the disk."""


class SecretSource(KubeModel):
    """A Secret's keys as files on a small disk."""

    secret_name: str
    """Name of the Secret."""
    optional: bool | None = None
    """Start even if the Secret does not exist."""
    volume_label: str | None = None
    """File-system label of the disk."""


class ServiceAccountSource(KubeModel):
    """A service account's token, CA and namespace as files on a small disk."""

    service_account_name: str
    """Name of the service account; also becomes the pod's service account."""


class Volume(KubeModel):
    """A named source of data for a disk; exactly one source is set."""

    rules = (
        OneOf(
            (
                "container_disk",
                "cloud_init_no_cloud",
                "cloud_init_config_drive",
                "persistent_volume_claim",
                "data_volume",
                "empty_disk",
                "ephemeral",
                "host_disk",
                "config_map",
                "secret",
                "service_account",
            ),
            required=True,
        ),
    )

    name: str = Field(max_length=63)
    """Name, referenced by a disk."""
    container_disk: ContainerDiskSource | None = None
    """A disk image from a container image."""
    cloud_init_no_cloud: CloudInitSource | None = None
    """cloud-init data on a NoCloud disk."""
    cloud_init_config_drive: CloudInitSource | None = None
    """cloud-init data on a ConfigDrive disk."""
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    """A PersistentVolumeClaim."""
    data_volume: DataVolumeSource | None = None
    """A DataVolume."""
    empty_disk: EmptyDiskSource | None = None
    """A fresh temporary disk."""
    ephemeral: EphemeralVolumeSource | None = None
    """A claim with a throw-away overlay."""
    host_disk: HostDiskSource | None = None
    """An image file on the node."""
    config_map: ConfigMapSource | None = None
    """A ConfigMap as a disk."""
    secret: SecretSource | None = None
    """A Secret as a disk."""
    service_account: ServiceAccountSource | None = None
    """A service account token as a disk."""


class PodNetwork(KubeModel):
    """The pod's own network."""

    vm_network_cidr: str | None = Field(default=None, alias="vmNetworkCIDR")
    """IPv4 CIDR of the guest behind masquerade (default 10.0.2.0/24)."""
    vm_ipv6_network_cidr: str | None = Field(default=None, alias="vmIPv6NetworkCIDR")
    """IPv6 CIDR of the guest behind masquerade."""


class MultusNetwork(KubeModel):
    """A secondary network attached through Multus."""

    network_name: str
    """NetworkAttachmentDefinition, as name or namespace/name."""
    default: bool | None = None
    """Use this network instead of the pod network as the default."""


class Network(KubeModel):
    """A network the VMI's interfaces can connect to; exactly one kind is set."""

    rules = (OneOf(("pod", "multus"), required=True),)

    name: str = Field(max_length=63)
    """Name, referenced by an interface."""
    pod: PodNetwork | None = None
    """The pod network."""
    multus: MultusNetwork | None = None
    """A Multus network."""
