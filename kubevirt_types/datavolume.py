"""DataVolume templates (cdi.kubevirt.io/v1beta1 shapes) that a VirtualMachine can carry in dataVolumeTemplates."""

from __future__ import annotations

from typing import Literal

from ._base import KubeModel, OneOf
from .meta import LabelSelector, TemplateMeta
from .quantity import Quantity


class VolumeResourceRequirements(KubeModel):
    """Storage size of a claim."""

    requests: dict[str, Quantity] | None = None
    """Minimum resources, e.g. storage: 10Gi."""
    limits: dict[str, Quantity] | None = None
    """Maximum resources."""


class TypedObjectReference(KubeModel):
    """A reference to an object of a given kind."""

    api_group: str | None = None
    """API group of the object; empty for the core group."""
    kind: str
    """Kind of the object."""
    name: str
    """Name of the object."""
    namespace: str | None = None
    """Namespace of the object."""


class StorageSpec(KubeModel):
    """The claim that backs a DataVolume."""

    access_modes: list[str] | None = None
    """Access modes: ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod."""
    resources: VolumeResourceRequirements | None = None
    """Requested size."""
    storage_class_name: str | None = None
    """Storage class."""
    volume_mode: str | None = None
    """Filesystem or Block."""
    selector: LabelSelector | None = None
    """Label query over volumes to bind to."""
    volume_name: str | None = None
    """Existing PersistentVolume to bind to."""
    data_source: TypedObjectReference | None = None
    """Object to populate the claim from."""
    data_source_ref: TypedObjectReference | None = None
    """Object to populate the claim from (any API group)."""


class DataVolumeSourceHTTP(KubeModel):
    """Import from an HTTP(S) URL."""

    url: str
    """URL of the image."""
    secret_ref: str | None = None
    """Secret with accessKeyId and secretKey for basic auth."""
    cert_config_map: str | None = None
    """ConfigMap with a CA bundle for TLS."""
    extra_headers: list[str] | None = None
    """Extra HTTP headers, e.g. 'Authorization: Bearer x'."""


class DataVolumeSourceRegistry(KubeModel):
    """Import from a container image."""

    url: str | None = None
    """Image URL, e.g. docker://quay.io/containerdisks/fedora:latest."""
    image_stream: str | None = None
    """OpenShift image stream to import from."""
    pull_method: str | None = None
    """pod (default) or node."""
    secret_ref: str | None = None
    """Secret with registry credentials."""
    cert_config_map: str | None = None
    """ConfigMap with a CA bundle."""


class DataVolumeSourceS3(KubeModel):
    """Import from an S3 object."""

    url: str
    """URL of the object."""
    secret_ref: str | None = None
    """Secret with credentials."""
    cert_config_map: str | None = None
    """ConfigMap with a CA bundle."""


class DataVolumeSourcePVC(KubeModel):
    """Clone an existing claim."""

    namespace: str
    """Namespace of the claim."""
    name: str
    """Name of the claim."""


class DataVolumeBlankImage(KubeModel):
    """Create an empty disk image."""


class DataVolumeSourceUpload(KubeModel):
    """Wait for an upload through the upload proxy."""


class DataVolumeImportSource(KubeModel):
    """Where a DataVolume's data comes from; exactly one is set."""

    rules = (OneOf(("http", "registry", "s3", "pvc", "blank", "upload"), required=True),)

    http: DataVolumeSourceHTTP | None = None
    """An HTTP(S) URL."""
    registry: DataVolumeSourceRegistry | None = None
    """A container image."""
    s3: DataVolumeSourceS3 | None = None
    """An S3 object."""
    pvc: DataVolumeSourcePVC | None = None
    """An existing claim."""
    blank: DataVolumeBlankImage | None = None
    """An empty disk."""
    upload: DataVolumeSourceUpload | None = None
    """A later upload."""


class DataVolumeSourceRef(KubeModel):
    """A DataSource naming where the data comes from."""

    kind: Literal["DataSource"]
    """DataSource."""
    name: str
    """Name of the DataSource."""
    namespace: str | None = None
    """Namespace of the DataSource (default: the DataVolume's)."""


class DataVolumeSpec(KubeModel):
    """How a DataVolume is populated and what claim it creates."""

    rules = (OneOf(("source", "source_ref")), OneOf(("pvc", "storage"), required=True))

    source: DataVolumeImportSource | None = None
    """Where the data comes from."""
    source_ref: DataVolumeSourceRef | None = None
    """A DataSource to take the source from."""
    pvc: StorageSpec | None = None
    """The claim to create, exactly as given."""
    storage: StorageSpec | None = None
    """The claim to create, with defaults filled in from the storage profile."""
    priority_class_name: str | None = None
    """Priority class of the importer pod."""
    content_type: str | None = None
    """kubevirt (default, a disk image) or archive."""
    preallocation: bool | None = None
    """Preallocate the disk image."""


class DataVolumeTemplateSpec(KubeModel):
    """A DataVolume created with (and owned by) the VirtualMachine."""

    api_version: str | None = None
    """cdi.kubevirt.io/v1beta1 (optional)."""
    kind: str | None = None
    """DataVolume (optional)."""
    metadata: TemplateMeta | None = None
    """Name, labels and annotations of the DataVolume; the name is what a dataVolume volume refers to."""
    spec: DataVolumeSpec
    """The DataVolume's spec."""
