"""Per-container decisions that need no I/O beyond the container's own files: who it runs as,
where its termination message goes, and what that message is."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.node.env import ContainerConfigError

TERMINATION_MESSAGE_LIMIT = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


@dataclass(frozen=True)
class Identity:
    uid: int | None
    gid: int | None
    groups: list[int]
    no_new_privs: bool


def identity(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> Identity:
    """The user, groups and privilege setting of a container, the container's securityContext over the pod's.

    Without an image there is no image user: a container that asks for ``runAsNonRoot`` must name
    its ``runAsUser``, and a user without ``runAsGroup`` gets group 0, as a runtime gives a user
    the image does not know.
    """
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and not uid:
        raise ContainerConfigError(
            "container has runAsNonRoot and would run as root (the devcluster node agent has no image "
            "user to fall back on; set runAsUser)"
        )
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    if uid is not None and gid is None:
        gid = 0
    return Identity(
        uid=int(uid) if uid is not None else None,
        gid=int(gid) if gid is not None else None,
        groups=groups,
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
    )


def termination_log_mount(container_dir: Path, container: Mapping[str, Any]) -> dict[str, Any]:
    """The per-run file the container may write its termination message to, at terminationMessagePath."""
    return {
        "source": str(container_dir / "termination-log"),
        "target": container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH,
        "readonly": False,
        "sub_path": None,
        "nosuid": False,
    }


def termination_message(container: Mapping[str, Any], container_dir: Path, log_path: Path, exit_code: int) -> str:
    """What the container wrote to its termination log, or (FallbackToLogsOnError) its last log lines."""
    try:
        with (container_dir / "termination-log").open("rb") as fh:
            message = fh.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
    except OSError:
        message = ""
    if not message and exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        with contextlib.suppress(OSError):
            lines = log_path.read_bytes()[-2048:].decode(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)
    return message
