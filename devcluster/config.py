"""A development cluster's settings: state directory, ports, nodes and pod network.

Settings are chosen once, at the first ``up`` on a state directory, and saved in
``<state>/cluster.json`` so that later commands (``down``, ``status``, a restart) agree on them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/tmp/podvirt-devcluster")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Ports:
    apiserver: int = 6443
    etcd_client: int = 2379
    etcd_peer: int = 2380
    controller_manager: int = 10257
    scheduler: int = 10259

    @classmethod
    def random(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class ClusterConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    ports: Ports = field(default_factory=Ports)
    nodes: tuple[str, ...] = ("node-1",)
    pod_cidr: str = "10.244.0.0/16"
    # ClusterIPs. Per cluster: the service proxy's NAT rules live in the host's tables, so two clusters on
    # one machine must not hand out the same ClusterIP.
    service_cidr: str = "10.96.0.0/16"
    bridge: str = "pvbr0"
    node_cpu: str = "2"
    node_memory: str = "20Gi"
    node_max_pods: int = 250

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.pod_cidr)
        if net.prefixlen > 16:
            raise ValueError(f"pod CIDR {self.pod_cidr} must be /16 or wider: each node takes a /24 of it")
        services = ipaddress.ip_network(self.service_cidr)
        if services.version != 4 or not 12 <= services.prefixlen <= 24:
            raise ValueError(f"service CIDR {self.service_cidr} must be an IPv4 network from /12 to /24")
        if services.overlaps(net):
            raise ValueError(f"service CIDR {self.service_cidr} overlaps the pod CIDR {self.pod_cidr}")
        if len(self.bridge) > 15:
            raise ValueError(f"bridge name {self.bridge!r} is longer than Linux allows (15)")

    def node_pod_cidr(self, node: str) -> str:
        """The /24 of the cluster's pod CIDR that ``node`` assigns pod IPs from."""
        index = self.nodes.index(node)
        subnets = ipaddress.ip_network(self.pod_cidr).subnets(new_prefix=24)
        for i, subnet in enumerate(subnets):
            if i == index:
                return str(subnet)
        raise ValueError(f"pod CIDR {self.pod_cidr} has no /24 left for node {node}")

    @property
    def apiserver_service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP: the first address of the service CIDR."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def image_store(self) -> Path:
        return self.state_dir / "images"

    def node_root(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["nodes"] = list(self.nodes)
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> ClusterConfig:
        path = state_dir / "cluster.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no devcluster in {state_dir} (no {path.name}); run `devcluster up` first"
            ) from None
        return cls(
            state_dir=Path(data["state_dir"]),
            ports=Ports(**data["ports"]),
            nodes=tuple(data["nodes"]),
            pod_cidr=data["pod_cidr"],
            service_cidr=data.get("service_cidr", cls.service_cidr),  # state made before it was a setting
            bridge=data["bridge"],
            node_cpu=data["node_cpu"],
            node_memory=data["node_memory"],
            node_max_pods=data["node_max_pods"],
        )
