"""Pod create -> Running on the stand-in node agent, measured through the real API.

python -m benchmarks node [--pods 30] [--interval 0.2] [--nodes 1] [--kubeconfig PATH]

Brings up a throw-away devcluster (unless --kubeconfig points at a running one), creates pods one
after the other (each gets the default service-account token volume, as admission adds it), and
times, per pod, from just before the create call to the watch event that shows phase Running.
The split into create -> bound (kube-scheduler) and bound -> Running (the node agent) is reported
too, with the number of pod updates the watch saw until Running.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _results
from devcluster.cluster import down, up
from devcluster.config import ClusterConfig, Ports
from devcluster.node.api import KubeClient, load_kubeconfig


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "node"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "bench.invalid/none", "command": ["sleep", "3600"]}],
        },
    }


async def _measure(kubeconfig: Path, pods: int, interval: float) -> dict[str, Any]:
    api = KubeClient(load_kubeconfig(kubeconfig))
    ns = f"bench-node-{secrets.token_hex(3)}"
    await api.request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    for _ in range(200):  # pods need the namespace's default ServiceAccount
        if await api.get_or_none(f"/api/v1/namespaces/{ns}/serviceaccounts/default") is not None:
            break
        await asyncio.sleep(0.1)
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    running: dict[str, float] = {}
    updates: dict[str, int] = {}
    listing = await api.get(f"/api/v1/namespaces/{ns}/pods")
    done = asyncio.Event()

    async def watch() -> None:
        params = {"resourceVersion": listing["metadata"]["resourceVersion"], "timeoutSeconds": "600"}
        async for event in api.watch(f"/api/v1/namespaces/{ns}/pods", params):
            now = time.monotonic()
            obj = event["object"]
            name = obj.get("metadata", {}).get("name")
            if event["type"] != "MODIFIED" or name is None:
                continue
            updates[name] = updates.get(name, 0) + 1
            if obj["spec"].get("nodeName"):
                bound.setdefault(name, now)
            if obj.get("status", {}).get("phase") == "Running" and name not in running:
                running[name] = now
                if len(running) == pods:
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    try:
        for i in range(pods):
            name = f"bench-{i:03d}"
            created[name] = time.monotonic()
            await api.request("POST", f"/api/v1/namespaces/{ns}/pods", body=_pod(name))
            await asyncio.sleep(interval)
        await asyncio.wait_for(done.wait(), timeout=120)
    finally:
        watcher.cancel()
        await api.request("DELETE", f"/api/v1/namespaces/{ns}")
        await api.aclose()
    total = [running[n] - created[n] for n in created]
    schedule = [bound[n] - created[n] for n in created if n in bound]
    agent = [running[n] - bound[n] for n in created if n in bound]
    return {
        "pods": pods,
        "interval_seconds": interval,
        "create_to_running_seconds": _results.summary(total),
        "create_to_bound_seconds": _results.summary(schedule),
        "bound_to_running_seconds": _results.summary(agent),
        "pod_updates_until_running": _results.summary([float(updates[n]) for n in created]),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between pod creations")
    parser.add_argument("--nodes", type=int, default=1, help="stand-in nodes of the throw-away cluster")
    parser.add_argument("--kubeconfig", type=Path, help="measure on this running cluster instead (admin)")
    args = parser.parse_args(argv)
    if args.kubeconfig is not None:
        figures = asyncio.run(_measure(args.kubeconfig, args.pods, args.interval))
    else:
        state = Path(tempfile.mkdtemp(prefix="podvirt-bench-node-", dir="/var/tmp"))
        cfg = ClusterConfig(
            state_dir=state,
            ports=Ports.random(),
            nodes=tuple(f"node-{n + 1}" for n in range(args.nodes)),
            pod_cidr="10.149.0.0/16",
            bridge=f"pvbn{secrets.token_hex(3)}",
        )
        try:
            cluster = up(cfg)
            figures = asyncio.run(_measure(cluster.kubeconfig, args.pods, args.interval))
        finally:
            down(state)
            shutil.rmtree(state, ignore_errors=True)
        figures["nodes"] = args.nodes
    _results.write("node", figures)
    return 0
