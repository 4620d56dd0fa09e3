"""virtctl against the real apiserver, for everything that needs no virt-api: manifests, Services, errors.

The CRDs are installed; virt-api is not (so the subresource API is absent, which is one of the
things tested). Stored VMs are Halted and live in a namespace of this module's own, so a podvirt
controller sharing the cluster has nothing to act on.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import Cluster
from kubevirt_types import VirtualMachine
from kubevirt_types.crdgen import KINDS
from virtctl.cli import root
from virtctl.completion import cobra_lines

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
USER_DATA = base64.b64encode(b"#cloud-config\npassword: fedora\nchpasswd: { expire: False }\n").decode()


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    """The CRDs installed and served, and a namespace of this module's own."""
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    established = ("wait", "--for=condition=Established", "--timeout=10s", *(f"crd/{k.crd_name}" for k in KINDS))
    _wait(lambda: cluster.kubectl(*established, check=False).returncode == 0, "the CRDs to be established")
    _wait(lambda: cluster.kubectl("get", "vm", "-A", check=False).returncode == 0, "kubevirt.io/v1 to be served")
    name = f"virtctl-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def virtctl(
    cluster: Cluster, *args: str, kubeconfig: Path | None = None, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run virtctl as a user would, with the kubeconfig in $KUBECONFIG."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    argv = [sys.executable, "-m", "virtctl", *args, *(["-n", namespace] if namespace else [])]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def halted_vm(name: str, labels: dict[str, str], ports: list[int] | None = None) -> dict[str, Any]:
    interface: dict[str, Any] = {"name": "default", "masquerade": {}}
    if ports:
        interface["ports"] = [{"port": p} for p in ports]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "domain": {"devices": {"interfaces": [interface]}, "memory": {"guest": "64Mi"}},
                    "networks": [{"name": "default", "pod": {}}],
                },
            },
        },
    }


def apply(cluster: Cluster, namespace: str, document: dict[str, Any] | str) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    cluster.kubectl("apply", "-n", namespace, "--validate=strict", "-f", "-", input=text)


def get(cluster: Cluster, namespace: str, *what: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)
    return loaded


def test_created_vm_manifest_applies_unchanged(cluster: Cluster, namespace: str) -> None:
    made = virtctl(
        cluster,
        "create",
        "vm",
        "--name=made-by-virtctl",
        "--run-strategy=Halted",
        "--memory=128Mi",
        "--volume-containerdisk=src:example.com/guest:1,bootorder:1",
        "--volume-pvc=src:data",
        f"--cloud-init-user-data={USER_DATA}",
        namespace=namespace,
    )
    assert made.returncode == 0, made.stderr
    manifest = yaml.safe_load(made.stdout)
    assert manifest["metadata"]["namespace"] == namespace  # -n goes into the manifest, as with KubeVirt
    cluster.kubectl("apply", "--validate=strict", "-f", "-", input=made.stdout)  # no -n: the manifest says where
    stored = get(cluster, namespace, "vm", "made-by-virtctl")
    assert stored["spec"] == manifest["spec"]
    VirtualMachine.model_validate(stored)


def test_expose_vm_selects_its_pod_by_the_template_labels(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, halted_vm("web", {"app": "web", "tier": "front"}, ports=[80, 443]))
    exposed = virtctl(cluster, "expose", "vm", "web", "--name=web-ssh", "--port=2222", "--target-port=22",
                      "--type=NodePort", namespace=namespace)  # fmt: skip
    assert exposed.returncode == 0, exposed.stderr
    assert exposed.stdout == "Service web-ssh successfully exposed for vm web\n"
    service = get(cluster, namespace, "service", "web-ssh")["spec"]
    assert service["selector"] == {"app": "web", "tier": "front"}
    assert service["type"] == "NodePort"
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in service["ports"]] == [(2222, 22, "TCP")]
    # Without --port, the ports the pod-network interface declares are reused.
    assert virtctl(cluster, "expose", "vm", "web", "--name=web-all", namespace=namespace).returncode == 0
    ports = get(cluster, namespace, "service", "web-all")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("port-1", 80), ("port-2", 443)]


def test_expose_replica_set_uses_its_match_labels(cluster: Cluster, namespace: str) -> None:
    template = halted_vm("x", {"app": "pool"})["spec"]["template"]
    replica_set = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "pool"},
        "spec": {"replicas": 0, "paused": True, "selector": {"matchLabels": {"app": "pool"}}, "template": template},
    }
    apply(cluster, namespace, replica_set)
    exposed = virtctl(cluster, "expose", "vmirs", "pool", "--name=pool", "--port=80", namespace=namespace)
    assert exposed.returncode == 0, exposed.stderr
    assert get(cluster, namespace, "service", "pool")["spec"]["selector"] == {"app": "pool"}


def test_expose_of_a_missing_vm_is_not_found(cluster: Cluster, namespace: str) -> None:
    missing = virtctl(cluster, "expose", "vm", "nope", "--name=x", "--port=80", namespace=namespace)
    assert missing.returncode == 3
    assert missing.stderr.strip() == f"error: VirtualMachine {namespace}/nope not found"


@pytest.mark.parametrize(
    "args",
    [("start", "vm1"), ("stop", "vm1"), ("pause", "vm", "vm1"), ("soft-reboot", "vm1"), ("guestosinfo", "vm1"),
     ("console", "vm1", "--timeout=0"), ("version",)],
    ids=lambda a: a[0],
)  # fmt: skip
def test_without_virt_api_the_subresource_api_is_reported_absent(
    cluster: Cluster, namespace: str, args: tuple[str, ...]
) -> None:
    done = virtctl(cluster, *args, namespace=namespace)
    assert done.returncode == 6, done.stderr
    assert "subresources.kubevirt.io/v1 is not served by this cluster" in done.stderr
    assert "kubectl get apiservice v1.subresources.kubevirt.io" in done.stderr


@pytest.fixture(scope="module")
def nobody(cluster: Cluster, namespace: str) -> Path:
    """A kubeconfig for a service account without any role."""
    cluster.kubectl("create", "serviceaccount", "virtctl-nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "virtctl-nobody", "-n", namespace).stdout.strip()
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig["users"] = [{"name": "nobody", "user": {"token": token}}]
    for context in kubeconfig["contexts"]:
        context["context"]["user"] = "nobody"
        context["context"]["namespace"] = namespace
    path = cluster.state_dir / f"virtctl-nobody-{namespace}.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def test_forbidden_names_the_missing_permission(cluster: Cluster, nobody: Path) -> None:
    started = virtctl(cluster, "start", "vm1", kubeconfig=nobody)
    assert started.returncode == 4, started.stderr
    assert "virtctl-nobody" in started.stderr  # the apiserver's own words, with the user
    assert 'apiGroups: ["subresources.kubevirt.io"], resources: ["virtualmachines/start"], verbs: ["update"]' in (
        started.stderr
    )
    exposed = virtctl(cluster, "expose", "vm", "web", "--name=x", "--port=80", kubeconfig=nobody)
    assert exposed.returncode == 4
    assert 'apiGroups: ["kubevirt.io"], resources: ["virtualmachines"], verbs: ["get"]' in exposed.stderr


def test_migrate_cancel_deletes_the_active_migration(cluster: Cluster, namespace: str) -> None:
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move-ghost"},
        "spec": {"vmiName": "ghost"},
    }
    apply(cluster, namespace, migration)
    dry = virtctl(cluster, "migrate-cancel", "ghost", "--dry-run", namespace=namespace)
    assert dry.returncode == 0, dry.stderr
    assert get(cluster, namespace, "vmim", "move-ghost")["metadata"]["name"] == "move-ghost"
    done = virtctl(cluster, "migrate-cancel", "ghost", namespace=namespace)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "VM ghost was scheduled to migrate-cancel\n"
    gone = cluster.kubectl("get", "-n", namespace, "vmim", "move-ghost", check=False)
    assert gone.returncode != 0 or json.loads(
        cluster.kubectl("get", "-n", namespace, "vmim", "move-ghost", "-o", "json").stdout
    )["metadata"].get("deletionTimestamp")
    again = virtctl(cluster, "migrate-cancel", "ghost", namespace=namespace)
    assert again.returncode == 3


def test_completion_lists_the_vms_of_the_namespace(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(cluster, namespace, halted_vm("complete-me", {"app": "c"}))
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    lines = cobra_lines(root, ["start", "-n", namespace, "complete"])
    assert lines == ["complete-me", ":4"]
