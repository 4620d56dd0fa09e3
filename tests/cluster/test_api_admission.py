"""virt-api's admission webhooks through the real apiserver: defaults visible, each rule refusing by field path,
deletion still working while virt-api is down, and no fuzzed request making it fail.

virt-api runs as a subprocess registered in the session cluster for this module only (its registration
is removed when it stops, so no other module meets a fail-closed webhook).
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings

from devcluster.cluster import Cluster
from virt_api.testing import VirtApiProcess

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NS = "api-admission"


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(*args, check=False, input=input)


@pytest.fixture(scope="module")
def virt_api(cluster: Cluster) -> Iterator[VirtApiProcess]:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    process = VirtApiProcess(cluster.kubeconfig, log_path=cluster.state_dir / "logs" / "virt-api-admission.log")
    process.start()
    kubectl(cluster, "create", "namespace", NS)
    try:
        yield process
    finally:
        process.stop()
        kubectl(cluster, "delete", "namespace", NS, "--wait=false")
        kubectl(cluster, "delete", "kubevirt", "--all", "-n", "kubevirt", "--wait=false")


def create(cluster: Cluster, document: dict[str, Any] | str) -> subprocess.CompletedProcess[str]:
    text = document if isinstance(document, str) else json.dumps(document)
    return kubectl(cluster, "create", "-n", NS, "-f", "-", input=text)


def get(cluster: Cluster, kind: str, name: str, namespace: str = NS) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
    return loaded


def examples() -> list[Path]:
    return [
        p for p in sorted((ROOT / "examples").glob("*.yaml")) if p.name not in ("migration.yaml", "kubevirt-cr.yaml")
    ]


@pytest.mark.parametrize("path", examples(), ids=lambda p: p.name)
def test_every_example_is_admitted_with_its_defaults_visible(
    cluster: Cluster, virt_api: VirtApiProcess, path: Path
) -> None:
    document = yaml.safe_load(path.read_text())
    done = create(cluster, path.read_text())
    assert done.returncode == 0, done.stderr
    stored = get(cluster, document["kind"], document["metadata"]["name"])
    spec = stored["spec"] if document["kind"] == "VirtualMachineInstance" else stored["spec"]["template"]["spec"]
    assert spec["domain"]["machine"]["type"], "machine type defaulted"
    assert {"sockets", "cores", "threads"} <= spec["domain"]["cpu"].keys()
    assert spec["domain"]["memory"]["guest"] and spec["domain"]["resources"]["requests"]["memory"]
    assert spec["domain"]["devices"]["autoattachSerialConsole"] is True
    assert "terminationGracePeriodSeconds" in spec
    for disk in spec["domain"]["devices"].get("disks", []):
        target = disk.get("disk") or disk.get("cdrom") or disk.get("lun")
        assert target["bus"] in ("virtio", "sata", "scsi"), disk
    if document["kind"] == "VirtualMachine":
        assert stored["spec"].get("runStrategy") or "running" in stored["spec"]
    if document["kind"] == "VirtualMachineInstanceReplicaSet":
        assert stored["spec"]["replicas"] == 3


def test_the_default_network_is_added_when_none_is_given(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    spec = get(cluster, "vm", "vm-emptydisk")["spec"]["template"]["spec"]
    assert spec["networks"] == [{"name": "default", "pod": {}}]
    assert spec["domain"]["devices"]["interfaces"] == [{"name": "default", "masquerade": {}}]


def test_the_kubevirt_resource_is_admitted_once_per_cluster(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    first = kubectl(cluster, "create", "-f", str(ROOT / "examples" / "kubevirt-cr.yaml"))
    assert first.returncode == 0, first.stderr
    second = yaml.safe_load((ROOT / "examples" / "kubevirt-cr.yaml").read_text())
    second["metadata"]["name"] = "another"
    refused = kubectl(cluster, "create", "-f", "-", input=json.dumps(second))
    assert refused.returncode != 0
    assert (
        "metadata.name: Forbidden: a cluster has at most one KubeVirt resource, and kubevirt/kubevirt exists"
        in refused.stderr
    )


def test_a_migration_of_a_vmi_that_is_not_running_is_refused(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    refused = create(cluster, (ROOT / "examples" / "migration.yaml").read_text())
    assert refused.returncode != 0
    assert 'spec.vmiName: Invalid value: "vmi-fedora": only a running VMI can migrate' in refused.stderr


def vm(name: str, **template_spec: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "domain": {
            "resources": {"requests": {"memory": "64Mi"}},
            "devices": {"disks": [{"name": "root", "disk": {}}]},
        },
        "volumes": [{"name": "root", "containerDisk": {"image": "example.com/disk:1"}}],
    }
    for key, value in template_spec.items():
        target = spec["domain"] if key in ("cpu", "memory", "firmware", "features") else spec
        target[key] = value
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Halted", "template": {"spec": spec}},
    }


def _edit(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    target = document["spec"]["template"]["spec"]
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    target[int(last) if last.isdigit() else last] = value
    return document


T = "spec.template.spec."
RULES = [
    (
        "disk-without-volume",
        "domain.devices.disks.0.name",
        "gone",
        T + 'domain.devices.disks[0].name: Not found: "gone"',
    ),
    (
        "duplicate-boot-order",
        "domain.devices.disks",
        [{"name": "root", "disk": {}, "bootOrder": 1}, {"name": "cd", "cdrom": {}, "bootOrder": 1}],
        T + "domain.devices.disks[1].bootOrder: Invalid value: 1: boot order 1 is already used",
    ),
    (
        "interface-without-network",
        "domain.devices.interfaces",
        [{"name": "lan", "masquerade": {}}],
        T + 'domain.devices.interfaces[0].name: Not found: "lan"',
    ),
    ("no-memory", "domain.resources", {}, T + "domain.resources.requests.memory: Required value"),
    ("guest-over-limit", "domain.resources", {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}, None),
    (
        "cpu-hotplug",
        "domain.cpu",
        {"maxSockets": 4},
        T + "domain.cpu.maxSockets: Forbidden: field spec.template.spec.domain.cpu.maxSockets is not supported",
    ),
    (
        "multus",
        "networks",
        [{"name": "default", "multus": {"networkName": "x"}}],
        T + "networks[0].multus: Forbidden: field spec.template.spec.networks[0].multus is not supported by podvirt",
    ),
    (
        "relative-host-disk",
        "volumes.0",
        {"name": "root", "hostDisk": {"path": "disk.img", "type": "Disk"}},
        T + 'volumes[0].hostDisk.path: Invalid value: "disk.img": must be an absolute path',
    ),
    (
        "virtio-cdrom",
        "domain.devices.disks.0",
        {"name": "root", "cdrom": {"bus": "virtio"}},
        T + 'domain.devices.disks[0].cdrom.bus: Unsupported value: "virtio"',
    ),
    ("unsafe-volume-name", "volumes.0.name", "Root_Disk", T + 'volumes[0].name: Invalid value: "Root_Disk"'),
]


@pytest.mark.parametrize(("name", "path", "value", "expected"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_refuses_naming_the_field(
    cluster: Cluster, virt_api: VirtApiProcess, name: str, path: str, value: Any, expected: str | None
) -> None:
    document = _edit(vm(f"rule-{name}"), path, value)
    if name == "guest-over-limit":
        document["spec"]["template"]["spec"]["domain"]["memory"] = {"guest": "128Mi"}
        expected = T + 'domain.memory.guest: Invalid value: "128Mi": must not exceed the memory limit 64Mi'
    if name == "duplicate-boot-order":
        document["spec"]["template"]["spec"]["volumes"].append({"name": "cd", "containerDisk": {"image": "x"}})
    refused = create(cluster, document)
    assert refused.returncode != 0, f"{name} was admitted"
    assert "denied the request" in refused.stderr or "is invalid" in refused.stderr
    assert expected is not None and expected in refused.stderr, refused.stderr


def test_the_deprecated_running_field_comes_back_as_a_warning(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    document = vm("warned")
    del document["spec"]["runStrategy"]
    document["spec"]["running"] = False
    done = create(cluster, document)
    assert done.returncode == 0, done.stderr
    assert "Warning: spec.running is deprecated; use spec.runStrategy" in done.stderr


def test_a_vmi_spec_is_immutable_but_its_labels_are_not(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "frozen"},
           "spec": vm("x")["spec"]["template"]["spec"]}  # fmt: skip
    assert create(cluster, vmi).returncode == 0
    patch = json.dumps({"spec": {"domain": {"cpu": {"cores": 4}}}})
    refused = kubectl(cluster, "patch", "vmi", "frozen", "-n", NS, "--type=merge", "-p", patch)
    assert refused.returncode != 0
    assert "spec.domain.cpu.cores: Forbidden: a VirtualMachineInstance cannot change after creation" in refused.stderr
    assert kubectl(cluster, "label", "vmi", "frozen", "-n", NS, "team=a").returncode == 0


def test_vms_stay_deletable_while_virt_api_is_down(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    held = vm("held")
    held["metadata"]["finalizers"] = ["podvirt.test/hold"]
    assert create(cluster, held).returncode == 0
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "orphan"},
           "spec": vm("x")["spec"]["template"]["spec"]}  # fmt: skip
    assert create(cluster, vmi).returncode == 0
    virt_api.stop(unregister=False)
    try:
        # Fail closed: nothing new gets in unchecked...
        refused = create(cluster, vm("while-down"))
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr
        # ...but deleting, and the metadata-only update that releases a finalizer, never wait for virt-api.
        assert kubectl(cluster, "delete", "vmi", "orphan", "-n", NS, "--timeout=30s").returncode == 0
        assert kubectl(cluster, "delete", "vm", "held", "-n", NS, "--wait=false").returncode == 0
        released = kubectl(cluster, "patch", "vm", "held", "-n", NS, "--type=json",
                           "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')  # fmt: skip
        assert released.returncode == 0, released.stderr
        gone = kubectl(cluster, "get", "vm", "held", "-n", NS)
        assert "NotFound" in gone.stderr
    finally:
        virt_api.start()


@pytest.fixture(scope="module")
def front_proxy(cluster: Cluster, virt_api: VirtApiProcess) -> requests.Session:
    """A session to the live virt-api as the apiserver's front proxy (its real certificate), for the admin."""
    pki = cluster.state_dir / "pki"
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the CA below
    session.cert = (str(pki / "front-proxy-client.crt"), str(pki / "front-proxy-client.key"))
    ca_file = cluster.state_dir / "virt-api-ca.crt"
    ca_file.write_bytes(base64.b64decode(get(cluster, "secret", "virt-api-certs", "kubevirt")["data"]["ca.crt"]))
    session.verify = str(ca_file)
    session.headers.update({"X-Remote-User": "kubernetes-admin", "X-Remote-Group": "system:masters"})
    return session


def test_no_fuzzed_request_makes_the_running_virt_api_fail(
    virt_api: VirtApiProcess, front_proxy: requests.Session
) -> None:
    """Every operation of virt-api's OpenAPI document, explored by schemathesis: no answer is a 5xx."""
    document = front_proxy.get(f"{virt_api.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(operation.as_strategy())
        def probe(case: schemathesis.Case) -> None:
            # Schemathesis passes its own TLS settings per request, so the session's are repeated here.
            response = case.call(
                base_url=virt_api.url, session=front_proxy, verify=front_proxy.verify, cert=front_proxy.cert
            )
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        probe()
    assert failures == []
