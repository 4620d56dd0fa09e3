"""The processes a development cluster runs, in start order, with their command lines and health checks."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devcluster import binaries, servicerules
from devcluster.config import ClusterConfig
from devcluster.pki import ADMIN, CONTROLLER_MANAGER, SCHEDULER, ClusterPKI, node_identity


@dataclass(frozen=True)
class Component:
    """One supervised child: how to start it and how to tell that it is ready."""

    name: str
    argv: tuple[str, ...]
    health_url: str | None = None
    # Readiness of the apiserver needs a client certificate; others answer anonymously.
    health_needs_admin: bool = False
    # Or: a command that exits 0 once the component is ready.
    health_command: tuple[str, ...] | None = None
    stop_timeout: float = 10.0


def _apiserver(cfg: ClusterConfig, pki: ClusterPKI) -> Component:
    crt, key = pki.apiserver_serving()
    sa_key, sa_pub = pki.service_account_keys()
    proxy_crt, proxy_key = pki.front_proxy_client()
    argv = (
        str(binaries.binary("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{cfg.ports.etcd_client}",
        f"--secure-port={cfg.ports.apiserver}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--tls-cert-file={crt}",
        f"--tls-private-key-file={key}",
        f"--client-ca-file={pki.path('ca.crt')}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa_pub}",
        f"--service-account-signing-key-file={sa_key}",
        f"--service-cluster-ip-range={cfg.service_cidr}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        f"--requestheader-client-ca-file={pki.path('front-proxy-ca.crt')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={proxy_crt}",
        f"--proxy-client-key-file={proxy_key}",
        # As on a real cluster: webhooks and aggregated APIs named by a Service are dialled at its
        # ClusterIP (the service proxy forwards it), not at an endpoint the apiserver picks.
        "--enable-aggregator-routing=false",
        # The kubernetes Service's endpoint would be 127.0.0.1, which EndpointSlices refuse.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    )
    return Component("kube-apiserver", argv, f"{cfg.server}/readyz", health_needs_admin=True, stop_timeout=5)


def _kubeconfig(cfg: ClusterConfig, pki: ClusterPKI, stem: str) -> Path:
    return cfg.state_dir / "kubeconfigs" / f"{stem}.kubeconfig"


def write_kubeconfigs(cfg: ClusterConfig, pki: ClusterPKI) -> None:
    pki.write_kubeconfig(ADMIN, cfg.server, cfg.admin_kubeconfig)
    for who in (CONTROLLER_MANAGER, SCHEDULER, *map(node_identity, cfg.nodes)):
        pki.write_kubeconfig(who, cfg.server, _kubeconfig(cfg, pki, who.file_stem))


def _controller_manager(cfg: ClusterConfig, pki: ClusterPKI) -> Component:
    kubeconfig = _kubeconfig(cfg, pki, CONTROLLER_MANAGER.file_stem)
    sa_key, _ = pki.service_account_keys()
    argv = (
        str(binaries.binary("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.ports.controller_manager}",
        f"--root-ca-file={pki.path('ca.crt')}",
        f"--service-account-private-key-file={sa_key}",
        f"--cluster-signing-cert-file={pki.path('ca.crt')}",
        f"--cluster-signing-key-file={pki.path('ca.key')}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={cfg.service_cidr}",
        # Nodes get their pod CIDR from the stand-in node agent, not from the controller.
        "--allocate-node-cidrs=false",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    )
    return Component("kube-controller-manager", argv, f"https://127.0.0.1:{cfg.ports.controller_manager}/healthz")


def _scheduler(cfg: ClusterConfig, pki: ClusterPKI) -> Component:
    kubeconfig = _kubeconfig(cfg, pki, SCHEDULER.file_stem)
    argv = (
        str(binaries.binary("kube-scheduler")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    )
    return Component("kube-scheduler", argv, f"https://127.0.0.1:{cfg.ports.scheduler}/healthz")


def _etcd(cfg: ClusterConfig) -> Component:
    data = cfg.state_dir / "etcd"
    peer = f"http://127.0.0.1:{cfg.ports.etcd_peer}"
    client = f"http://127.0.0.1:{cfg.ports.etcd_client}"
    argv = (
        str(binaries.binary("etcd")),
        "--name=devcluster",
        f"--data-dir={data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
        "--quota-backend-bytes=8589934592",
    )
    return Component("etcd", argv, f"{client}/health")


def node_agent(cfg: ClusterConfig, pki: ClusterPKI, node: str) -> Component:
    argv = (
        sys.executable,
        "-m",
        "devcluster.node",
        f"--name={node}",
        f"--kubeconfig={_kubeconfig(cfg, pki, node_identity(node).file_stem)}",
        f"--root={cfg.node_root(node)}",
        f"--pod-cidr={cfg.node_pod_cidr(node)}",
        f"--cluster-cidr={cfg.pod_cidr}",
        f"--bridge={cfg.bridge}",
        f"--image-store={cfg.image_store}",
        f"--cpu={cfg.node_cpu}",
        f"--memory={cfg.node_memory}",
        f"--max-pods={cfg.node_max_pods}",
    )
    return Component(f"node/{node}", argv, None, stop_timeout=30)


def service_proxy(cfg: ClusterConfig) -> Component:
    """ClusterIP Services for the cluster's pods and the host (see :mod:`devcluster.serviceproxy`)."""
    argv = (
        sys.executable,
        "-m",
        "devcluster.serviceproxy",
        f"--kubeconfig={cfg.admin_kubeconfig}",
        f"--bridge={cfg.bridge}",
        f"--service-cidr={cfg.service_cidr}",
    )
    # Ready once its table exists: it is created whole, with the first rules (and removed on stop).
    table = ("nft", "list", "table", "ip", servicerules.table_name(cfg.bridge))
    return Component("service-proxy", argv, health_command=table)


def control_plane(cfg: ClusterConfig, pki: ClusterPKI) -> list[Component]:
    return [_etcd(cfg), _apiserver(cfg, pki), _controller_manager(cfg, pki), _scheduler(cfg, pki)]


def all_components(cfg: ClusterConfig, pki: ClusterPKI) -> list[Component]:
    """The control plane, then (with nodes: without them no pod could be an endpoint, and the bridge
    would not be this cluster's) the service proxy, then the node agents."""
    proxy = [service_proxy(cfg)] if cfg.nodes else []
    return [*control_plane(cfg, pki), *proxy, *(node_agent(cfg, pki, n) for n in cfg.nodes)]


def healthy(component: Component, pki: ClusterPKI, timeout: float = 2.0) -> bool:
    """True when the component's health endpoint answers 200 (or its health command succeeds)."""
    if component.health_command is not None:
        try:
            proc = subprocess.run(component.health_command, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == 0
    if component.health_url is None:
        return True
    context: ssl.SSLContext | None = None
    if component.health_url.startswith("https"):
        context = ssl.create_default_context(cafile=str(pki.path("ca.crt")))
        if component.health_needs_admin:
            context.load_cert_chain(str(pki.path("admin.crt")), str(pki.path("admin.key")))
        else:
            # Controller-manager and scheduler serve self-signed certificates on loopback.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(component.health_url, timeout=timeout, context=context) as resp:  # noqa: S310
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
