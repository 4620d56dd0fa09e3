"""A VirtualMachine's one-word status (``kubectl get vm``), from the VM, its VMI and the time.

The first rule that holds wins, in this order: Terminating, Stopping, Migrating, Paused, Running, the
VMI's start problems (ErrImagePull, ImagePullBackOff, ErrorPvcNotFound, ErrorUnschedulable),
CrashLoopBackOff, Starting, Stopped, else Unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from podvirt_common.kube import parse_time

from . import objects
from .status import condition_is, find_condition

#: VMI condition Synchronized=False reasons that name a start problem, and the VM status each shows.
SYNC_PROBLEMS = {
    "ErrImagePull": "ErrImagePull",
    "ImagePullBackOff": "ImagePullBackOff",
    "FailedPvcNotFound": "ErrorPvcNotFound",
}


def _start_problem(vmi: Mapping[str, Any]) -> str | None:
    conditions = objects.status(vmi).get("conditions")
    sync = find_condition(conditions, "Synchronized")
    if sync is not None and sync.get("status") == "False" and sync.get("reason") in SYNC_PROBLEMS:
        return SYNC_PROBLEMS[str(sync["reason"])]
    scheduled = find_condition(conditions, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "ErrorUnschedulable"
    return None


def _migrating(vmi: Mapping[str, Any]) -> bool:
    state = objects.status(vmi).get("migrationState") or {}
    return bool(state.get("startTimestamp")) and not state.get("completed") and not state.get("failed")


def _backing_off(strategy: str, start_failure: Mapping[str, Any] | None, now: datetime) -> bool:
    if strategy not in ("Always", "RerunOnFailure") or not start_failure:
        return False
    retry_after = parse_time(start_failure.get("retryAfterTimestamp"))
    return retry_after is not None and retry_after > now


def _set_to_start(vm: Mapping[str, Any], strategy: str) -> bool:
    requests = objects.status(vm).get("stateChangeRequests") or []
    start_requested = bool(requests) and requests[0].get("action") == "Start"
    previous = objects.status(vm).get("runStrategy")
    return (
        strategy == "Always"
        or (strategy in ("Manual", "RerunOnFailure") and start_requested)
        or (strategy in ("RerunOnFailure", "Once") and previous != strategy)
    )


def printable_status(
    vm: Mapping[str, Any],
    vmi: Mapping[str, Any] | None,
    strategy: str,
    start_failure: Mapping[str, Any] | None,
    now: datetime,
) -> str:
    if objects.deleting(vm):
        return "Terminating"
    if vmi is not None and not objects.is_final(vmi):
        stop_requested = any(
            r.get("action") == "Stop" and r.get("uid") in (None, "", objects.uid(vmi))
            for r in objects.status(vm).get("stateChangeRequests") or []
        )
        if objects.deleting(vmi) or stop_requested:
            return "Stopping"
        phase = objects.phase(vmi)
        if phase == "Running":
            if _migrating(vmi):
                return "Migrating"
            if condition_is(objects.status(vmi).get("conditions"), "Paused"):
                return "Paused"
            return "Running"
        if phase == "Unknown":
            return "Unknown"
        return _start_problem(vmi) or "Starting"
    if _backing_off(strategy, start_failure, now):
        return "CrashLoopBackOff"
    if vmi is None and _set_to_start(vm, strategy):
        return "Starting"
    return "Stopped"
