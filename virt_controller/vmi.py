"""The VMI controller's decision: given a VMI and its launcher pods, what to do. Pure and level-based.

Phases this controller sets (the node handler sets Running, and Succeeded/Failed when the guest stops):

- Pending: no launcher pod yet; the pod is created (unless a claim it needs does not exist:
  condition Synchronized=False, reason FailedPvcNotFound, and the VMI waits for the claim).
- Scheduling: the pod exists but is not yet running on a node. To save a status write per VMI, a pod
  that is younger than ``policy.scheduling_phase_delay`` and shows no problem leaves the VMI Pending:
  most pods are scheduled and started well within that time, and the VMI goes straight to Scheduled.
- Scheduled: the pod runs on a node with its compute container ready: ``status.nodeName``, the label
  ``kubevirt.io/nodeName`` (which the node handler selects on) and ``status.activePods`` are set.
- Failed: the pod failed, or went away (or is going away) before the VMI ran; Succeeded when the pod
  completed after the VMI ran. Also Failed, with reason NodeUnresponsive, when the VMI's node stopped
  answering (``node_problem``, decided by :mod:`virt_controller.nodes`): its launcher pods there are then
  deleted at once (grace period 0), since no node will ever confirm that they stopped.

Problems surface as conditions: PodScheduled (the pod's own, e.g. False/Unschedulable) and
Synchronized=False with the reason ErrImagePull, ImagePullBackOff, FailedPvcNotFound,
CreateContainerConfigError, or FailedCreate (the pod could not be built or was refused).

Deletion: the VMI carries the finalizer ``kubevirt.io/foregroundDeleteVirtualMachine`` from its start.
When it is deleted, its pods are deleted with their grace period (the guest's shutdown time); a pod
still there ``policy.force_delete_after`` seconds past its deadline (a lost node) is force-deleted;
with no pod left the finalizer is removed. Nothing but the pods is waited for, so a VMI whose pod is
already gone is finalised at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from podvirt_common.kube import PODS, VIRTUAL_MACHINE_INSTANCES, format_time

from . import names, objects
from .actions import Action, Create, Delete, Event, JSONPatch, MergePatch, Plan
from .launcher_pod import LauncherSettings, PodSpecError, build_launcher_pod, referenced_claims
from .status import (
    NOT_RUNNING_MESSAGE,
    NOT_RUNNING_REASON,
    condition,
    condition_is,
    find_condition,
    merge_conditions,
    status_patch,
)
from .vm import SyncError

Obj = dict[str, Any]

# Conditions this controller derives from the pod and drops when they no longer apply. It also sets
# Ready (from the pod, once the VMI runs) but never drops it.
OWNED_CONDITIONS = ("PodScheduled", "Synchronized")
FINAL_DROPPED_CONDITIONS = ("Ready", "Paused")
IMAGE_PROBLEMS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
CONTAINER_PROBLEMS = (*IMAGE_PROBLEMS, "CreateContainerConfigError", "CreateContainerError", "RunContainerError")


DEFAULT_SETTINGS = LauncherSettings()


@dataclass(frozen=True)
class VMIPolicy:
    scheduling_phase_delay: float = 5.0
    force_delete_after: float = 30.0


def reconcile_vmi(
    vmi: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    settings: LauncherSettings = DEFAULT_SETTINGS,
    claims: Mapping[str, Mapping[str, Any]] | None = None,
    launched: bool = False,
    policy: VMIPolicy = VMIPolicy(),
    sync_error: SyncError | None = None,
    node_problem: str | None = None,
) -> Plan:
    """What to do about ``vmi`` given its launcher ``pods`` (those labelled with its UID) at ``now``.

    ``claims`` are the PersistentVolumeClaims of the VMI's namespace by name (None: not known, do not
    check); ``launched`` says that a pod was already created for this VMI (so a missing one vanished);
    ``node_problem`` says why the node in ``status.nodeName`` is unresponsive (None: it is not).
    """
    if objects.deleting(vmi):
        return _finalize(vmi, pods, now, policy)

    actions: list[Action] = []
    if names.VMI_FINALIZER not in objects.finalizers(vmi):
        actions.append(_add_finalizer(vmi))

    live = [p for p in pods if not objects.deleting(p)]
    if objects.is_final(vmi):
        for leftover in live:
            if _pod_phase(leftover) not in ("Succeeded", "Failed"):
                actions.append(Delete(PODS, objects.namespace(leftover), objects.name(leftover), objects.uid(leftover)))
        return Plan(actions)

    phase = objects.phase(vmi)
    pod = _current_pod(vmi, live)
    going = [p for p in pods if objects.deleting(p)]
    requeue: float | None = None
    wanted: Obj = {}
    conditions: list[Obj] = []
    event: Event | None = None
    label_node: str | None = None

    vmi_node = str(objects.status(vmi).get("nodeName") or "")
    if node_problem is not None and vmi_node:
        wanted, event = _fail(vmi, now, names.NODE_UNRESPONSIVE_REASON, node_problem)
        actions.extend(_force_delete_on(vmi, pods, vmi_node, node_problem))
    elif pod is None:
        if going or launched or phase != "Pending":
            wanted, event = _fail(vmi, now, "LauncherPodGone", "the launcher pod went away")
        else:
            missing = _missing_claims(vmi, claims)
            if missing:
                message = f"PersistentVolumeClaim {missing[0]!r} does not exist; the VMI starts once it does"
                conditions.append(condition("Synchronized", "False", now, "FailedPvcNotFound", message))
                event = Event(vmi, "FailedPvcNotFound", message, warning=True)
            else:
                try:
                    body = build_launcher_pod(vmi, settings, claims)
                except PodSpecError as exc:
                    conditions.append(condition("Synchronized", "False", now, "FailedCreate", str(exc)))
                    event = Event(vmi, "FailedCreate", f"cannot build the launcher pod: {exc}", warning=True)
                else:
                    actions.append(Create(PODS, objects.namespace(vmi), body, owner_key=objects.key(vmi)))
                    actions.append(Event(vmi, "SuccessfulCreate", f"Created virtual machine pod {objects.name(body)}"))
                    if policy.scheduling_phase_delay <= 0:
                        wanted["phase"] = "Scheduling"
                    else:
                        requeue = policy.scheduling_phase_delay
            if sync_error is not None:
                conditions.append(condition("Synchronized", "False", now, sync_error.reason, sync_error.message))
                event = Event(vmi, sync_error.reason, sync_error.message, warning=True)
    else:
        pod_phase = _pod_phase(pod)
        if pod_phase == "Failed":
            wanted, event = _fail(vmi, now, "LauncherFailed", f"the launcher pod failed: {_termination(pod)}")
        elif pod_phase == "Succeeded":
            if phase == "Running":
                wanted = {"phase": "Succeeded"}
            else:
                wanted, event = _fail(vmi, now, "LauncherExited", "the launcher exited before the VMI ran")
        else:
            conditions.extend(_pod_conditions(vmi, pod, now))
            problem = _container_problem(pod)
            if problem is not None:
                reason, message = problem
                conditions.append(condition("Synchronized", "False", now, reason, message))
            if _pod_ready(pod) and phase in ("Pending", "Scheduling"):
                node = str(objects.spec(pod).get("nodeName") or "")
                wanted = {
                    "phase": "Scheduled",
                    "nodeName": node,
                    "activePods": {objects.uid(pod): node},
                }
                qos = objects.status(pod).get("qosClass")
                if qos:
                    wanted["qosClass"] = qos
                label_node = node
            elif phase == "Pending":
                age = (now - (objects.created_at(pod) or now)).total_seconds()
                unscheduled = find_condition(objects.status(pod).get("conditions"), "PodScheduled")
                troubled = problem is not None or (unscheduled is not None and unscheduled.get("status") == "False")
                if troubled or age >= policy.scheduling_phase_delay:
                    wanted["phase"] = "Scheduling"
                else:
                    requeue = policy.scheduling_phase_delay - age
            if phase == "Running":
                paused = condition_is(objects.status(vmi).get("conditions"), "Paused")
                if paused:
                    # The handler reports the pause; a paused guest is not ready whatever the pod says.
                    conditions.append(condition("Ready", "False", now, "Paused", "the guest is paused"))
                elif _pod_ready(pod):
                    conditions.append(condition("Ready", "True", now))
                else:
                    conditions.append(condition("Ready", "False", now, "PodNotReady", "the launcher pod is not ready"))
    if "phase" in wanted and wanted["phase"] not in ("Succeeded", "Failed", "Running"):
        conditions.append(condition("Ready", "False", now, NOT_RUNNING_REASON, NOT_RUNNING_MESSAGE))

    status = objects.status(vmi)
    owned: tuple[str, ...] = OWNED_CONDITIONS
    if wanted.get("phase") in ("Succeeded", "Failed"):
        # A VMI that has ended is neither ready nor paused, whoever said so while it ran.
        owned = (*OWNED_CONDITIONS, *FINAL_DROPPED_CONDITIONS)
    merged = merge_conditions(status.get("conditions"), owned, _dedupe(conditions))
    if merged != list(status.get("conditions") or []):
        wanted["conditions"] = merged
    if "phase" in wanted and wanted["phase"] != phase:
        wanted["phaseTransitionTimestamps"] = _transitions(vmi, str(wanted["phase"]), now)
    elif "phase" in wanted and wanted["phase"] == phase:
        wanted.pop("phase")
    patch = status_patch(status, wanted)

    if patch:
        write = MergePatch(
            VIRTUAL_MACHINE_INSTANCES,
            objects.namespace(vmi),
            objects.name(vmi),
            {"status": patch},
            subresource="status",
            resource_version=objects.meta(vmi).get("resourceVersion"),
        )
        # A write error must show even when retrying the create fails again: status first then.
        actions = [write, *actions] if sync_error is not None else [*actions, write]
        if event is not None and _new_problem(status, patch, event):
            # Right after the status write when retrying a failed write: the retry may fail again.
            actions.insert(1 if sync_error is not None else len(actions), event)
    # The node label goes on after the status says Scheduled: the node handler, which selects VMIs by
    # this label, then finds the VMI complete. A controller that stopped between the two writes finishes
    # the job when it looks again (else the handler would never see the VMI).
    scheduled_on = str(status.get("nodeName") or "")
    if (
        label_node is None
        and scheduled_on
        and node_problem is None
        and wanted.get("phase") not in ("Succeeded", "Failed")
    ):
        label_node = scheduled_on
    if label_node is not None and objects.labels(vmi).get(names.NODE_NAME_LABEL) != label_node:
        actions.append(
            MergePatch(
                VIRTUAL_MACHINE_INSTANCES,
                objects.namespace(vmi),
                objects.name(vmi),
                {"metadata": {"labels": {names.NODE_NAME_LABEL: label_node}}},
            )
        )
    return Plan(actions, requeue)


def _dedupe(conditions: list[Obj]) -> list[Obj]:
    seen: dict[str, Obj] = {}
    for cond in conditions:
        seen.setdefault(cond["type"], cond)
    return list(seen.values())


def _new_problem(status: Mapping[str, Any], patch: Mapping[str, Any], event: Event) -> bool:
    """Emit a warning event only on the transition into the problem, not on every reconcile."""
    if "phase" in patch:
        return True
    before = find_condition(status.get("conditions"), "Synchronized")
    return before is None or before.get("reason") != event.reason


def _fail(vmi: Mapping[str, Any], now: datetime, reason: str, message: str) -> tuple[Obj, Event]:
    return (
        {"phase": "Failed", "reason": reason},
        Event(vmi, reason, f"VMI failed: {message}", warning=True),
    )


def _force_delete_on(vmi: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], node: str, why: str) -> list[Action]:
    """Deletions without a grace period of the VMI's pods on a node that no longer answers."""
    actions: list[Action] = []
    for pod in pods:
        if objects.spec(pod).get("nodeName") != node or _pod_phase(pod) in ("Succeeded", "Failed"):
            continue
        name = objects.name(pod)
        actions.append(Delete(PODS, objects.namespace(pod), name, objects.uid(pod), grace_period_seconds=0))
        actions.append(
            Event(vmi, "ForcedDelete", f"launcher pod {name} deleted without waiting for its node: {why}", warning=True)
        )
    return actions


def _transitions(vmi: Mapping[str, Any], phase: str, now: datetime) -> list[Obj]:
    stamps = [dict(s) for s in objects.status(vmi).get("phaseTransitionTimestamps") or []]
    if not stamps:
        created = objects.created_at(vmi)
        if created is not None:
            stamps.append({"phase": "Pending", "phaseTransitionTimestamp": format_time(created)})
    stamps.append({"phase": phase, "phaseTransitionTimestamp": format_time(now)})
    return stamps


def _add_finalizer(vmi: Mapping[str, Any]) -> JSONPatch:
    current = objects.finalizers(vmi)
    # On the observed version only: the status write planned after it then stays on that version too.
    ops: list[Obj] = [
        {"op": "test", "path": "/metadata/uid", "value": objects.uid(vmi)},
        {"op": "test", "path": "/metadata/resourceVersion", "value": objects.meta(vmi).get("resourceVersion")},
    ]
    if current:
        ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": names.VMI_FINALIZER})
    else:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": [names.VMI_FINALIZER]})
    return JSONPatch(VIRTUAL_MACHINE_INSTANCES, objects.namespace(vmi), objects.name(vmi), ops)


def _finalize(vmi: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime, policy: VMIPolicy) -> Plan:
    if names.VMI_FINALIZER not in objects.finalizers(vmi):
        return Plan()
    actions: list[Action] = []
    requeue: float | None = None
    for pod in pods:
        ns, name, uid = objects.namespace(pod), objects.name(pod), objects.uid(pod)
        deadline = objects.deletion_time(pod)
        if deadline is None:
            actions.append(Delete(PODS, ns, name, uid))
            actions.append(Event(vmi, "SuccessfulDelete", f"Deleted virtual machine pod {name}"))
            continue
        force_at = deadline + timedelta(seconds=policy.force_delete_after)
        if now >= force_at:
            actions.append(Delete(PODS, ns, name, uid, grace_period_seconds=0))
            actions.append(
                Event(
                    vmi,
                    "ForcedDelete",
                    f"launcher pod {name} was still there {policy.force_delete_after:.0f} s after its grace "
                    "period (is its node gone?): deleted it without waiting for the node",
                    warning=True,
                )
            )
        else:
            wait = (force_at - now).total_seconds()
            requeue = wait if requeue is None else min(requeue, wait)
    if not pods:
        remaining = [f for f in objects.finalizers(vmi) if f != names.VMI_FINALIZER]
        actions.append(
            JSONPatch(
                VIRTUAL_MACHINE_INSTANCES,
                objects.namespace(vmi),
                objects.name(vmi),
                [
                    {"op": "test", "path": "/metadata/finalizers", "value": objects.finalizers(vmi)},
                    {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
                ],
            )
        )
    return Plan(actions, requeue)


def _current_pod(vmi: Mapping[str, Any], live: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not live:
        return None
    active = objects.status(vmi).get("activePods") or {}
    for pod in live:
        if objects.uid(pod) in active:
            return pod
    return min(live, key=lambda p: (objects.meta(p).get("creationTimestamp") or "", objects.name(p)))


def _pod_phase(pod: Mapping[str, Any]) -> str:
    return str(objects.status(pod).get("phase") or "Pending")


def _compute_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in objects.status(pod).get("containerStatuses") or []:
        if status.get("name") == "compute":
            return status  # type: ignore[no-any-return]
    return {}


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return _pod_phase(pod) == "Running" and bool(_compute_status(pod).get("ready"))


def _pod_conditions(vmi: Mapping[str, Any], pod: Mapping[str, Any], now: datetime) -> list[Obj]:
    """The pod's PodScheduled condition, mirrored. A pod that was simply scheduled is not worth a write
    of its own: that news rides along with the next one (Scheduled), unless the VMI shows an older
    PodScheduled condition (say, Unschedulable) that must be corrected."""
    scheduled = find_condition(objects.status(pod).get("conditions"), "PodScheduled")
    if scheduled is None:
        return []
    shown = find_condition(objects.status(vmi).get("conditions"), "PodScheduled")
    if scheduled.get("status") == "True" and shown is None and not _pod_ready(pod):
        return []
    return [
        condition("PodScheduled", str(scheduled.get("status")), now, scheduled.get("reason"), scheduled.get("message"))
    ]


def _container_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    statuses = [
        *(objects.status(pod).get("initContainerStatuses") or []),
        *(objects.status(pod).get("containerStatuses") or []),
    ]
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CONTAINER_PROBLEMS:
            return str(waiting["reason"]), str(waiting.get("message") or waiting["reason"])
    return None


def _termination(pod: Mapping[str, Any]) -> str:
    terminated = (_compute_status(pod).get("state") or {}).get("terminated") or {}
    if not terminated:
        return str(objects.status(pod).get("message") or objects.status(pod).get("reason") or "no details")
    text = f"exit code {terminated.get('exitCode')}"
    if terminated.get("reason"):
        text += f" ({terminated['reason']})"
    if terminated.get("message"):
        text += f": {str(terminated['message']).strip()[-300:]}"
    return text


def _missing_claims(vmi: Mapping[str, Any], claims: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    if claims is None:
        return []
    return [c for c in referenced_claims(objects.spec(vmi)) if c not in claims]
