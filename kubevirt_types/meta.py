"""Kubernetes metadata shapes (meta/v1) that kubevirt.io/v1 objects embed: ObjectMeta, selectors, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import ConfigDict, PlainSerializer, WithJsonSchema

from ._base import KubeModel
from .enums import ConditionStatus, LabelSelectorOperator


def _format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    datetime,
    PlainSerializer(_format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A meta/v1 Time: RFC 3339 in UTC with second precision on the wire."""

IntOrString = Annotated[
    int | str,
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}),
]
"""A number or a name, e.g. a port given as 8080 or "http"."""

LabelMap = dict[str, str]


class OwnerReference(KubeModel):
    """An object this object belongs to; it is garbage-collected with its owner."""

    api_version: str
    """API version of the owner."""
    kind: str
    """Kind of the owner."""
    name: str
    """Name of the owner."""
    uid: str
    """UID of the owner."""
    controller: bool | None = None
    """Whether the owner is the managing controller."""
    block_owner_deletion: bool | None = None
    """Whether foreground deletion of the owner waits for this object."""


class ObjectMeta(KubeModel):
    """Standard object metadata. Server-managed fields that podvirt does not model are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    """Name, unique within the namespace."""
    generate_name: str | None = None
    """Prefix from which the server generates a unique name when none is given."""
    namespace: str | None = None
    """Namespace the object lives in."""
    uid: str | None = None
    """Unique ID assigned by the server."""
    resource_version: str | None = None
    """Opaque version for optimistic concurrency."""
    generation: int | None = None
    """Sequence number of the desired state, incremented by the server on spec changes."""
    creation_timestamp: Timestamp | None = None
    """When the object was created."""
    deletion_timestamp: Timestamp | None = None
    """When the object was asked to be deleted."""
    deletion_grace_period_seconds: int | None = None
    """Seconds the object is given to terminate gracefully."""
    labels: LabelMap | None = None
    """Labels, for selection and organisation."""
    annotations: LabelMap | None = None
    """Annotations: non-identifying metadata for tools."""
    owner_references: list[OwnerReference] | None = None
    """Objects this object depends on."""
    finalizers: list[str] | None = None
    """Finalizers that must be removed before the object is deleted."""


class TemplateMeta(KubeModel):
    """Metadata given to objects created from a template (the VMI of a VM, the VMIs of a replica set)."""

    name: str | None = None
    """Name of the created object (defaults to the owner's name or a generated one)."""
    generate_name: str | None = None
    """Prefix for generated names."""
    namespace: str | None = None
    """Namespace; always the owner's."""
    labels: LabelMap | None = None
    """Labels of the created object."""
    annotations: LabelMap | None = None
    """Annotations of the created object."""
    finalizers: list[str] | None = None
    """Finalizers of the created object."""
    creation_timestamp: Timestamp | None = None
    """Ignored; accepted because generated KubeVirt YAML carries creationTimestamp: null here."""


class LabelSelectorRequirement(KubeModel):
    """A requirement on one label."""

    key: str
    """The label key."""
    operator: LabelSelectorOperator
    """How the label relates to the values."""
    values: list[str] | None = None
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(KubeModel):
    """Selects objects by label; all requirements must hold."""

    match_labels: LabelMap | None = None
    """Labels that must be present with exactly these values."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Further label requirements."""


class ConditionBase(KubeModel):
    """Common fields of a status condition; each kind adds its own typed ``type``."""

    status: ConditionStatus
    """True, False or Unknown."""
    reason: str | None = None
    """Machine-readable reason of the last transition."""
    message: str | None = None
    """Human-readable details."""
    last_probe_time: Timestamp | None = None
    """When the condition was last checked."""
    last_transition_time: Timestamp | None = None
    """When the condition last changed status."""
