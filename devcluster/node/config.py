"""The node agent's settings, parsed from its command line (see ``python -m devcluster.node --help``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from devcluster.node.network import NetworkConfig
from kubevirt_types.quantity import Quantity, QuantityError


def _host_memory() -> str:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1])}Ki"
    return "1Gi"


@dataclass(frozen=True)
class NodeConfig:
    name: str
    kubeconfig: Path
    root: Path
    network: NetworkConfig
    image_store: Path
    cpu: str
    memory: str
    max_pods: int
    lease_seconds: int = 40
    shutdown_grace: float = 10.0
    log_format: str = "auto"

    def __post_init__(self) -> None:
        for what, value in (("--cpu", self.cpu), ("--memory", self.memory)):
            try:
                Quantity(value)
            except QuantityError as exc:
                raise ValueError(f"{what}: {exc}") from exc
        if self.max_pods < 1:
            raise ValueError("--max-pods must be at least 1")

    @property
    def host_ip(self) -> str:
        """The node's InternalIP: its gateway on the pod bridge, reachable from the host and every pod."""
        return str(self.network.gateway)

    @property
    def capacity(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devcluster.node",
        description=(
            "devcluster's stand-in node agent: a development substitute for a kubelet, NOT a kubelet. "
            "It registers a Node and runs the pods bound to it as local process groups, ignoring their images."
        ),
    )
    p.add_argument("--name", required=True, help="the Node's name (the client certificate must be system:node:NAME)")
    p.add_argument("--kubeconfig", required=True, type=Path, help="kubeconfig with this node's client certificate")
    p.add_argument("--root", required=True, type=Path, help="the node's directory (pods/, ipam/, processes.json)")
    p.add_argument("--pod-cidr", required=True, help="this node's pod CIDR, e.g. 10.244.0.0/24 (its .1 is the gateway)")
    p.add_argument(
        "--cluster-cidr", help="the CIDR all nodes' pod CIDRs come from (default: the /16 holding --pod-cidr)"
    )
    p.add_argument("--bridge", default="pvbr0", help="host bridge shared by all nodes of the cluster (<= 15 chars)")
    p.add_argument("--image-store", type=Path, help="local OCI image store for image volumes (default: ROOT/images)")
    p.add_argument("--cpu", default=str(os.cpu_count() or 1), help="cpu capacity (a Kubernetes quantity)")
    p.add_argument("--memory", default=_host_memory(), help="memory capacity, e.g. 20Gi")
    p.add_argument("--max-pods", type=int, default=110, help="pods capacity")
    p.add_argument("--lease-seconds", type=int, default=40, help="Lease duration; renewed every quarter of it")
    p.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="longest grace period given to pods when the agent stops"
    )
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto", help="auto: text on a terminal")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove what a previous run left (processes, namespaces, mounts) and exit",
    )
    return p


def from_args(args: argparse.Namespace) -> NodeConfig:
    pod_cidr = ipaddress.ip_network(args.pod_cidr)
    if not isinstance(pod_cidr, ipaddress.IPv4Network):
        raise ValueError("--pod-cidr must be an IPv4 network")
    if args.cluster_cidr:
        cluster = ipaddress.ip_network(args.cluster_cidr)
    else:
        cluster = pod_cidr.supernet(new_prefix=16) if pod_cidr.prefixlen > 16 else pod_cidr
    if not isinstance(cluster, ipaddress.IPv4Network):
        raise ValueError("--cluster-cidr must be an IPv4 network")
    root = args.root.resolve()
    return NodeConfig(
        name=args.name,
        kubeconfig=args.kubeconfig,
        root=root,
        network=NetworkConfig(args.bridge, pod_cidr, cluster),
        image_store=args.image_store or root / "images",
        cpu=args.cpu,
        memory=args.memory,
        max_pods=args.max_pods,
        lease_seconds=args.lease_seconds,
        shutdown_grace=args.shutdown_grace,
        log_format=args.log_format,
    )
