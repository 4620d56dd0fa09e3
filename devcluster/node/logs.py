"""Where a stand-in node keeps containers' output, since there is no ``kubectl logs`` without a kubelet API.

Each run of a container writes stdout and stderr, interleaved, to
``<node root>/pods/<pod uid>/containers/<container>/<restartCount>.log``. The files stay while the
pod exists (also after it finished) and go with the pod directory when the pod is deleted.
"""

from __future__ import annotations

from pathlib import Path


def log_path(node_root: Path, pod_uid: str, container: str, restart: int = 0) -> Path:
    return node_root / "pods" / pod_uid / "containers" / container / f"{restart}.log"


def container_log(node_root: Path, pod_uid: str, container: str, restart: int | None = None) -> str:
    """The output of one run of a container (the latest when ``restart`` is None); '' if there is none."""
    directory = node_root / "pods" / pod_uid / "containers" / container
    if restart is None:
        runs = sorted((int(p.stem) for p in directory.glob("*.log") if p.stem.isdigit()), reverse=True)
        if not runs:
            return ""
        restart = runs[0]
    try:
        return (directory / f"{restart}.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""
