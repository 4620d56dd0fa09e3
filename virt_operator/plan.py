"""What a reconcile sees (:class:`Observed`) and what it asks for (:class:`Plan`), as plain values.

The executor carries a plan out front to back and stops at the first refused write; the next reconcile
starts again from fresh observations, so a plan orders its writes such that stopping after any of them
leaves a state the next one understands (e.g. the finalizer before anything is installed; the finalizer
removed only after everything is gone).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .kinds import Key

Obj = dict[str, Any]

#: KubeVirt's finalizer on the KubeVirt resource: uninstall runs before the resource goes.
FINALIZER = "foregroundDeleteKubeVirt"
FIELD_MANAGER = "virt-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "virt-operator"
#: On the KubeVirt resource: every object the operator has installed and not yet seen gone (JSON).
INVENTORY_ANNOTATION = "podvirt.io/installed"
#: Digest of what the operator last applied to an object: unchanged digest, no write.
DIGEST_ANNOTATION = "podvirt.io/operator-digest"
#: On the pod templates that mount the handler certificates: pods restart when those are re-issued.
CERTS_ANNOTATION = "podvirt.io/handler-certs"


@dataclass(frozen=True)
class Applied:
    """What the operator last wrote to an object: the digest, and the object's generation (or
    resourceVersion, for kinds without one) right after. Another value later means someone changed it."""

    digest: str
    stamp: str


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile of ``kv`` looks at."""

    kv: Obj
    #: Every KubeVirt resource in the cluster (``kv`` among them): only one is acted on.
    kubevirts: list[Obj]
    #: The objects found of those :func:`virt_operator.reconcile.wanted` names (absent: not found).
    live: Mapping[Key, Obj] = field(default_factory=dict)
    #: VirtualMachines and VirtualMachineInstances per namespace (observed only during uninstall).
    workloads: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: The operator's memory of its own writes (empty after a restart: everything is applied once).
    applied: Mapping[Key, Applied] = field(default_factory=dict)
    #: Since when each component has been not ready (the operator's memory).
    unready_since: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Apply:
    """Server-side apply (field manager virt-operator, forced) of ``body``."""

    key: Key
    body: Obj
    digest: str


@dataclass(frozen=True)
class Delete:
    """Delete one object by exact kind, namespace and name (and UID, when known)."""

    key: Key
    uid: str | None = None
    #: ``Foreground`` keeps a workload until its pods are gone (so uninstall waits for them).
    propagation: str | None = None


@dataclass(frozen=True)
class SetMetadata:
    """Set the KubeVirt resource's finalizers and/or its inventory annotation (None: leave as is),
    only if the resource is still at ``resource_version`` (or at the version a write in the same plan
    left it at)."""

    resource_version: str
    finalizers: list[str] | None = None
    inventory: str | None = None


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


Action = Apply | Delete | SetMetadata | Event


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    #: The status to write after the actions (None: leave it as it is).
    status: Obj | None = None
    #: Actions after the status write (the finalizer's removal, once the status says Deleted).
    after_status: list[Action] = field(default_factory=list)
    unready_since: Mapping[str, datetime] = field(default_factory=dict)
    #: Look again after this many seconds even if nothing changes (a grace period ends, an uninstall waits).
    requeue_after: float | None = None
    #: What the reason of a failure of this plan's writes is called in the Degraded condition.
    failure_reason: str = "DeploymentFailed"


def stamp(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    if meta.get("generation"):
        return f"g{meta['generation']}"
    return f"rv{meta.get('resourceVersion') or ''}"


def encode_inventory(keys: Iterable[Key]) -> str:
    return json.dumps([[k.api_version, k.kind, k.namespace, k.name] for k in sorted(set(keys))], separators=(",", ":"))


def decode_inventory(kv: Mapping[str, Any]) -> set[Key]:
    """The inventory annotation's keys; an unreadable annotation (edited by hand) reads as empty."""
    raw = ((kv.get("metadata") or {}).get("annotations") or {}).get(INVENTORY_ANNOTATION)
    try:
        return {Key(*map(str, item)) for item in json.loads(raw or "[]") if len(item) == 4}
    except (ValueError, TypeError):
        return set()
