"""Whether a VMI can take an action now (pause, console, ...), and on which node (pure).

These actions are carried out by the virt-handler of the VMI's node; what virt-api decides itself is
whether the request makes sense, so that a user hears "VMI is not running" from virt-api rather than
a connection error from a node.
"""

from __future__ import annotations

from typing import Any

from virt_api.status import StatusError, bad_request, conflict, not_found

VMIS = "virtualmachineinstances"


def _condition_true(vmi: dict[str, Any], kind: str) -> bool:
    for condition in (vmi.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition.get("status") == "True"
    return False


def node_for(vmi: dict[str, Any] | None, name: str, action: str) -> str:
    """The node whose handler carries out ``action`` on ``vmi``; a 404/409/400 Status if it cannot now."""
    if vmi is None:
        raise not_found(VMIS, name)
    status = vmi.get("status") or {}
    spec = vmi.get("spec") or {}
    devices = (spec.get("domain") or {}).get("devices") or {}
    node = status.get("nodeName")
    if status.get("phase") != "Running" or not node:
        raise conflict(VMIS, name, "VMI is not running")
    paused = _condition_true(vmi, "Paused")
    problem: StatusError | None = None
    if action == "pause":
        if paused:
            problem = conflict(VMIS, name, "VMI is already paused")
        elif spec.get("livenessProbe"):
            problem = conflict(VMIS, name, "a VMI with a liveness probe cannot be paused (the probe would fail)")
    elif action == "unpause" and not paused:
        problem = conflict(VMIS, name, "VMI is not paused")
    elif action == "softreboot" and paused:
        problem = conflict(VMIS, name, "VMI is paused; unpause it first")
    elif action == "guestosinfo" and not _condition_true(vmi, "AgentConnected"):
        problem = conflict(VMIS, name, "VMI does not have guest agent connected")
    elif action == "console" and devices.get("autoattachSerialConsole") is False:
        problem = bad_request("No serial consoles are present (spec.domain.devices.autoattachSerialConsole is false)")
    elif action == "vnc" and devices.get("autoattachGraphicsDevice") is False:
        problem = bad_request("No graphics devices are present (spec.domain.devices.autoattachGraphicsDevice is false)")
    if problem is not None:
        raise problem
    return str(node)
