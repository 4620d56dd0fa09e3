"""The handler's node duties: heartbeat, schedulability label and the device resources VMs use.

Every :data:`HEARTBEAT_INTERVAL` seconds the handler stamps ``kubevirt.io/heartbeat`` on its Node
and keeps ``kubevirt.io/schedulable=true``; on a clean stop it sets the label to ``false`` so no new
VMI lands on a node without a handler. Launcher pods request ``devices.kubevirt.io/tun`` (the tap
device the handler prepares) and, when the node has working KVM, ``devices.kubevirt.io/kvm``;
the handler advertises both as node capacity, as KubeVirt's device plugins do.
"""

from __future__ import annotations

from typing import Any

HEARTBEAT_INTERVAL = 30.0
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"
KVM_RESOURCE = "devices.kubevirt.io/kvm"
TUN_RESOURCE = "devices.kubevirt.io/tun"
DEVICE_COUNT = "1k"  # shared devices: a generous count, as KubeVirt's device plugins report


def heartbeat_patch(now: str, schedulable: bool) -> dict[str, Any]:
    """Merge patch of the Node's metadata for one heartbeat (or the final one, unschedulable)."""
    return {
        "metadata": {
            "labels": {SCHEDULABLE_LABEL: "true" if schedulable else "false"},
            "annotations": {HEARTBEAT_ANNOTATION: now},
        }
    }


def capacity_patch(kvm: bool) -> dict[str, Any]:
    """Merge patch of the Node's status advertising the devices VMs can request."""
    resources = {TUN_RESOURCE: DEVICE_COUNT}
    if kvm:
        resources[KVM_RESOURCE] = DEVICE_COUNT
    return {"status": {"capacity": dict(resources), "allocatable": dict(resources)}}
