"""Whether a component's Deployment or DaemonSet is rolled out and ready, read from its status alone.

A Deployment is ready when its controller has seen the current spec (``observedGeneration``) and
every desired replica is both updated and ready; a DaemonSet when every node that should run it runs
an updated, ready pod. "Rolled out" asks only that the controller has seen the spec and created the
updated pods — a rollout can be complete while its new pods are still starting or crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkloadState:
    name: str
    ready: bool
    rolled_out: bool
    detail: str


def _int(value: Any) -> int:
    return int(value or 0)


def workload_state(obj: Mapping[str, Any]) -> WorkloadState:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    name = str(meta.get("name"))
    seen = _int(status.get("observedGeneration")) >= _int(meta.get("generation"))
    if obj.get("kind") == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        ready = _int(status.get("numberReady"))
        updated = _int(status.get("updatedNumberScheduled"))
        rolled_out = seen and updated == desired
        ok = rolled_out and ready == desired
        detail = f"{ready}/{desired} pods ready, {updated} updated"
        if seen and desired == 0:
            detail = "no node to run on"
    else:
        desired = _int((obj.get("spec") or {}).get("replicas", 1))
        ready = _int(status.get("readyReplicas"))
        updated = _int(status.get("updatedReplicas"))
        rolled_out = seen and updated == desired and _int(status.get("replicas")) == desired
        ok = rolled_out and ready == desired
        detail = f"{ready}/{desired} replicas ready, {updated} updated"
    if not seen:
        detail = "its controller has not seen the current spec yet"
    return WorkloadState(name, ok, rolled_out, detail)
