"""Host devices for containers that request them as extended resources.

On a real node, KubeVirt's handler serves device plugins (``devices.kubevirt.io/tun``, ``…/kvm``)
whose ``Allocate`` answer makes the kubelet put the device into the container. The stand-in node
does the kubelet's half here: a container that requests one of these resources gets its own
device node (same major/minor as the host's, openable by the container's user, as a runtime
creates it) bind-mounted at the device's path. Only these known devices are handed out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEVICES: Mapping[str, str] = {
    "devices.kubevirt.io/tun": "/dev/net/tun",
    "devices.kubevirt.io/kvm": "/dev/kvm",
    "devices.kubevirt.io/vhost-net": "/dev/vhost-net",
}


def requested(container: Mapping[str, Any]) -> list[str]:
    """The device resources ``container`` asks for (in its limits or requests)."""
    resources = container.get("resources") or {}
    wanted = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    return [name for name in DEVICES if name in wanted]


def device_mounts(container: Mapping[str, Any], container_dir: Path) -> list[dict[str, Any]]:
    """Bind mounts that give ``container`` the devices it requested; a device the host lacks is an error."""
    mounts = []
    for resource in requested(container):
        host_path = DEVICES[resource]
        try:
            host = os.stat(host_path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{resource}: this node has no {host_path}") from None
        if not stat.S_ISCHR(host.st_mode):
            raise ValueError(f"{resource}: {host_path} is not a character device")
        node = container_dir / "devices" / host_path.strip("/").replace("/", "-")
        node.parent.mkdir(parents=True, exist_ok=True)
        if not node.exists():
            os.mknod(node, stat.S_IFCHR | 0o666, host.st_rdev)
        node.chmod(0o666)
        mounts.append({"source": str(node), "target": host_path, "readonly": False, "sub_path": None, "nosuid": False})
    return mounts
