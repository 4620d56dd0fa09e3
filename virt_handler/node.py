"""The handler's node duties: heartbeat and schedulability label.

Every :data:`HEARTBEAT_INTERVAL` seconds the handler stamps ``kubevirt.io/heartbeat`` on its Node
and keeps ``kubevirt.io/schedulable=true``; on a clean stop it sets the label to ``false`` so no new
VMI lands on a node without a handler. The devices launcher pods request (``devices.kubevirt.io/tun``,
``…/kvm``) reach the Node's capacity through the kubelet, from the handler's device plugins
(:mod:`virt_handler.deviceplugin`), not from here.
"""

from __future__ import annotations

from typing import Any

HEARTBEAT_INTERVAL = 30.0
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"


def heartbeat_patch(now: str, schedulable: bool) -> dict[str, Any]:
    """Merge patch of the Node's metadata for one heartbeat (or the final one, unschedulable)."""
    return {
        "metadata": {
            "labels": {SCHEDULABLE_LABEL: "true" if schedulable else "false"},
            "annotations": {HEARTBEAT_ANNOTATION: now},
        }
    }
