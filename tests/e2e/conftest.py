"""podvirt running on the session's devcluster: CRDs, virt-controller and one virt-handler per node
(``podvirt``), and for the modules that ask for it, virt-api behind the apiserver (``virt_api``).

The components run as processes on this machine (their own process groups, logs under the cluster's
state directory), stopped by the fixture that started them even when tests fail. The launcher pods
are real pods, bound by the real scheduler and run by the stand-in node agents; the guests are real
QEMU (TCG) guests booted from the tiny test image, imported into the nodes' image store.

The handlers are host processes here, not DaemonSet pods, so virt-api cannot find them the way it
finds them in an installation (the pod labelled ``kubevirt.io=virt-handler`` on the node, at its pod
IP); it is told where each node's handler listens with ``--handler-endpoint NODE=127.0.0.1:PORT``, a
flag meant for exactly this. Everything else on that path is real: mutual TLS with a client
certificate signed by the CA the handlers trust, the handler's certificate checked for the name
``virt-handler``, the apiserver's aggregation layer and virt-api's SubjectAccessReviews.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_env import Podvirt
from vm.harness import build_guest_image

from devcluster.cluster import Cluster
from devcluster.config import free_port
from devcluster.images import import_image
from podvirt_common import certs
from podvirt_common.kube import Kube
from virt_api.testing import VirtApiProcess
from virt_handler.deviceplugin import TUN_RESOURCE

ROOT = Path(__file__).resolve().parents[2]
TINY_IMAGE = "registry.podvirt.test/tiny-containerdisk:1"


@pytest.fixture(scope="session")
def tiny_containerdisk(cluster: Cluster) -> str:
    """The tiny guest's containerDisk, imported into the stand-in nodes' image store."""
    image_dir = build_guest_image()
    import_image(cluster.config.image_store, image_dir / "oci" / "containerdisk", TINY_IMAGE)
    return TINY_IMAGE


@pytest.fixture(scope="module")
def podvirt(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podvirt]:
    """podvirt's components for one test module, stopped after it: other tests on the session's
    cluster start controllers of their own, which must not meet this one's."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    deadline = time.monotonic() + 60
    for crd in ("virtualmachines", "virtualmachineinstances", "virtualmachineinstancereplicasets"):
        # A CRD just created may not have conditions yet, which `kubectl wait` reports as an error.
        while (
            cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{crd}.kubevirt.io", "--timeout=10s", check=False
            ).returncode
            != 0
        ):
            assert time.monotonic() < deadline, f"CRD {crd} not established"
            time.sleep(0.5)
    pki = tmp_path_factory.mktemp("podvirt-pki")
    ca = certs.new_ca("test-podvirt-internal-ca")
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    certs.issue(ca, "virt-handler", hosts=("virt-handler", "127.0.0.1", "localhost"), server=True).write(
        pki / "handler.crt", pki / "handler.key"
    )
    certs.issue(ca, "virt-api", client=True).write(pki / "client.crt", pki / "client.key")
    client_context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    client_context.load_cert_chain(pki / "client.crt", pki / "client.key")

    # What virt-handler's init container does in the DaemonSet: probe QEMU once for the node's launchers.
    capabilities = cluster.state_dir / "qemu-capabilities"
    subprocess.run([sys.executable, "-m", "virt_launcher.capabilities", str(capabilities)], check=True)
    kubeconfig = str(cluster.kubeconfig)
    running = Podvirt(cluster, Kube.connect(kubeconfig), {}, client_context, pki=pki)
    try:
        running.start(
            "virt-controller",
            [
                sys.executable,
                "-m",
                "virt_controller",
                f"--kubeconfig={kubeconfig}",
                "--use-emulation",
                "--no-leader-elect",
                "--metrics-address=127.0.0.1:0",
                "--log-format=text",
            ],
        )
        for node in cluster.nodes:
            port = free_port()
            running.handler_ports[node] = port
            running.start(
                f"virt-handler-{node}",
                [
                    sys.executable,
                    "-m",
                    "virt_handler",
                    f"--node-name={node}",
                    f"--kubeconfig={kubeconfig}",
                    f"--kubelet-root={cluster.config.node_root(node)}",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    f"--tls-cert={pki / 'handler.crt'}",
                    f"--tls-key={pki / 'handler.key'}",
                    f"--client-ca={pki / 'ca.crt'}",
                    f"--qemu-capabilities-dir={capabilities}",
                    "--metrics-address=127.0.0.1:0",
                    "--log-format=text",
                ],
            )
        for node in cluster.nodes:
            running.wait_handler(node)
        cluster.wait_allocatable(TUN_RESOURCE)  # the handlers' device plugins registered
        for record in running.records:
            assert record.alive(), f"{record.name} exited at start:\n{running.log_tail(record.name)}"
        yield running
    finally:
        for record in running.records:
            record.stop(15)
        running.kube.close()


@pytest.fixture(scope="module")
def virt_api(podvirt: Podvirt) -> Iterator[VirtApiProcess]:
    """virt-api serving subresources.kubevirt.io through the apiserver, reaching this module's handlers."""
    assert podvirt.pki is not None
    args = (
        f"--handler-cert={podvirt.pki / 'client.crt'}",
        f"--handler-key={podvirt.pki / 'client.key'}",
        f"--handler-ca={podvirt.pki / 'ca.crt'}",
        *(f"--handler-endpoint={node}=127.0.0.1:{port}" for node, port in podvirt.handler_ports.items()),
    )
    process = VirtApiProcess(
        podvirt.cluster.kubeconfig, args=args, log_path=podvirt.cluster.state_dir / "logs" / "virt-api-e2e.log"
    )
    with process:
        yield process
