"""virt-api's certificates rotate without a manual step: a due certificate and an ageing CA are replaced in
the Secret, served, and published as caBundle while the apiserver keeps reaching virt-api."""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from devcluster.cluster import Cluster
from podvirt_common import certs
from virt_api.certificates import Bundle, encode
from virt_api.testing import VirtApiProcess

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def virt_api(cluster: Cluster) -> Iterator[VirtApiProcess]:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    process = VirtApiProcess(
        cluster.kubeconfig,
        args=("--sync-interval=1",),
        log_path=cluster.state_dir / "logs" / "virt-api-certificates.log",
    )
    with process:
        cluster.kubectl("create", "namespace", "api-certificates", check=False)
        yield process
    cluster.kubectl("delete", "namespace", "api-certificates", "--wait=false", check=False)


def _served(virt_api: VirtApiProcess) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", virt_api.port))
    return x509.load_pem_x509_certificate(pem.encode())


def _ca_bundle(cluster: Cluster, kind: str, name: str) -> list[x509.Certificate]:
    obj = json.loads(cluster.kubectl("get", kind, name, "-o", "json").stdout)
    raw = obj["webhooks"][0]["clientConfig"]["caBundle"] if "webhooks" in obj else obj["spec"]["caBundle"]
    return x509.load_pem_x509_certificates(base64.b64decode(raw))


def test_an_ageing_ca_and_a_wrong_certificate_are_replaced_and_published(
    cluster: Cluster, virt_api: VirtApiProcess
) -> None:
    # Plant what an old installation would leave: a CA with a day to live and a certificate for other names.
    before = _served(virt_api)
    old_ca = certs.new_ca("virt-api-ca", days=1)
    stale = certs.issue(old_ca, "virt-api", hosts=("stale.example",), server=True, days=0, hours=12)
    secret = encode(Bundle((old_ca,), stale), "kubevirt", "virt-api-certs")
    cluster.kubectl("replace", "-f", "-", input=json.dumps(secret))

    _wait(lambda: _served(virt_api) not in (before, stale.cert), "a new serving certificate")
    served = _served(virt_api)
    published = _ca_bundle(cluster, "validatingwebhookconfiguration", "virt-api-validator")
    assert len(published) == 2 and old_ca.cert in published, "the successor CA is published beside the old one"
    successor = next(ca for ca in published if ca != old_ca.cert)
    served.verify_directly_issued_by(successor)  # the old CA would not outlive a fresh certificate
    assert served.not_valid_after_utc <= successor.not_valid_after_utc
    for kind, name in (
        ("mutatingwebhookconfiguration", "virt-api-mutator"),
        ("apiservice", "v1.subresources.kubevirt.io"),
    ):
        _wait(lambda k=kind, n=name: len(_ca_bundle(cluster, k, n)) == 2, f"the caBundle of {kind} {name}")

    # The apiserver reaches virt-api with the new chain: webhooks and the aggregated API both work.
    virt_api.wait_ready(60)
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "after-rotation", "namespace": "api-certificates"},
        "spec": {"template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}},
    }
    created = cluster.kubectl("create", "-f", "-", input=json.dumps(vm), check=False)
    assert created.returncode == 0, created.stderr
    stored = json.loads(cluster.kubectl("get", "vm", "after-rotation", "-n", "api-certificates", "-o", "json").stdout)
    assert stored["spec"]["runStrategy"] == "Halted", "defaulted by the webhook over the rotated certificate"
    assert cluster.kubectl("get", "--raw", "/apis/subresources.kubevirt.io/v1/healthz").returncode == 0
