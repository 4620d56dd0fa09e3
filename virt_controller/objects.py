"""Typed reads of the few fields virt-controller looks at on objects as the apiserver sends them (dicts).

Objects written by other components are read leniently: a field podvirt does not model never stops
the controller from acting on the fields it does know.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from podvirt_common.kube import parse_time

Obj = dict[str, Any]

FINAL_PHASES = frozenset({"Succeeded", "Failed"})


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def name(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def uid(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid") or "")


def key(obj: Mapping[str, Any]) -> str:
    """``namespace/name``, the way work queues and logs refer to an object."""
    return f"{namespace(obj)}/{name(obj)}"


def deleting(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def deletion_time(obj: Mapping[str, Any]) -> datetime | None:
    return parse_time(meta(obj).get("deletionTimestamp"))


def created_at(obj: Mapping[str, Any]) -> datetime | None:
    return parse_time(meta(obj).get("creationTimestamp"))


def labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return meta(obj).get("labels") or {}


def annotation_map(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return meta(obj).get("annotations") or {}


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    return list(meta(obj).get("finalizers") or [])


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """UID of the object's controlling owner, if it has one."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("status")
    return s if isinstance(s, Mapping) else {}


def spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, Mapping) else {}


def phase(vmi: Mapping[str, Any]) -> str:
    """The VMI's phase; an unset phase is Pending."""
    return str(status(vmi).get("phase") or "Pending")


def is_final(vmi: Mapping[str, Any]) -> bool:
    return phase(vmi) in FINAL_PHASES


def phase_time(vmi: Mapping[str, Any], wanted: str) -> datetime | None:
    """When the VMI last entered phase ``wanted``, if it did."""
    found = None
    for entry in status(vmi).get("phaseTransitionTimestamps") or []:
        if entry.get("phase") == wanted:
            found = parse_time(entry.get("phaseTransitionTimestamp"))
    return found
