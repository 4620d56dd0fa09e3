"""The VirtualMachine controller's decision: given a VM and the VMI of the same name (or none), what to do.

``reconcile_vm(vm, vmi, now)`` is pure and level-based: it looks only at the two objects and the time,
never at how they got there, so a missed or repeated event cannot lead it astray.

Run strategies (KubeVirt's semantics):

- Always: a VMI always exists; a final one (Succeeded or Failed) is deleted and a new one created.
- RerunOnFailure: started once when the strategy takes effect; a Failed VMI is replaced (a Start request
  is queued while the failed one is deleted), a Succeeded one is deleted and not replaced.
- Manual: VMIs come and go only through start and stop requests.
- Halted: no VMI.
- Once: one VMI when the strategy takes effect, never replaced.

``status.stateChangeRequests`` is a queue worked from the front: a Stop (for one VMI UID, or for whatever
VMI exists) is consumed once that VMI is gone; a Start is consumed once a VMI exists. Restart is Stop(uid)
followed by Start. A Start with ``data.paused: "true"`` starts the VMI paused.

Crash loops: a VMI of an Always or RerunOnFailure VM that fails before it has run for
``policy.stable_run`` seconds counts as a failed start; the next VMI is created only after an
exponential back-off (``status.startFailure.retryAfterTimestamp``), and the count is reset once a VMI has
been Running for ``stable_run`` seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubevirt_types import VirtualMachine
from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES, format_time, owner_reference, parse_time

from . import names, objects
from .actions import Action, Create, Delete, Event, MergePatch, Plan
from .printable import printable_status
from .status import (
    NOT_RUNNING_MESSAGE,
    NOT_RUNNING_REASON,
    condition,
    condition_is,
    find_condition,
    merge_conditions,
    status_patch,
)

Obj = dict[str, Any]

PAUSED_KEY = "paused"
PAUSED_TRUE = "true"
AUTO_RESTARTING = frozenset({"Always", "RerunOnFailure"})
# VM conditions this controller sets; the first ones are mirrored from the VMI.
MIRRORED_VMI_CONDITIONS = ("Paused", "AgentConnected", "LiveMigratable")
OWNED_CONDITIONS = ("Ready", "Failure", "RestartRequired", *MIRRORED_VMI_CONDITIONS)


@dataclass(frozen=True)
class CrashLoopPolicy:
    """Back-off between failed starts: ``base * 2**(n-1)`` seconds after the n-th, at most ``maximum``."""

    base: float = 10.0
    maximum: float = 300.0
    stable_run: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.base * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class SyncError:
    """The last write for this object that failed: why (a KubeVirt reason) and the apiserver's message."""

    reason: str
    message: str


def run_strategy(vm: Mapping[str, Any]) -> str:
    """The effective run strategy; the deprecated ``spec.running`` maps to Always/Halted."""
    spec = objects.spec(vm)
    if spec.get("runStrategy"):
        return str(spec["runStrategy"])
    return "Always" if spec.get("running") else "Halted"


def template_hash(vm: Mapping[str, Any]) -> str:
    """Digest of the VM's VMI template; a running VMI whose digest differs needs a restart to catch up."""
    template = objects.spec(vm).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def vmi_for(vm: Mapping[str, Any], *, paused: bool = False) -> Obj:
    """The VMI a VM starts: its template, named like the VM, controlled by it, with the VMI finalizer."""
    template = objects.spec(vm).get("template") or {}
    tmeta = template.get("metadata") or {}
    spec = json.loads(json.dumps(template.get("spec") or {}))
    if paused:
        spec["startStrategy"] = "Paused"
    labels = dict(tmeta.get("labels") or {})
    if names.fits_label_value(objects.name(vm)):
        labels.setdefault(names.VM_NAME_LABEL, objects.name(vm))
    annotations = {
        **(tmeta.get("annotations") or {}),
        names.VM_GENERATION_ANNOTATION: str(objects.meta(vm).get("generation") or 1),
        names.TEMPLATE_HASH_ANNOTATION: template_hash(vm),
    }
    finalizers = [*(tmeta.get("finalizers") or []), names.VMI_FINALIZER]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": objects.name(vm),
            "namespace": objects.namespace(vm),
            "labels": labels,
            "annotations": annotations,
            "finalizers": list(dict.fromkeys(finalizers)),
            "ownerReferences": [owner_reference(vm)],
        },
        "spec": spec,
    }


@dataclass
class _Intent:
    create: bool = False
    paused: bool = False
    delete: bool = False
    record_failure: bool = False
    from_request: bool = False


def _requests(vm: Mapping[str, Any]) -> list[Obj]:
    return [dict(r) for r in objects.status(vm).get("stateChangeRequests") or []]


def _work_requests(requests: list[Obj], vmi: Mapping[str, Any] | None, strategy: str, intent: _Intent) -> list[Obj]:
    """Work the request queue from the front as far as it goes now; returns what remains."""
    queue = list(requests)
    while queue:
        head = queue[0]
        if head.get("action") == "Stop":
            wanted_uid = head.get("uid")
            if vmi is not None and (not wanted_uid or wanted_uid == objects.uid(vmi)):
                intent.delete = not objects.deleting(vmi)
                return queue
            queue.pop(0)  # the VMI it meant to stop is gone
            continue
        if head.get("action") == "Start":
            if strategy == "Halted":
                return queue  # virt-api turns a start of a Halted VM into runStrategy Always
            if vmi is None:
                intent.create = True
                intent.from_request = True  # consumed only if the create really happens now
                intent.paused = (head.get("data") or {}).get(PAUSED_KEY) == PAUSED_TRUE
                return queue
            if objects.deleting(vmi):
                return queue
            if objects.is_final(vmi):
                intent.delete = True  # make room for the new VMI, which has the same name
                return queue
            queue.pop(0)  # already running
            continue
        queue.pop(0)  # an action podvirt does not know
    return queue


def _failed_start(vmi: Mapping[str, Any], policy: CrashLoopPolicy) -> bool:
    """Whether a final VMI counts as a failed start: Failed, and never Running for ``stable_run`` s."""
    if objects.phase(vmi) != "Failed":
        return False
    running = objects.phase_time(vmi, "Running")
    if running is None:
        return True
    ended = objects.phase_time(vmi, "Failed")
    return ended is None or (ended - running).total_seconds() < policy.stable_run


def reconcile_vm(
    vm: Mapping[str, Any],
    vmi: Mapping[str, Any] | None,
    now: datetime,
    *,
    policy: CrashLoopPolicy = CrashLoopPolicy(),
    sync_error: SyncError | None = None,
) -> Plan:
    """What to do about ``vm`` given the VMI of its name (``None`` if there is none) at ``now``."""
    try:
        VirtualMachine.model_validate(vm)
    except ValidationError as exc:
        return _invalid(vm, exc, now)

    if vmi is not None and objects.controller_uid(vmi) != objects.uid(vm):
        if objects.controller_uid(vmi) is None and not objects.deleting(vmi) and not objects.deleting(vm):
            return _adopt(vm, vmi)
        return _foreign_vmi(vm, vmi, now)

    strategy = run_strategy(vm)
    status = objects.status(vm)
    start_failure: Obj | None = dict(status["startFailure"]) if status.get("startFailure") else None
    requests = _requests(vm)
    intent = _Intent()
    requeue: float | None = None

    if objects.deleting(vm):
        intent.delete = vmi is not None and not objects.deleting(vmi)
    else:
        # Start-failure bookkeeping first: it decides whether a replacement may start now.
        if strategy in AUTO_RESTARTING and vmi is not None:
            if objects.is_final(vmi) and _failed_start(vmi, policy):
                if start_failure is None or start_failure.get("lastFailedVMIUID") != objects.uid(vmi):
                    count = int((start_failure or {}).get("consecutiveFailCount") or 0) + 1
                    retry = now + timedelta(seconds=policy.delay(count))
                    start_failure = {
                        "consecutiveFailCount": count,
                        "lastFailedVMIUID": objects.uid(vmi),
                        "retryAfterTimestamp": format_time(retry),
                    }
                    intent.record_failure = True
            elif start_failure is not None and objects.phase(vmi) == "Running":
                running_since = objects.phase_time(vmi, "Running") or now
                stable_at = running_since + timedelta(seconds=policy.stable_run)
                if now >= stable_at:
                    start_failure = None
                else:
                    requeue = (stable_at - now).total_seconds()
        elif strategy not in AUTO_RESTARTING:
            start_failure = None

        requests = _work_requests(requests, vmi, strategy, intent)
        if not intent.create and not intent.delete:
            _apply_strategy(strategy, vm, vmi, requests, intent)

    if intent.create and strategy in AUTO_RESTARTING and start_failure is not None:
        retry_after = parse_time(start_failure.get("retryAfterTimestamp"))
        if retry_after is not None and retry_after > now:
            intent.create = False
            wait = (retry_after - now).total_seconds()
            requeue = wait if requeue is None else min(requeue, wait)
    if intent.record_failure and strategy == "RerunOnFailure" and intent.delete:
        requests = [*requests, {"action": "Start"}]  # replace the failed VMI once it is gone
    requests_before = requests
    if intent.create and intent.from_request:
        requests = requests[1:]  # the Start this create answers

    actions: list[Action] = []
    after_vmi: Mapping[str, Any] | None = vmi
    if intent.delete and vmi is not None:
        actions.append(Delete(VIRTUAL_MACHINE_INSTANCES, objects.namespace(vm), objects.name(vmi), objects.uid(vmi)))
        actions.append(
            Event(
                vm,
                "SuccessfulDelete",
                f"Stopped the virtual machine by deleting the virtual machine instance {objects.uid(vmi)}",
            )
        )
        after_vmi = {**vmi, "metadata": {**objects.meta(vmi), "deletionTimestamp": format_time(now)}}
    elif intent.create:
        body = vmi_for(vm, paused=intent.paused)
        actions.append(Create(VIRTUAL_MACHINE_INSTANCES, objects.namespace(vm), body, owner_key=objects.key(vm)))
        actions.append(
            Event(
                vm,
                "SuccessfulCreate",
                f"Started the virtual machine by creating the new virtual machine instance {objects.name(vm)}",
            )
        )
        after_vmi = body

    if intent.record_failure:
        delay = policy.delay(int(start_failure["consecutiveFailCount"])) if start_failure else 0
        actions.append(
            Event(
                vm,
                "CrashLoopBackOff",
                f"VMI {objects.uid(vmi or {})} failed to start; next start in {delay:.0f} s",
                warning=True,
            )
        )

    # The status normally describes the state after this plan (one write instead of two). It goes first,
    # describing the state as observed, when it must not depend on the plan's success: a recorded failed
    # start is the only trace of the failed VMI about to be deleted, and a write error must be shown
    # even when retrying fails again.
    first = intent.record_failure or sync_error is not None
    if first:
        wanted = _wanted_status(vm, vmi, strategy, requests_before, start_failure, now, sync_error)
    else:
        wanted = _wanted_status(vm, after_vmi, strategy, requests, start_failure, now, sync_error)
    patch = status_patch(status, wanted)
    if patch:
        write = MergePatch(
            VIRTUAL_MACHINES,
            objects.namespace(vm),
            objects.name(vm),
            {"status": patch},
            subresource="status",
            resource_version=objects.meta(vm).get("resourceVersion"),
        )
        actions = [write, *actions] if first else [*actions, write]
        failure_before = find_condition(status.get("conditions"), "Failure")
        if sync_error is not None and (failure_before or {}).get("message") != sync_error.message:
            actions.insert(1, Event(vm, sync_error.reason, sync_error.message, warning=True))
    return Plan(actions, requeue)


def _apply_strategy(
    strategy: str, vm: Mapping[str, Any], vmi: Mapping[str, Any] | None, requests: list[Obj], intent: _Intent
) -> None:
    previous = objects.status(vm).get("runStrategy")
    if strategy == "Always":
        if vmi is None:
            intent.create = True
        elif objects.is_final(vmi) and not objects.deleting(vmi):
            intent.delete = True
    elif strategy == "RerunOnFailure":
        if vmi is None:
            intent.create = previous != "RerunOnFailure"
        elif objects.is_final(vmi) and not objects.deleting(vmi):
            intent.delete = True
    elif strategy == "Halted":
        intent.delete = vmi is not None and not objects.deleting(vmi)
    elif strategy == "Once":
        intent.create = vmi is None and previous != "Once"
    # Manual: only requests act.


def _wanted_status(
    vm: Mapping[str, Any],
    vmi: Mapping[str, Any] | None,
    strategy: str,
    requests: list[Obj],
    start_failure: Obj | None,
    now: datetime,
    sync_error: SyncError | None,
) -> Obj:
    vmi_conditions = objects.status(vmi).get("conditions") if vmi is not None else None
    alive = vmi is not None and not objects.is_final(vmi) and not objects.deleting(vmi)
    ready = alive and condition_is(vmi_conditions, "Ready")
    wanted_conditions: list[Obj] = []
    if ready:
        wanted_conditions.append(condition("Ready", "True", now))
    elif vmi is None:
        wanted_conditions.append(condition("Ready", "False", now, "VMINotExists", "VMI does not exist"))
    else:
        ready_cond = find_condition(vmi_conditions, "Ready") or {}
        message: str | None
        if objects.is_final(vmi):
            reason, message = "VMIFinal", f"the VMI has ended ({objects.phase(vmi)})"
        else:
            reason = str(ready_cond.get("reason") or NOT_RUNNING_REASON)
            message = ready_cond.get("message") or (NOT_RUNNING_MESSAGE if reason == NOT_RUNNING_REASON else None)
        wanted_conditions.append(condition("Ready", "False", now, reason, message))
    if sync_error is not None:
        wanted_conditions.append(condition("Failure", "True", now, sync_error.reason, sync_error.message))
    if alive and vmi is not None:
        vmi_hash = objects.annotation_map(vmi).get(names.TEMPLATE_HASH_ANNOTATION)
        if vmi_hash and vmi_hash != template_hash(vm):
            wanted_conditions.append(
                condition(
                    "RestartRequired",
                    "True",
                    now,
                    "TemplateChanged",
                    "the VM template changed since the VMI started; restart the VM to apply it",
                )
            )
        for mirrored in MIRRORED_VMI_CONDITIONS:
            cond = find_condition(vmi_conditions, mirrored)
            if cond is not None:
                wanted_conditions.append(
                    condition(mirrored, str(cond.get("status")), now, cond.get("reason"), cond.get("message"))
                )
    conditions = merge_conditions(objects.status(vm).get("conditions"), OWNED_CONDITIONS, wanted_conditions)

    generation = objects.meta(vm).get("generation")
    observed_generation = objects.status(vm).get("observedGeneration")
    if vmi is not None and alive:
        if objects.annotation_map(vmi).get(names.TEMPLATE_HASH_ANNOTATION) == template_hash(vm):
            observed_generation = generation
        else:
            vmi_generation = objects.annotation_map(vmi).get(names.VM_GENERATION_ANNOTATION)
            observed_generation = int(vmi_generation) if vmi_generation else observed_generation
    printable = printable_status(vm, vmi, strategy, start_failure, now)
    return {
        "printableStatus": printable,
        "created": vmi is not None,
        "ready": ready,
        "conditions": conditions,
        "stateChangeRequests": requests or None,
        "startFailure": start_failure,
        "runStrategy": strategy,
        "observedGeneration": observed_generation,
        "desiredGeneration": generation,
    }


def _invalid(vm: Mapping[str, Any], exc: ValidationError, now: datetime) -> Plan:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = f"the VM cannot be read: {where}: {first['msg']}"
    conditions = merge_conditions(
        objects.status(vm).get("conditions"), ("Failure",), [condition("Failure", "True", now, "InvalidSpec", message)]
    )
    patch = status_patch(objects.status(vm), {"conditions": conditions})
    if not patch:
        return Plan()
    return Plan(
        [
            MergePatch(
                VIRTUAL_MACHINES, objects.namespace(vm), objects.name(vm), {"status": patch}, subresource="status"
            ),
            Event(vm, "InvalidSpec", message, warning=True),
        ]
    )


def _foreign_vmi(vm: Mapping[str, Any], vmi: Mapping[str, Any], now: datetime) -> Plan:
    message = (
        f"a VMI named {objects.name(vm)} exists that this VM does not control; "
        "delete it (or the VM) to let the VM start its own"
    )
    conditions = merge_conditions(
        objects.status(vm).get("conditions"), ("Failure",), [condition("Failure", "True", now, "FailedCreate", message)]
    )
    patch = status_patch(objects.status(vm), {"conditions": conditions})
    if not patch:
        return Plan()
    return Plan(
        [
            MergePatch(
                VIRTUAL_MACHINES, objects.namespace(vm), objects.name(vm), {"status": patch}, subresource="status"
            ),
            Event(vm, "FailedCreate", message, warning=True),
        ]
    )


def _adopt(vm: Mapping[str, Any], vmi: Mapping[str, Any]) -> Plan:
    """A VMI of the VM's name without a controller becomes the VM's (as KubeVirt does)."""
    refs = [*(objects.meta(vmi).get("ownerReferences") or []), owner_reference(vm)]
    patch = {"metadata": {"ownerReferences": refs}}
    return Plan(
        [
            MergePatch(
                VIRTUAL_MACHINE_INSTANCES,
                objects.namespace(vmi),
                objects.name(vmi),
                patch,
                resource_version=objects.meta(vmi).get("resourceVersion"),
            ),
            Event(vm, "SuccessfulAdopt", f"adopted the virtual machine instance {objects.name(vmi)}"),
        ]
    )
