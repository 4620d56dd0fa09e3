"""What a device plugin's ``Allocate`` answer gives a container: device nodes and bind mounts.

The stand-in node does the container runtime's half: each ``DeviceSpec`` becomes a device node of
the container's own (same major/minor as the host's, openable by the container's user, as a runtime
creates it) bind-mounted at the spec's container path; each ``Mount`` a bind mount of the host path.
Only character devices are accepted. Which devices a container gets is the device plugins' and
:mod:`devcluster.node.devicemanager`'s business.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from devcluster.node.devicemanager import Allocation


def device_mounts(allocation: Allocation | None, container_dir: Path) -> list[dict[str, Any]]:
    """Bind mounts that put the allocated devices into the container; a device the host lacks is an error."""
    if allocation is None:
        return []
    mounts = []
    for spec in allocation.devices:
        host_path, target = spec.host_path, spec.container_path or spec.host_path
        if not os.path.isabs(host_path) or not os.path.isabs(target):
            raise ValueError(f"device {host_path!r} -> {target!r}: both paths must be absolute")
        try:
            host = os.stat(host_path)
        except FileNotFoundError:
            raise FileNotFoundError(f"this node has no {host_path}") from None
        if not stat.S_ISCHR(host.st_mode):
            raise ValueError(f"{host_path} is not a character device")
        node = container_dir / "devices" / target.strip("/").replace("/", "-")
        node.parent.mkdir(parents=True, exist_ok=True)
        if not node.exists():
            os.mknod(node, stat.S_IFCHR | 0o666, host.st_rdev)
        node.chmod(0o666 if "w" in (spec.permissions or "rw") else 0o444)
        mounts.append({"source": str(node), "target": target, "readonly": False, "sub_path": None, "nosuid": False})
    for mount in allocation.mounts:
        if not os.path.isabs(mount.host_path) or not os.path.isabs(mount.container_path):
            raise ValueError(f"mount {mount.host_path!r} -> {mount.container_path!r}: both paths must be absolute")
        mounts.append(
            {
                "source": mount.host_path,
                "target": mount.container_path,
                "readonly": mount.read_only,
                "sub_path": None,
                "nosuid": True,
            }
        )
    return mounts
