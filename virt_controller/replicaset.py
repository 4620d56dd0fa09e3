"""The VirtualMachineInstanceReplicaSet controller's decision: keep ``spec.replicas`` VMIs of the template.

Pure and level-based, like the others. The replica set owns (as controller) the VMIs it created and
those it adopted: VMIs of its namespace without a controller whose labels match its selector. An owned
VMI whose labels stop matching is released. Final VMIs are deleted, so that they are replaced;
surplus VMIs are deleted least valuable first (not yet running, then not ready, then the newest).

New VMIs are named ``<replica set>-<5 chars>`` from the replica set's UID and a slot number, taking the
lowest slots whose names are free: a create repeated from a stale view asks for a name that exists
and gets AlreadyExists instead of an extra VMI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from podvirt_common.kube import (
    VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS,
    VIRTUAL_MACHINE_INSTANCES,
    owner_reference,
)

from . import names, objects
from .actions import Action, Create, Delete, Event, MergePatch, Plan
from .status import condition, condition_is, merge_conditions, status_patch
from .vm import SyncError

Obj = dict[str, Any]
DEFAULT_BURST = 250


class SelectorError(ValueError):
    """A label selector podvirt cannot evaluate; the message says which part."""


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a meta/v1 LabelSelector (an empty selector matches everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise SelectorError(f"unknown selector operator {op!r} for key {key!r}")
        if not ok:
            return False
    return True


def selector_string(selector: Mapping[str, Any]) -> str:
    """The selector in kubectl's text form, for ``status.labelSelector`` (the scale subresource)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _vmi_for(rs: Mapping[str, Any], name: str) -> Obj:
    template = objects.spec(rs).get("template") or {}
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": objects.namespace(rs),
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": dict(tmeta.get("annotations") or {}),
            "finalizers": list(dict.fromkeys([*(tmeta.get("finalizers") or []), names.VMI_FINALIZER])),
            "ownerReferences": [owner_reference(rs)],
        },
        "spec": json.loads(json.dumps(template.get("spec") or {})),
    }


def _ready(vmi: Mapping[str, Any]) -> bool:
    return objects.phase(vmi) == "Running" and condition_is(objects.status(vmi).get("conditions"), "Ready")


def _least_valuable_first(vmis: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Not running before running, unready before ready, and among equals the newest first."""
    newest_first = sorted(vmis, key=lambda v: objects.meta(v).get("creationTimestamp") or "", reverse=True)
    return sorted(newest_first, key=lambda v: (objects.phase(v) == "Running", _ready(v)))


def reconcile_replica_set(
    rs: Mapping[str, Any],
    vmis: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    sync_error: SyncError | None = None,
    burst: int = DEFAULT_BURST,
) -> Plan:
    """What to do about replica set ``rs`` given the VMIs of its namespace."""
    if objects.deleting(rs):
        return Plan()
    spec = objects.spec(rs)
    selector = spec.get("selector") or {}
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    my_uid = objects.uid(rs)
    problem: tuple[str, str] | None = None
    actions: list[Action] = []
    try:
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            raise SelectorError("spec.selector is empty: it would select every VMI of the namespace")
        if not selector_matches(selector, template_labels):
            raise SelectorError("spec.selector does not match spec.template.metadata.labels")
        matching = {objects.name(v): selector_matches(selector, objects.labels(v)) for v in vmis}
    except SelectorError as exc:
        problem = ("InvalidSelector", str(exc))
        matching = {}

    active: list[Mapping[str, Any]] = []
    if problem is None:
        for vmi in vmis:
            owner = objects.controller_uid(vmi)
            if owner == my_uid and not matching[objects.name(vmi)]:
                actions.append(_release(vmi, my_uid))
            elif owner is None and matching[objects.name(vmi)] and not objects.deleting(vmi):
                actions.append(_adopt(rs, vmi))
                active.append(vmi)
            elif owner == my_uid and not objects.deleting(vmi):
                if objects.is_final(vmi):
                    actions.append(
                        Delete(VIRTUAL_MACHINE_INSTANCES, objects.namespace(vmi), objects.name(vmi), objects.uid(vmi))
                    )
                else:
                    active.append(vmi)
        active = [v for v in active if not objects.is_final(v)]

    paused = bool(spec.get("paused"))
    created = 0
    deleted: list[Mapping[str, Any]] = []
    if problem is None and not paused:
        diff = desired - len(active)
        if diff > 0:
            taken = {objects.name(v) for v in vmis}
            slot = 0
            for _ in range(min(diff, burst)):
                while names.replica_vmi_name(objects.name(rs), my_uid, slot) in taken:
                    slot += 1
                name = names.replica_vmi_name(objects.name(rs), my_uid, slot)
                taken.add(name)
                actions.append(
                    Create(
                        VIRTUAL_MACHINE_INSTANCES, objects.namespace(rs), _vmi_for(rs, name), owner_key=objects.key(rs)
                    )
                )
                actions.append(Event(rs, "SuccessfulCreate", f"Created virtual machine instance {name}"))
                created += 1
        elif diff < 0:
            for vmi in _least_valuable_first(active)[: min(-diff, burst)]:
                actions.append(
                    Delete(VIRTUAL_MACHINE_INSTANCES, objects.namespace(vmi), objects.name(vmi), objects.uid(vmi))
                )
                actions.append(Event(rs, "SuccessfulDelete", f"Deleted virtual machine instance {objects.name(vmi)}"))
                deleted.append(vmi)

    wanted_conditions = []
    if problem is not None:
        wanted_conditions.append(condition("ReplicaFailure", "True", now, problem[0], problem[1]))
    elif sync_error is not None:
        wanted_conditions.append(condition("ReplicaFailure", "True", now, sync_error.reason, sync_error.message))
    if paused:
        wanted_conditions.append(condition("ReplicaPaused", "True", now, "Paused", "spec.paused is true"))
    remaining = [v for v in active if all(v is not d for d in deleted)]
    wanted = {
        "replicas": len(remaining) + created,
        "readyReplicas": sum(1 for v in remaining if _ready(v)),
        "labelSelector": selector_string(selector),
        "conditions": merge_conditions(
            objects.status(rs).get("conditions"), ("ReplicaFailure", "ReplicaPaused"), wanted_conditions
        )
        or None,
    }
    patch = status_patch(objects.status(rs), wanted)
    if patch:
        write = MergePatch(
            VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS,
            objects.namespace(rs),
            objects.name(rs),
            {"status": patch},
            subresource="status",
            resource_version=objects.meta(rs).get("resourceVersion"),
        )
        actions = [write, *actions] if (sync_error is not None or problem is not None) else [*actions, write]
    return Plan(actions)


def _adopt(rs: Mapping[str, Any], vmi: Mapping[str, Any]) -> MergePatch:
    refs = [*(objects.meta(vmi).get("ownerReferences") or []), owner_reference(rs)]
    return MergePatch(
        VIRTUAL_MACHINE_INSTANCES,
        objects.namespace(vmi),
        objects.name(vmi),
        {"metadata": {"ownerReferences": refs}},
        resource_version=objects.meta(vmi).get("resourceVersion"),
    )


def _release(vmi: Mapping[str, Any], owner_uid: str) -> MergePatch:
    refs = [r for r in objects.meta(vmi).get("ownerReferences") or [] if r.get("uid") != owner_uid]
    return MergePatch(
        VIRTUAL_MACHINE_INSTANCES,
        objects.namespace(vmi),
        objects.name(vmi),
        {"metadata": {"ownerReferences": refs or None}},
        resource_version=objects.meta(vmi).get("resourceVersion"),
    )
