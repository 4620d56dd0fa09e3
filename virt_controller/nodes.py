"""Whether a VMI's node still answers for it: KubeVirt's "node unresponsive" rule, pure.

A node is unresponsive when, for longer than ``timeout`` seconds (default 300, KubeVirt's):

- its virt-handler has not stamped its heartbeat (the Node annotation ``kubevirt.io/heartbeat``, renewed
  every 30 s by a running handler), or
- its Ready condition has not been True (NotReady or Unknown since the condition's lastTransitionTime:
  the node's kubelet stopped renewing its Lease and the node lifecycle controller noticed), or
- its Node object is gone (then at once: there is no node to come back).

The VMIs that ran there are then Failed with reason ``NodeUnresponsive`` and their launcher pods are
deleted without waiting for the node (see :func:`virt_controller.vmi.reconcile_vmi`); a VM whose run
strategy restarts it gets a new VMI, which the scheduler places on a node that works. A Node without a
heartbeat annotation is judged by its Ready condition alone (no handler ever ran there).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from podvirt_common.kube import format_time, parse_time

from . import names, objects

Obj = dict[str, Any]
DEFAULT_TIMEOUT = 300.0


def slim_node(node: Mapping[str, Any]) -> Obj:
    """Of a Node, what the rule reads: its name, heartbeat and Ready condition."""
    meta = objects.meta(node)
    ready = next((c for c in objects.status(node).get("conditions") or [] if c.get("type") == "Ready"), None)
    heartbeat = (meta.get("annotations") or {}).get(names.HEARTBEAT_ANNOTATION)
    return {
        "metadata": {
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {names.HEARTBEAT_ANNOTATION: heartbeat} if heartbeat else {},
        },
        "status": {"conditions": [ready] if ready else []},
    }


def _deadlines(node: Mapping[str, Any], timeout: float) -> list[tuple[datetime, str]]:
    """When each sign of life runs out, and what is said then."""
    found = []
    beat = parse_time((objects.meta(node).get("annotations") or {}).get(names.HEARTBEAT_ANNOTATION))
    if beat is not None:
        found.append(
            (beat + timedelta(seconds=timeout), f"its virt-handler's last heartbeat was at {format_time(beat)}")
        )
    ready = next((c for c in objects.status(node).get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") != "True":
        since = parse_time(ready.get("lastTransitionTime"))
        if since is not None:
            found.append(
                (
                    since + timedelta(seconds=timeout),
                    f"it has been Ready={ready.get('status')} since {format_time(since)}",
                )
            )
    return found


def unresponsive(node_name: str, node: Mapping[str, Any] | None, now: datetime, timeout: float) -> str | None:
    """Why node ``node_name`` (its slim Node, None if there is none) counts as unresponsive at ``now``;
    None while it does not."""
    if node is None:
        return f"node {node_name} is gone"
    expired = [why for deadline, why in _deadlines(node, timeout) if now >= deadline]
    if expired:
        return f"node {node_name} is unresponsive: {'; '.join(expired)} (timeout {timeout:g} s)"
    return None


def recheck_after(node: Mapping[str, Any] | None, now: datetime, timeout: float) -> float | None:
    """Seconds until the node could become unresponsive with no further news of it (None: never)."""
    if node is None:
        return None
    pending = [(deadline - now).total_seconds() for deadline, _ in _deadlines(node, timeout) if deadline > now]
    return max(1.0, min(pending)) if pending else None
