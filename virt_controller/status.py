"""Small helpers for status as it goes on the wire: conditions that keep their transition time, and the
status patch that writes only what changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from podvirt_common.kube import format_time, merge_patch_for

Obj = dict[str, Any]

#: Ready=False of a VMI that does not run yet, shown the same way on the VMI and on its VM.
NOT_RUNNING_REASON = "NotRunning"
NOT_RUNNING_MESSAGE = "the VMI is not running yet"


def condition(type_: str, status: str, now: datetime, reason: str | None = None, message: str | None = None) -> Obj:
    """A condition as the apiserver stores it (no lastProbeTime, which podvirt does not track)."""
    cond: Obj = {"type": type_, "status": status, "lastTransitionTime": format_time(now)}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def merge_conditions(
    observed: Iterable[Mapping[str, Any]] | None, owned: Iterable[str], wanted: list[Obj]
) -> list[Obj]:
    """The condition list after setting ``wanted`` and dropping the other ``owned`` types; conditions
    of types the caller does not own stay as they are. A wanted condition whose status did not change
    keeps its old lastTransitionTime (and so does not count as a change)."""
    previous = {c.get("type"): dict(c) for c in observed or ()}
    owned_types = set(owned) | {c["type"] for c in wanted}
    result = [c for t, c in previous.items() if t not in owned_types]
    for cond in wanted:
        old = previous.get(cond["type"])
        if old is not None and old.get("status") == cond["status"] and old.get("lastTransitionTime"):
            result.append({**cond, "lastTransitionTime": old["lastTransitionTime"]})
        else:
            result.append(cond)
    order = {t: i for i, t in enumerate(previous)}
    result.sort(key=lambda c: order.get(c["type"], len(order)))
    return result


def find_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None


def condition_is(conditions: Iterable[Mapping[str, Any]] | None, type_: str, status: str = "True") -> bool:
    cond = find_condition(conditions, type_)
    return cond is not None and cond.get("status") == status


def status_patch(observed: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> Obj:
    """The merge patch of ``status`` for the keys in ``wanted`` (a value of None removes the key);
    keys that are not in ``wanted`` belong to someone else and are left alone."""
    observed = observed or {}
    before = {k: observed[k] for k in wanted if k in observed}
    after = {k: v for k, v in wanted.items() if v is not None}
    return merge_patch_for(before, after)
