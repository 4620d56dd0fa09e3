"""The KubeVirt status vocabulary (KubeVirt's phases and condition reasons) and condition bookkeeping.

Each reconcile states the three conditions afresh; :func:`conditions` keeps a condition's
``lastTransitionTime`` while its status stays the same, so rewriting an unchanged status changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from podvirt_common.kube import format_time

Obj = dict[str, Any]

AVAILABLE, PROGRESSING, DEGRADED = "Available", "Progressing", "Degraded"
CONDITION_TYPES = (AVAILABLE, PROGRESSING, DEGRADED)

# Phases (KubeVirt's values).
DEPLOYING, DEPLOYED, DELETING, DELETED = "Deploying", "Deployed", "Deleting", "Deleted"

# Reasons: KubeVirt's where it has one, podvirt's own otherwise.
ALL_COMPONENTS_READY = "AllComponentsReady"
DEPLOYMENT_IN_PROGRESS = "DeploymentInProgress"
UPDATE_IN_PROGRESS = "UpdateInProgress"
DELETION_IN_PROGRESS = "DeletionInProgress"
DEPLOYMENT_FAILED = "DeploymentFailed"
DELETION_FAILED = "DeletionFailed"
EXISTING_DEPLOYMENT = "ExistingDeployment"
COMPONENTS_NOT_READY = "ComponentsNotReady"
COMPONENT_UNAVAILABLE = "ComponentUnavailable"
DELETION_BLOCKED = "DeletionBlocked"
DELETION_COMPLETED = "DeletionCompleted"
INVALID_SPEC = "InvalidSpec"
RENDER_FAILED = "RenderFailed"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def conditions(old: Sequence[Mapping[str, Any]] | None, new: Sequence[Condition], now: datetime) -> list[Obj]:
    """``new`` as status conditions; a condition whose status did not change keeps its transition time,
    one that did not change at all keeps its probe time too. Conditions not in ``new`` are dropped."""
    previous = {str(c.get("type")): c for c in old or ()}
    stamp = format_time(now)
    result = []
    for cond in new:
        status = "True" if cond.status else "False"
        before = previous.get(cond.type) or {}
        same_status = before.get("status") == status
        unchanged = same_status and before.get("reason") == cond.reason and before.get("message") == cond.message
        result.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastProbeTime": (before.get("lastProbeTime") or stamp) if unchanged else stamp,
                "lastTransitionTime": (before.get("lastTransitionTime") or stamp) if same_status else stamp,
            }
        )
    return result


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    """The condition of that type in ``status`` (empty if absent)."""
    for cond in (status or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def with_failure(status: Mapping[str, Any] | None, reason: str, message: str, now: datetime) -> Obj:
    """``status`` with Degraded set True for a failure (a refused write); the other conditions stay."""
    old = dict(status or {})
    kept = [c for c in old.get("conditions") or () if c.get("type") != DEGRADED]
    degraded = conditions(old.get("conditions"), [Condition(DEGRADED, True, reason, message)], now)
    return {**old, "conditions": [*kept, *degraded]}
