"""virt-operator on a real devcluster: install from nothing to Available, unavailability told truthfully,
an upgrade that rolls the components and leaves workloads alone, uninstall refused while a VM exists and
complete afterwards.

The operator runs as a host process (``python -m virt_operator``, its own process group, stopped by it
whatever happens) with the admin kubeconfig. The prerequisites are applied as the operator's install
manifest would (namespace, CRDs, PriorityClass, the operator's RBAC), without the operator's Deployment.
The stand-in nodes run the components' commands from the host's podvirt, so their pods run podvirt's
code. The tests of this module build on each other, in file order.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import Cluster
from devcluster.node.logs import container_log
from virt_handler.deviceplugin import TUN_RESOURCE
from virt_operator.installconfig import (
    HANDLER_CA_SECRET,
    HANDLER_CLIENT_SECRET,
    HANDLER_SERVER_SECRET,
    VIRT_API_CERTS_SECRET,
    InstallConfig,
)
from virt_operator.manifests import components, operator_install
from virt_operator.manifests.files import to_yaml

pytestmark = pytest.mark.cluster

CONFIG = InstallConfig()
NS = CONFIG.namespace
WORKLOADS = ("deployment/virt-api", "deployment/virt-controller", "daemonset/virt-handler")
SELF_REGISTERED = (
    "mutatingwebhookconfiguration/virt-api-mutator",
    "validatingwebhookconfiguration/virt-api-validator",
    "apiservice/v1.subresources.kubevirt.io",
    "apiservice/v1alpha3.subresources.kubevirt.io",
)


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    cluster: Cluster

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def wait_for(predicate: Callable[[], Any], what: str, timeout: float, operator: OperatorProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = f"\noperator log (tail):\n{operator.tail()}" if operator else ""
            if operator is not None:
                tail += f"\nKubeVirt status: {json.dumps(kv(operator.cluster).get('status'), indent=1)}"
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(0.5)


def get(cluster: Cluster, *what: str, namespace: str | None = NS) -> dict[str, Any] | None:
    ns = ("-n", namespace) if namespace else ()
    proc = cluster.kubectl("get", *what, *ns, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def kv(cluster: Cluster) -> dict[str, Any]:
    return get(cluster, "kubevirt", "kubevirt") or {}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond["type"] == type_:
            return dict(cond)
    return {}


def available(cluster: Cluster) -> bool:
    return condition(kv(cluster), "Available").get("status") == "True"


def pod_uids(cluster: Cluster, component: str) -> set[str]:
    pods = get(cluster, "pods", "-l", f"kubevirt.io={component}") or {"items": []}
    return {p["metadata"]["uid"] for p in pods["items"] if not p["metadata"].get("deletionTimestamp")}


def _wait_namespace_gone_or_active(cluster: Cluster) -> None:
    def settled() -> bool:
        ns = get(cluster, "namespace", NS, namespace=None)
        return ns is None or ns.get("status", {}).get("phase") == "Active"

    wait_for(settled, f"namespace {NS} left by an earlier test to finish terminating", 120)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    if not cluster.nodes:
        pytest.skip("needs stand-in nodes (PODVIRT_TEST_NODES=0)")
    workdir = tmp_path_factory.mktemp("operator")
    prerequisites = workdir / "prerequisites.yaml"
    prerequisites.write_text(to_yaml([o for o in operator_install(CONFIG) if o["kind"] != "Deployment"]))
    everything = workdir / "components.yaml"
    everything.write_text(to_yaml(components(CONFIG)))
    _wait_namespace_gone_or_active(cluster)
    handle: OperatorProcess | None = None
    try:
        cluster.kubectl("apply", "--server-side", "--field-manager=podvirt-install", "-f", str(prerequisites))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/kubevirts.kubevirt.io")
        wait_for(
            lambda: cluster.kubectl("get", "kubevirts", "-n", NS, check=False).returncode == 0,
            "kubevirt.io/v1 kubevirts to be served",
            60,
        )
        log = workdir / "operator.log"
        argv = [
            sys.executable, "-m", "virt_operator",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--namespace={NS}",
            "--metrics-address=127.0.0.1:0",
            "--degraded-after=5",
            "--resync-period=5",
            "--log-format=text",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        handle = OperatorProcess(proc, log, cluster)
        yield handle
    finally:
        if handle is not None:
            handle.stop()
        # Whatever a failed test left: the CR without its finalizer, then every object by name.
        cluster.kubectl(
            "patch", "kubevirt", "kubevirt", "-n", NS, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
            check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "kubevirt", "--all", "-n", NS, "--wait=false", check=False)
        cluster.kubectl("delete", "vm,vmi", "--all", "-A", "--wait=false", check=False)
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(everything), check=False)
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", *SELF_REGISTERED, check=False)
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(prerequisites), check=False)


def test_install_from_nothing_to_available(cluster: Cluster, operator: OperatorProcess) -> None:
    cr = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": NS},
        "spec": {"configuration": {"developerConfiguration": {"useEmulation": True}}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))
    wait_for(lambda: kv(cluster).get("status", {}).get("phase"), "the operator to report a phase", 60, operator)
    proc = cluster.kubectl(
        "-n", NS, "wait", "kv", "kubevirt", "--for", "condition=Available", "--timeout=300s", check=False, timeout=330
    )
    assert proc.returncode == 0, f"{proc.stderr}\n{json.dumps(kv(cluster).get('status'), indent=1)}\n{operator.tail()}"
    status = kv(cluster)["status"]
    assert status["phase"] == "Deployed"
    assert status["observedKubeVirtVersion"] == status["targetKubeVirtVersion"] == CONFIG.tag
    assert condition(kv(cluster), "Progressing")["status"] == "False"
    assert condition(kv(cluster), "Degraded")["status"] == "False"
    assert kv(cluster)["metadata"]["finalizers"] == ["foregroundDeleteKubeVirt"]
    for secret in (HANDLER_CA_SECRET, HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET):
        assert get(cluster, "secret", secret) is not None
    handler = get(cluster, "daemonset", "virt-handler") or {}
    assert handler["status"]["numberReady"] == len(cluster.nodes)
    controller = get(cluster, "deployment", "virt-controller") or {}
    assert "--use-emulation" in controller["spec"]["template"]["spec"]["containers"][0]["args"]
    events = get(cluster, "events", "--field-selector", "involvedObject.kind=KubeVirt") or {"items": []}
    assert {"ResourcesApplied", "Deployed"} <= {e["reason"] for e in events["items"]}
    # The handler pods' device plugins registered with each node's (stand-in) kubelet through the
    # DaemonSet's hostPath of the kubelet directory: launcher pods can be admitted with their tap device.
    cluster.wait_allocatable(TUN_RESOURCE, timeout=60)
    # Each handler pod's init container probed QEMU as launchers will see it, and the handler hands the
    # result to its launchers (the stand-in nodes run the launcher image's command from this host).
    pods = get(cluster, "pods", "-l", "kubevirt.io=virt-handler") or {"items": []}
    for pod in pods["items"]:
        [probe] = pod["status"]["initContainerStatuses"]
        assert probe["state"]["terminated"]["exitCode"] == 0, probe
        root = cluster.config.node_root(pod["spec"]["nodeName"])
        log = container_log(root, pod["metadata"]["uid"], "virt-handler")
        assert "handing launchers the QEMU capabilities" in log, log[-2000:]
    # It acted as the elected leader: the Lease its replicas share names it (renewed, so not expired).
    lease = get(cluster, "lease", "virt-operator") or {}
    assert lease.get("spec", {}).get("holderIdentity"), lease


def test_applying_the_install_again_does_not_conflict_with_the_operator(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    # What an upgrade by `kubectl apply --server-side -f podvirt-operator.yaml` does over a running
    # installation: objects both the install and the operator apply (the PriorityClass) must agree.
    again = tmp_path / "prerequisites.yaml"
    again.write_text(to_yaml([o for o in operator_install(CONFIG) if o["kind"] != "Deployment"]))
    proc = cluster.kubectl("apply", "--server-side", "--field-manager=podvirt-install", "-f", str(again), check=False)
    assert proc.returncode == 0, proc.stderr


def test_available_is_false_while_a_component_is_not_ready(cluster: Cluster, operator: OperatorProcess) -> None:
    # Someone else's field the operator does not set (a nodeSelector would not do: it is an atomic map the
    # operator owns, so its next apply takes it back): virt-api's new pods wait for a scheduler that is not there.
    nowhere = {"spec": {"template": {"spec": {"schedulerName": "podvirt-test-nobody"}}}}
    cluster.kubectl("patch", "deployment", "virt-api", "-n", NS, "--type=merge", "-p", json.dumps(nowhere))
    try:
        wait_for(lambda: not available(cluster), "Available to turn False", 60, operator)
        unavailable = condition(kv(cluster), "Available")
        assert "virt-api" in unavailable["message"]

        def degraded() -> dict[str, Any] | None:
            cond = condition(kv(cluster), "Degraded")
            return cond if cond.get("reason") == "ComponentUnavailable" else None

        cond = wait_for(degraded, "Degraded after the grace period", 60, operator)
        assert cond["status"] == "True" and "virt-api not ready since" in cond["message"]
        assert kv(cluster)["status"]["phase"] == "Deployed", "a failing component does not undeploy"
    finally:
        back = {"spec": {"template": {"spec": {"schedulerName": "default-scheduler"}}}}
        cluster.kubectl("patch", "deployment", "virt-api", "-n", NS, "--type=merge", "-p", json.dumps(back))
    wait_for(lambda: available(cluster), "Available again", 180, operator)
    assert condition(kv(cluster), "Degraded")["status"] == "False"


def test_an_upgrade_rolls_the_components_and_leaves_workload_pods_alone(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    # A stand-in for a running guest's launcher pod: the operator must never touch it.
    launcher = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "virt-launcher-guest-abcde",
            "namespace": namespace,
            "labels": {"kubevirt.io": "virt-launcher"},
        },
        "spec": {"containers": [{"name": "compute", "image": "none", "command": ["sleep", "3600"]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(launcher))
    guest_uid = (get(cluster, "pod", launcher["metadata"]["name"], namespace=namespace) or {})["metadata"]["uid"]
    before = {c: pod_uids(cluster, c) for c in ("virt-api", "virt-controller", "virt-handler")}
    new_tag = f"v9.{secrets.randbelow(1000)}.0"
    cluster.kubectl(
        "patch", "kubevirt", "kubevirt", "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"imageTag": new_tag}})
    )
    wait_for(
        lambda: kv(cluster).get("status", {}).get("targetKubeVirtVersion") == new_tag,
        "the new target version",
        60,
        operator,
    )
    wait_for(
        lambda: available(cluster) and kv(cluster)["status"].get("observedKubeVirtVersion") == new_tag,
        "Available at the new version",
        300,
        operator,
    )
    assert kv(cluster)["status"]["phase"] == "Deployed"
    for component, old in before.items():
        now = pod_uids(cluster, component)
        assert now and not now & old, f"{component} was not re-rolled"
    api = get(cluster, "deployment", "virt-api") or {}
    assert api["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"/virt-api:{new_tag}")
    assert (get(cluster, "pod", launcher["metadata"]["name"], namespace=namespace) or {})["metadata"][
        "uid"
    ] == guest_uid


def test_uninstall_is_refused_while_a_vm_exists_and_complete_after(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "keeper", "namespace": namespace},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(vm))
    refused = cluster.kubectl("delete", "kubevirt", "kubevirt", "-n", NS, "--wait=false", check=False)
    if refused.returncode != 0:
        # virt-api's own uninstall webhook may refuse first, as KubeVirt's does; then nothing was deleted.
        assert "VirtualMachine" in refused.stderr or "workload" in refused.stderr.lower(), refused.stderr
    else:

        def blocked() -> dict[str, Any] | None:
            cond = condition(kv(cluster), "Degraded")
            return cond if cond.get("reason") == "DeletionBlocked" else None

        cond = wait_for(blocked, "the uninstall to be reported blocked", 60, operator)
        assert cond["status"] == "True" and "1 VirtualMachine" in cond["message"] and namespace in cond["message"]
        assert kv(cluster)["status"]["phase"] == "Deleting"
    time.sleep(3)
    for workload in WORKLOADS:
        assert get(cluster, workload) is not None, f"{workload} removed while a VM exists"
    assert get(cluster, "secret", HANDLER_CA_SECRET) is not None

    cluster.kubectl("delete", "vm", "keeper", "-n", namespace, "--wait=true", "--timeout=60s")
    cluster.kubectl("delete", "kubevirt", "kubevirt", "-n", NS, "--wait=false")
    wait_for(lambda: get(cluster, "kubevirt", "kubevirt") is None, "the KubeVirt resource to go", 240, operator)
    for workload in WORKLOADS:
        assert get(cluster, workload) is None
    for secret in (HANDLER_CA_SECRET, HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET, VIRT_API_CERTS_SECRET):
        assert get(cluster, "secret", secret) is None, secret
    for obj in SELF_REGISTERED:
        assert get(cluster, obj, namespace=None) is None, obj
    for obj in components(CONFIG):
        if obj["kind"] in ("PriorityClass",):
            continue  # also part of the operator's own install: it stays
        what = f"{obj['kind'].lower()}/{obj['metadata']['name']}"
        assert get(cluster, what, namespace=obj["metadata"].get("namespace")) is None, what
    assert get(cluster, "crd", "kubevirts.kubevirt.io", namespace=None) is not None, "the CRDs stay"
    assert get(cluster, "namespace", NS, namespace=None) is not None
    for component in ("virt-api", "virt-controller", "virt-handler"):
        assert not pod_uids(cluster, component), f"{component} pods outlived the uninstall"
