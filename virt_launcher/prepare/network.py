"""How each interface reaches the pod network: the tap a privileged step prepared, or QEMU user networking."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kubevirt_types import VirtualMachineInstance
from virt_launcher.converter.context import NetAttachment
from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

NetworkMode = Literal["auto", "tap", "user"]
#: The tap the privileged step (virt-handler) creates in the pod's network namespace, owned by the launcher's user.
POD_TAP = "tap0"
SYS_CLASS_NET = Path("/sys/class/net")


def tap_ready(name: str, sys_class_net: Path = SYS_CLASS_NET) -> bool:
    # tun_flags exists only for tun/tap devices.
    return (sys_class_net / name / "tun_flags").exists()


def attachments(
    vmi: VirtualMachineInstance, mode: NetworkMode, sys_class_net: Path = SYS_CLASS_NET
) -> dict[str, NetAttachment]:
    networks = {n.name: n for n in vmi.spec.networks or []}
    result: dict[str, NetAttachment] = {}
    pod_interfaces = 0
    for i, iface in enumerate(vmi.spec.domain.devices.interfaces or []):
        network = networks.get(iface.name)
        if network is None or network.pod is None:
            continue  # the converter names the field at fault
        field = f"spec.domain.devices.interfaces[{i}]"
        pod_interfaces += 1
        if pod_interfaces > 1:
            raise InvalidSpecError("only one interface may use the pod network", field=field)
        has_tap = tap_ready(POD_TAP, sys_class_net)
        if mode == "tap" and not has_tap:
            raise UnsupportedFieldError(f"the pod has no prepared {POD_TAP} (network mode tap)", field=field)
        if mode == "user" or not has_tap:
            result[iface.name] = NetAttachment("user")
        else:
            result[iface.name] = NetAttachment("tap", POD_TAP)
    return result
