"""How each interface reaches the pod network: the tap a privileged step prepared, or QEMU user networking.

Contract with the privileged step (virt-handler on a real node; not the launcher's job): in the pod's
network namespace, before the launcher syncs, create ``tap0`` (``ip tuntap add dev tap0 mode tap user 107
group 107``), attach it to the guest side of the masquerade set-up (a bridge or a /24 on the tap, NAT from
the pod IP to the guest address, the VMI's ports, or all, forwarded), and answer the guest's DHCP; the
pod must also let the launcher's user open ``/dev/net/tun`` (a device plugin, as KubeVirt's). The launcher
then attaches QEMU to ``tap0`` (``<interface type='ethernet'>``, ``managed='no'``) with the spec's MAC and
model. Without ``tap0`` (network mode auto) it falls back to QEMU user networking (10.0.2.15 behind
QEMU's NAT; ports are not forwarded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from kubevirt_types import VirtualMachineInstance
from virt_launcher.converter.context import NetAttachment
from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

NetworkMode = Literal["auto", "tap", "user"]
#: The tap the privileged step (virt-handler) creates in the pod's network namespace, owned by the launcher's user.
POD_TAP = "tap0"
SYS_CLASS_NET = Path("/sys/class/net")
DEV_TUN = Path("/dev/net/tun")


def tap_ready(name: str, sys_class_net: Path = SYS_CLASS_NET) -> bool:
    # tun_flags exists only for tun/tap devices.
    return (sys_class_net / name / "tun_flags").exists()


def tun_openable(dev_tun: Path = DEV_TUN) -> str | None:
    """None when this user can open the tun device (QEMU needs it to attach to a tap), else why not."""
    try:
        os.close(os.open(dev_tun, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"{dev_tun}: {exc.strerror}"
    return None


def attachments(
    vmi: VirtualMachineInstance,
    mode: NetworkMode,
    sys_class_net: Path = SYS_CLASS_NET,
    warnings: list[str] | None = None,
    dev_tun: Path = DEV_TUN,
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
        problem = tun_openable(dev_tun) if has_tap and mode != "user" else None
        if problem is not None:
            if mode == "tap":
                raise UnsupportedFieldError(f"{POD_TAP} is prepared but QEMU could not attach: {problem}", field=field)
            # Loud, not fatal: the guest still has a network, but the pod's ports do not reach it.
            if warnings is not None:
                warnings.append(f"{field}: {POD_TAP} is prepared but {problem}; using QEMU user networking")
            has_tap = False
        if mode == "user" or not has_tap:
            result[iface.name] = NetAttachment("user")
        else:
            result[iface.name] = NetAttachment("tap", POD_TAP)
    return result
