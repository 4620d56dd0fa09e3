"""devcluster figures: cold build of the cluster binaries, and `up` to ready with warm caches.

python -m benchmarks devcluster [--runs 3] [--nodes 1] [--cold-build]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _results
from devcluster.cluster import down, up
from devcluster.config import ClusterConfig, Ports


def _dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def cold_build() -> dict[str, float]:
    """Build the binaries into an empty podvirt cache with an empty Go build cache (module cache kept)."""
    with tempfile.TemporaryDirectory(prefix="podvirt-coldbuild-") as tmp:
        env = dict(os.environ, PODVIRT_CACHE=f"{tmp}/cache", GOCACHE=f"{tmp}/gocache")
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "devcluster.binaries"], env=env, check=True)
        seconds = time.monotonic() - start
        return {"cold_build_seconds": seconds, "binary_cache_mib": _dir_mib(Path(tmp) / "cache")}


def up_to_ready(runs: int, nodes: int) -> list[float]:
    times = []
    for i in range(runs):
        state = Path(tempfile.mkdtemp(prefix="podvirt-bench-cluster-", dir="/var/tmp"))
        cfg = ClusterConfig(
            state_dir=state,
            ports=Ports.random(),
            nodes=tuple(f"node-{n + 1}" for n in range(nodes)),
            pod_cidr=f"10.{150 + i}.0.0/16",
            bridge=f"pvbench{i}",
        )
        try:
            start = time.monotonic()
            up(cfg)
            times.append(time.monotonic() - start)
        finally:
            down(state)
            shutil.rmtree(state, ignore_errors=True)
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks devcluster")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--cold-build", action="store_true", help="also time a cold build (several minutes)")
    args = parser.parse_args(argv)
    figures: dict[str, object] = {}
    if args.cold_build:
        figures.update(cold_build())
    figures["up_to_ready_seconds"] = _results.summary(up_to_ready(args.runs, args.nodes))
    figures["nodes"] = args.nodes
    _results.write("devcluster", figures)
    return 0
