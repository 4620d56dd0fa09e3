"""A hostPath naming the kubelet's directory is the stand-in node's own directory; the handler's cert Secret mounts."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from devcluster.images import ImageStore
from devcluster.node.volumes import PodVolumes, node_path
from virt_operator.installconfig import HANDLER_SERVER_SECRET, InstallConfig
from virt_operator.manifests import components

pytestmark = pytest.mark.unit


class Secrets:
    def __init__(self, secrets: dict[str, dict[str, Any]]) -> None:
        self.secrets = secrets

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    async def token(self, *args: Any) -> Any:
        raise AssertionError("no tokens here")


def test_paths_under_the_kubelet_directory_map_to_the_node_root(tmp_path: Path) -> None:
    root = tmp_path / "nodes" / "node-1"
    assert node_path(Path("/var/lib/kubelet"), root) == root
    assert node_path(Path("/var/lib/kubelet/pods"), root) == root / "pods"
    assert node_path(Path("/var/lib/kubelet/pods/../plugins/"), root) == root / "plugins"
    assert node_path(Path("/var/lib/kubelet/../../etc"), root) == Path("/var/lib/kubelet/../../etc")
    assert node_path(Path("/var/lib/kubeletx"), root) == Path("/var/lib/kubeletx")
    assert node_path(Path("/dev/kvm"), root) == Path("/dev/kvm")


def test_the_handler_daemonset_mounts_its_node_and_its_certificates(tmp_path: Path) -> None:
    """virt-handler's pod from the real manifests, set up as a stand-in node sets up its volumes."""
    root = tmp_path / "nodes" / "node-1"
    config = InstallConfig()
    [handler] = [o for o in components(config) if o["kind"] == "DaemonSet"]
    pod = {
        "metadata": {"name": "virt-handler-abcde", "namespace": config.namespace, "uid": "uid-1"},
        "spec": handler["spec"]["template"]["spec"],
    }
    (root / "pods").mkdir(parents=True)  # the agent creates it when it starts
    data = {key: base64.b64encode(key.encode()).decode() for key in ("tls.crt", "tls.key", "ca.crt")}
    volumes = PodVolumes(
        pod, root / "pods" / "uid-1", Secrets({HANDLER_SERVER_SECRET: {"data": data}}), ImageStore(tmp_path / "i"), {}
    )
    asyncio.run(volumes.setup())
    mounts = {m["target"]: m for m in volumes.mounts(pod["spec"]["containers"][0], {})}
    assert mounts[config.kubelet_root]["source"] == str(root)
    assert not mounts[config.kubelet_root]["readonly"]
    certs = Path(mounts["/etc/podvirt/handler-server"]["source"])
    assert mounts["/etc/podvirt/handler-server"]["readonly"]
    for key in ("tls.crt", "tls.key", "ca.crt"):
        assert (certs / key).read_text() == key
        assert (certs / key).stat().st_mode & 0o777 == 0o400
