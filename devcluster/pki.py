"""The development cluster's PKI: CAs, serving and client certificates, kubeconfigs.

Everything lives under ``<state>/pki``; an existing file is reused, so a cluster restarted on
the same state directory keeps its identities (and its etcd data stays readable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from podvirt_common import certs

APISERVER_HOSTS = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class ClientIdentity:
    """A user the cluster's components or people authenticate as (by client certificate)."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")


def node_identity(node: str) -> ClientIdentity:
    """The identity Node authorization and NodeRestriction expect of a node agent."""
    return ClientIdentity(f"node-{node}", f"system:node:{node}", ("system:nodes",))


class ClusterPKI:
    """Creates (once) and hands out the cluster's certificates as file paths."""

    def __init__(self, state_dir: Path, service_ip: str = "10.96.0.1") -> None:
        """``service_ip``: the ``kubernetes`` Service's ClusterIP, one more name of the apiserver."""
        self.dir = state_dir / "pki"
        self.service_ip = service_ip
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)

    def path(self, name: str) -> Path:
        return self.dir / name

    def _ca(self, stem: str, common_name: str) -> certs.KeyPair:
        crt, key = self.path(f"{stem}.crt"), self.path(f"{stem}.key")
        if crt.exists() and key.exists():
            return certs.KeyPair.load(crt, key)
        pair = certs.new_ca(common_name)
        pair.write(crt, key)
        return pair

    @property
    def ca(self) -> certs.KeyPair:
        return self._ca("ca", "podvirt-devcluster-ca")

    @property
    def front_proxy_ca(self) -> certs.KeyPair:
        return self._ca("front-proxy-ca", "podvirt-devcluster-front-proxy-ca")

    def _leaf(self, stem: str, ca: certs.KeyPair, common_name: str, **kwargs: object) -> tuple[Path, Path]:
        crt, key = self.path(f"{stem}.crt"), self.path(f"{stem}.key")
        if not (crt.exists() and key.exists()):
            certs.issue(ca, common_name, **kwargs).write(crt, key)  # type: ignore[arg-type]
        return crt, key

    def apiserver_serving(self) -> tuple[Path, Path]:
        hosts = (*APISERVER_HOSTS, self.service_ip)
        return self._leaf("apiserver", self.ca, "kube-apiserver", hosts=hosts, server=True)

    def front_proxy_client(self) -> tuple[Path, Path]:
        return self._leaf("front-proxy-client", self.front_proxy_ca, "front-proxy-client", client=True)

    def client(self, who: ClientIdentity) -> tuple[Path, Path]:
        return self._leaf(who.file_stem, self.ca, who.user, organizations=who.groups, client=True)

    def service_account_keys(self) -> tuple[Path, Path]:
        """RSA key pair that signs and verifies service-account tokens."""
        key, pub = self.path("sa.key"), self.path("sa.pub")
        if not (key.exists() and pub.exists()):
            private = certs.new_rsa_key()
            certs.write_private(key, certs.key_pem(private))
            pub.write_bytes(certs.public_key_pem(private))
        return key, pub

    def ensure_all(self, nodes: tuple[str, ...]) -> None:
        self.apiserver_serving()
        self.front_proxy_client()
        self.service_account_keys()
        for who in (ADMIN, CONTROLLER_MANAGER, SCHEDULER, *map(node_identity, nodes)):
            self.client(who)

    def write_kubeconfig(self, who: ClientIdentity, server: str, path: Path) -> Path:
        crt, key = self.client(who)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {"server": server, "certificate-authority": str(self.path("ca.crt"))},
                }
            ],
            "users": [{"name": who.user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
            "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": who.user}}],
            "current-context": "devcluster",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        certs.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
        return path
