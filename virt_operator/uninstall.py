"""Uninstall, pure: what deleting the active KubeVirt resource does.

As KubeVirt's ``BlockUninstallIfWorkloadsExist``: while any VirtualMachine or VirtualMachineInstance
exists in the cluster, nothing is removed; the resource keeps its finalizer and says, in the Degraded
condition (reason ``DeletionBlocked``), how many remain and where. Once none remain, every object the
operator installed (labelled as managed by it) and every object virt-api registered by itself (by exact
name, :func:`self_registered`) is deleted; when all of them are gone the status says ``Deleted`` and the
finalizer goes. Namespaces, CRDs and whatever else installed the operator itself stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from podvirt_common.kube import NAMESPACES, SECRETS

from . import status as st
from .installconfig import PART_OF, PART_OF_LABEL, VIRT_API_CERTS_SECRET
from .kinds import (
    API_SERVICES,
    CRDS,
    MUTATING_WEBHOOKS,
    VALIDATING_WEBHOOKS,
    WORKLOADS,
    Key,
    write_order,
)
from .plan import FINALIZER, Action, Delete, Event, Observed, Plan, SetMetadata

Obj = dict[str, Any]
#: How often a blocked or waiting uninstall looks again (VMs are not watched).
RECHECK_SECONDS = 5.0


def self_registered(namespace: str) -> list[Key]:
    """What virt-api creates for itself at start and the operator removes on uninstall."""
    return [
        Key(MUTATING_WEBHOOKS.api_version, MUTATING_WEBHOOKS.kind, "", "virt-api-mutator"),
        Key(VALIDATING_WEBHOOKS.api_version, VALIDATING_WEBHOOKS.kind, "", "virt-api-validator"),
        Key(API_SERVICES.api_version, API_SERVICES.kind, "", "v1.subresources.kubevirt.io"),
        Key(API_SERVICES.api_version, API_SERVICES.kind, "", "v1alpha3.subresources.kubevirt.io"),
        Key(SECRETS.api_version, SECRETS.kind, namespace, VIRT_API_CERTS_SECRET),
    ]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def blocked_message(workloads: Mapping[str, tuple[int, int]]) -> str | None:
    """Why uninstall must wait, or None when no VM or VMI is left."""
    vms = sum(v for v, _ in workloads.values())
    vmis = sum(i for _, i in workloads.values())
    if not vms and not vmis:
        return None
    where = ", ".join(sorted(ns for ns, (v, i) in workloads.items() if v or i))
    return (
        f"uninstall blocked: {_plural(vms, 'VirtualMachine')} and {_plural(vmis, 'VirtualMachineInstance')} "
        f"remain (namespaces: {where}); delete them and the uninstall continues "
        "(uninstallStrategy BlockUninstallIfWorkloadsExist)"
    )


def _keys(keys: Iterable[Key], limit: int = 6) -> str:
    names = [str(k) for k in keys]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plan(observed: Observed, ours: set[Key], operator_version: str, now: datetime) -> Plan:
    """The uninstall step for the active resource being deleted; ``ours`` is every object it may have
    installed (its inventory, what it renders, its certificates), minus the operator's own install."""
    kv = observed.kv
    meta = kv.get("metadata") or {}
    old = kv.get("status") or {}
    base: Obj = {k: v for k, v in old.items() if k not in ("phase", "conditions")}
    if operator_version:
        base["operatorVersion"] = operator_version
    actions: list[Action] = []

    blocked = blocked_message(observed.workloads)
    if blocked is not None:
        available = st.condition(old, st.AVAILABLE)
        conds = [
            st.Condition(
                st.AVAILABLE,
                available.get("status") == "True",
                str(available.get("reason") or st.DELETION_BLOCKED),
                str(available.get("message") or blocked),
            ),
            st.Condition(st.PROGRESSING, False, st.DELETION_BLOCKED, blocked),
            st.Condition(st.DEGRADED, True, st.DELETION_BLOCKED, blocked),
        ]
        if st.condition(old, st.DEGRADED).get("message") != blocked:
            actions.append(Event(st.DELETION_BLOCKED, blocked, warning=True))
        return _write(kv, st.DELETING, conds, base, actions, now)

    # First what the operator installed (workloads in the foreground: their pods go first), then, once
    # virt-api's pods are gone and cannot register again, what virt-api registered for itself.
    installed = {
        k: o for k, o in observed.live.items() if k in ours and k.resource not in (NAMESPACES, CRDS) and _is_podvirts(o)
    }
    namespace = str(meta.get("namespace") or "")
    registered = {k: o for k, o in observed.live.items() if k in self_registered(namespace)}
    stage = installed or registered
    if stage:
        deletes = [
            Delete(key, (obj.get("metadata") or {}).get("uid"), "Foreground" if key.resource in WORKLOADS else None)
            for key, obj in sorted(stage.items(), key=lambda item: (-write_order(item[0]), item[0]))
            if not (obj.get("metadata") or {}).get("deletionTimestamp")
        ]
        actions.extend(deletes)
        if deletes:
            actions.append(Event("ResourcesDeleted", f"uninstalling: deleted {_keys(d.key for d in deletes)}"))
        left = sorted({*installed, *registered})
        message = f"uninstalling: waiting for {len(left)} objects to go: {_keys(left)}"
        conds = [
            st.Condition(st.AVAILABLE, False, st.DELETION_IN_PROGRESS, message),
            st.Condition(st.PROGRESSING, True, st.DELETION_IN_PROGRESS, message),
            st.Condition(st.DEGRADED, False, st.DELETION_IN_PROGRESS, message),
        ]
        return _write(kv, st.DELETING, conds, base, actions, now)

    done = "everything virt-operator installed is removed"
    conds = [st.Condition(t, False, st.DELETION_COMPLETED, done) for t in st.CONDITION_TYPES]
    actions.append(Event(st.DELETED, done))
    # The status first: once the finalizer goes, so may the resource.
    status = {**base, "phase": st.DELETED, "conditions": st.conditions(old.get("conditions"), conds, now)}
    finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
    tail: list[Action] = [SetMetadata(str(meta.get("resourceVersion") or ""), finalizers=finalizers)]
    return Plan(actions=actions, status=status, after_status=tail, failure_reason=st.DELETION_FAILED)


def _is_podvirts(obj: Mapping[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(PART_OF_LABEL) == PART_OF


def _write(
    kv: Mapping[str, Any], phase: str, conds: list[st.Condition], base: Obj, actions: list[Action], now: datetime
) -> Plan:
    old = kv.get("status") or {}
    status = {**base, "phase": phase, "conditions": st.conditions(old.get("conditions"), conds, now)}
    return Plan(
        actions=actions,
        status=None if status == old else status,
        requeue_after=RECHECK_SECONDS,
        failure_reason=st.DELETION_FAILED,
    )
