"""virt-controller against a real apiserver, scheduler and (stand-in) nodes: run strategies, requests,
crash loops, launcher pods and their phases, problems surfaced, Pod Security, crash safety, deletion.

The controller runs as a subprocess (``python -m virt_controller``) in its own process group, stopped by
that group at the end of every test. Launcher pods here do not run virt-launcher: a *stand-in
launcher* (``sh -c 'exec sleep infinity'``) only runs and so is ready, and a *failing launcher*
exits with status 3 at once. Tests that need pods to run skip when the cluster has no nodes
(``PODVIRT_TEST_NODES=0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import Cluster
from podvirt_common import httpserve
from podvirt_common.kube import (
    LEASES,
    PODS,
    VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    ApiError,
    Kube,
    NotFoundError,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
STAND_IN_LAUNCHER = "/bin/sh -c 'exec sleep infinity'"
FAILING_LAUNCHER = "/bin/sh -c 'echo qemu: cannot open the disk >&2; exit 3'"
CRDS = ("virtualmachines", "virtualmachineinstances", "virtualmachineinstancereplicasets")


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 60.0, log: Path | None = None, every: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\ncontroller log (tail):\n" + "\n".join(log.read_text().splitlines()[-30:])
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(every)


@pytest.fixture(scope="module")
def kube(cluster: Cluster) -> Iterator[Kube]:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    established = ("wait", "--for=condition=Established", "--timeout=10s", *(f"crd/{p}.kubevirt.io" for p in CRDS))
    wait_for(lambda: cluster.kubectl(*established, check=False).returncode == 0, "the CRDs to be established")
    client = Kube.connect(cluster.kubeconfig)
    # A fresh CRD's storage answers 429 for a moment; wait until it serves.
    wait_for(lambda: _lists(client), "kubevirt.io/v1 to be served")
    yield client
    client.close()


def _lists(kube: Kube) -> bool:
    try:
        kube.list_objects(VIRTUAL_MACHINES, "default")
        kube.list_objects(VIRTUAL_MACHINE_INSTANCES, "default")
    except Exception:
        return False
    return True


@pytest.fixture
def namespace(cluster: Cluster, kube: Kube, start_controller: Callable[..., ControllerProcess]) -> Iterator[str]:
    """A namespace of the test's own, deleted while the test's controller still runs (it finalises the
    VMIs, so nothing is left behind waiting for a controller)."""
    name = f"ctl-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl(
        "delete", "vm,vmirs,vmi", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False, timeout=90
    )
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class ControllerProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def metrics_port(self) -> int:
        """The port the controller bound for ``--metrics-address=127.0.0.1:0``, from its log."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            port = httpserve.port_from_log(self.log.read_text())
            if port is not None:
                return port
            time.sleep(0.1)
        raise AssertionError(f"the controller never said where it serves /metrics; see {self.log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass

    def logged(self, text: str) -> bool:
        return text in self.log.read_text()


@pytest.fixture
def start_controller(cluster: Cluster, kube: Kube, tmp_path: Path) -> Iterator[Callable[..., ControllerProcess]]:
    """Starts ``python -m virt_controller`` (in its own process group, always stopped by it)."""
    started: list[ControllerProcess] = []

    def start(*extra: str, launcher: str = STAND_IN_LAUNCHER, identity: str | None = None) -> ControllerProcess:
        n = len(started)
        log = tmp_path / f"controller-{n}.log"
        argv = [
            sys.executable, "-m", "virt_controller",
            f"--kubeconfig={cluster.kubeconfig}",
            "--metrics-address=127.0.0.1:0",  # a free port, chosen by the kernel; see metrics_port
            f"--launcher-command={launcher}",
            "--use-emulation",  # guests run under TCG here: launcher pods do not ask for /dev/kvm
            "--log-format=text",
            "--lease-namespace=kube-system",
            "--lease-duration=4",
            "--lease-renew-every=1",
            f"--identity={identity or f'test-controller-{n}-{secrets.token_hex(2)}'}",
            *extra,
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        handle = ControllerProcess(proc, log)
        started.append(handle)
        return handle

    yield start
    for handle in reversed(started):
        handle.stop()
    # The next test's controller should not wait for this one's lease.
    _release_lease(kube)


def _release_lease(kube: Kube) -> None:
    with contextlib.suppress(ApiError):
        kube.delete(LEASES, "virt-controller", "kube-system")


def needs_nodes(cluster: Cluster) -> None:
    if not cluster.nodes:
        pytest.skip("needs stand-in nodes (PODVIRT_TEST_NODES=0)")


def vm_manifest(name: str, strategy: str = "Always", **template_spec: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}, **template_spec}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": strategy, "template": {"metadata": {"labels": {"app": name}}, "spec": spec}},
    }


def create_vm(kube: Kube, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return kube.create(
        VIRTUAL_MACHINES, {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}, namespace
    )


def get(kube: Kube, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return kube.get(resource, name, namespace)
    except NotFoundError:
        return None


def vm_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return (get(kube, VIRTUAL_MACHINES, namespace, name) or {}).get("status") or {}


def printable(kube: Kube, namespace: str, name: str) -> str | None:
    return vm_status(kube, namespace, name).get("printableStatus")


def vmi_of(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return get(kube, VIRTUAL_MACHINE_INSTANCES, namespace, name)


def phase(kube: Kube, namespace: str, name: str) -> str | None:
    vmi = vmi_of(kube, namespace, name)
    return ((vmi or {}).get("status") or {}).get("phase")


def pods_of(kube: Kube, namespace: str, vmi: dict[str, Any]) -> list[dict[str, Any]]:
    uid = vmi["metadata"]["uid"]
    return kube.list_objects(PODS, namespace, label_selector=f"kubevirt.io/created-by={uid}")


def request(cluster: Cluster, namespace: str, name: str, *requests: dict[str, Any]) -> None:
    """What virt-api's start/stop/restart do for Manual and RerunOnFailure VMs: queue state change requests."""
    current = json.loads(cluster.kubectl("get", "vm", name, "-n", namespace, "-o", "json").stdout)
    queue = [*(current.get("status") or {}).get("stateChangeRequests", []), *requests]
    patch = json.dumps({"status": {"stateChangeRequests": queue}})
    cluster.kubectl("patch", "vm", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)


# -- VM -> VMI -> pod, through the real scheduler ------------------------------------------------


def test_an_always_vm_gets_a_vmi_and_a_launcher_pod_the_scheduler_binds(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    needs_nodes(cluster)
    ctl = start_controller()
    create_vm(kube, namespace, vm_manifest("web"))
    wait_for(lambda: phase(kube, namespace, "web") == "Scheduled", "the VMI to be Scheduled", log=ctl.log)
    vmi = vmi_of(kube, namespace, "web")
    assert vmi is not None
    node = vmi["status"]["nodeName"]
    assert node in cluster.nodes
    assert vmi["metadata"]["labels"]["kubevirt.io/nodeName"] == node
    (pod,) = pods_of(kube, namespace, vmi)
    assert pod["spec"]["nodeName"] == node, "the scheduler bound the pod where the VMI says"
    assert pod["metadata"]["name"].startswith("virt-launcher-web-")
    assert pod["metadata"]["labels"]["kubevirt.io"] == "virt-launcher"
    assert vmi["status"]["activePods"] == {pod["metadata"]["uid"]: node}
    vm = get(kube, VIRTUAL_MACHINES, namespace, "web")
    assert vm is not None and vm["status"]["created"] is True
    assert vm["status"]["printableStatus"] == "Starting"  # Running is the node handler's to say
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "SuccessfulCreate" in events
    with urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert f'kubevirt_vmi_phase_count{{node="{node}",phase="Scheduled"}}' in metrics
    assert "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket" in metrics


def test_manual_start_and_stop_requests_are_each_consumed_once(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    ctl = start_controller()
    create_vm(kube, namespace, vm_manifest("man", "Manual"))
    wait_for(lambda: printable(kube, namespace, "man") == "Stopped", "the Manual VM to be Stopped", log=ctl.log)
    assert vmi_of(kube, namespace, "man") is None
    request(cluster, namespace, "man", {"action": "Start"})
    vmi = wait_for(lambda: vmi_of(kube, namespace, "man"), "the VMI of the start request", log=ctl.log)
    wait_for(lambda: not vm_status(kube, namespace, "man").get("stateChangeRequests"), "the start request consumed")
    request(cluster, namespace, "man", {"action": "Stop", "uid": vmi["metadata"]["uid"]})
    wait_for(lambda: vmi_of(kube, namespace, "man") is None, "the VMI to be stopped", log=ctl.log)
    wait_for(lambda: printable(kube, namespace, "man") == "Stopped", "the VM to be Stopped again")
    assert not vm_status(kube, namespace, "man").get("stateChangeRequests")
    assert kube.list_objects(PODS, namespace) == []


def test_halted_stops_the_vmi_and_always_starts_a_new_one(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    ctl = start_controller()
    create_vm(kube, namespace, vm_manifest("flip"))
    first = wait_for(lambda: vmi_of(kube, namespace, "flip"), "the first VMI", log=ctl.log)
    kube.merge_patch(VIRTUAL_MACHINES, "flip", {"spec": {"runStrategy": "Halted"}}, namespace)
    wait_for(lambda: vmi_of(kube, namespace, "flip") is None, "the VMI to go", log=ctl.log)
    wait_for(lambda: printable(kube, namespace, "flip") == "Stopped", "Stopped")
    kube.merge_patch(VIRTUAL_MACHINES, "flip", {"spec": {"runStrategy": "Always"}}, namespace)
    second = wait_for(lambda: vmi_of(kube, namespace, "flip"), "a new VMI", log=ctl.log)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


def test_a_launcher_that_keeps_failing_puts_the_vm_in_crash_loop_back_off(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    needs_nodes(cluster)
    ctl = start_controller("--crash-loop-base-delay=2", launcher=FAILING_LAUNCHER)
    create_vm(kube, namespace, vm_manifest("crashy"))

    def failures() -> int:
        return int((vm_status(kube, namespace, "crashy").get("startFailure") or {}).get("consecutiveFailCount") or 0)

    wait_for(lambda: failures() >= 1, "a recorded start failure", timeout=90, log=ctl.log)
    assert printable(kube, namespace, "crashy") in ("CrashLoopBackOff", "Starting", "Stopped")
    wait_for(lambda: printable(kube, namespace, "crashy") == "CrashLoopBackOff", "CrashLoopBackOff", log=ctl.log)
    wait_for(lambda: failures() >= 3, "two more failed starts after back-off", timeout=120, log=ctl.log)
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    reasons = [e["reason"] for e in events]
    assert "CrashLoopBackOff" in reasons
    failed = [e["message"] for e in events if e["reason"] == "LauncherFailed"]
    assert failed and "exit code 3" in failed[0] and "cannot open the disk" in failed[0]
    # Back-off grows: the failures are spread over at least 2 + 4 s.
    status = vm_status(kube, namespace, "crashy")
    assert status["startFailure"]["retryAfterTimestamp"]


def test_rerun_on_failure_restarts_a_failed_vmi(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    needs_nodes(cluster)
    ctl = start_controller("--crash-loop-base-delay=1", launcher=FAILING_LAUNCHER)
    create_vm(kube, namespace, vm_manifest("rerun", "RerunOnFailure"))
    first = wait_for(lambda: vmi_of(kube, namespace, "rerun"), "the first VMI", log=ctl.log)

    def replaced() -> bool:
        vmi = vmi_of(kube, namespace, "rerun")
        return vmi is not None and vmi["metadata"]["uid"] != first["metadata"]["uid"]

    wait_for(replaced, "the failed VMI to be replaced", timeout=90, log=ctl.log)


# -- problems surfaced ---------------------------------------------------------------------------


def test_an_impossible_node_selector_shows_error_unschedulable(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    ctl = start_controller()
    create_vm(kube, namespace, vm_manifest("nowhere", nodeSelector={"example.com/no-such-node": "true"}))
    wait_for(lambda: printable(kube, namespace, "nowhere") == "ErrorUnschedulable", "ErrorUnschedulable", log=ctl.log)
    vmi = vmi_of(kube, namespace, "nowhere")
    assert vmi is not None and vmi["status"]["phase"] == "Scheduling"
    (cond,) = [c for c in vmi["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")


def test_a_missing_container_disk_image_shows_err_image_pull(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    needs_nodes(cluster)
    ctl = start_controller()
    volumes = [{"name": "root", "containerDisk": {"image": "registry.invalid/podvirt/no-such-disk:1"}}]
    create_vm(kube, namespace, vm_manifest("noimage", volumes=volumes))
    wait_for(
        lambda: printable(kube, namespace, "noimage") in ("ErrImagePull", "ImagePullBackOff"),
        "ErrImagePull",
        log=ctl.log,
    )
    vmi = vmi_of(kube, namespace, "noimage")
    assert vmi is not None
    (cond,) = [c for c in vmi["status"]["conditions"] if c["type"] == "Synchronized"]
    assert cond["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert "no-such-disk" in cond["message"]


def test_a_missing_claim_shows_error_pvc_not_found_until_it_exists(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    ctl = start_controller()
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-disk"}}]
    create_vm(kube, namespace, vm_manifest("noclaim", volumes=volumes))
    wait_for(lambda: printable(kube, namespace, "noclaim") == "ErrorPvcNotFound", "ErrorPvcNotFound", log=ctl.log)
    assert kube.list_objects(PODS, namespace) == []
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-disk"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(claim))
    wait_for(lambda: kube.list_objects(PODS, namespace), "the launcher pod once the claim exists", log=ctl.log)


# -- Pod Security ------------------------------------------------------------------------------


def test_a_restricted_namespace_accepts_the_launcher_pod(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    ctl = start_controller()
    volumes = [
        {"name": "root", "containerDisk": {"image": "registry.invalid/podvirt/disk:1"}},
        {"name": "cfg", "configMap": {"name": "cfg", "optional": True}},
        {"name": "scratch", "emptyDisk": {"capacity": "64Mi"}},
    ]
    create_vm(kube, namespace, vm_manifest("strict", volumes=volumes))
    vmi = wait_for(lambda: vmi_of(kube, namespace, "strict"), "the VMI", log=ctl.log)
    wait_for(lambda: pods_of(kube, namespace, vmi), "the launcher pod to be admitted", log=ctl.log)

    # The label is enforced: a VMI needing a hostPath volume is refused, and the VMI says why.
    create_vm(
        kube,
        namespace,
        vm_manifest(
            "hosty",
            volumes=[
                {"name": "hd", "hostDisk": {"path": "/var/tmp/x/disk.img", "type": "DiskOrCreate", "capacity": "64Mi"}}
            ],
        ),
    )

    def refused() -> str | None:
        vmi = vmi_of(kube, namespace, "hosty")
        for cond in ((vmi or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == "Synchronized" and cond.get("reason") == "FailedCreate":
                return str(cond.get("message"))
        return None

    message = wait_for(refused, "the refusal of the hostPath pod", log=ctl.log)
    assert "PodSecurity" in message and "restricted" in message


# -- crash safety and deletion -----------------------------------------------------------------


def test_a_controller_killed_midway_through_20_vms_leaves_exactly_20_vmis_and_20_pods(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    names = [f"vm-{i:02d}" for i in range(20)]
    for name in names:
        create_vm(kube, namespace, vm_manifest(name))

    def created() -> int:
        return len(kube.list_objects(VIRTUAL_MACHINE_INSTANCES, namespace)) + len(kube.list_objects(PODS, namespace))

    # Kill -9 right after it made progress, three times over, then let a last one finish.
    seen = [0]
    for _ in range(3):
        killed = start_controller("--workers=1")
        wait_for(lambda: created() > seen[-1], "progress", log=killed.log, every=0.05)
        killed.stop(signal.SIGKILL)
        seen.append(created())
    print(f"killed after {seen[1:]} of 40 VMIs and pods were created")
    assert 0 < seen[1] < 40, "the kills should land midway"
    second = start_controller()

    def all_there() -> bool:
        return (
            len(kube.list_objects(VIRTUAL_MACHINE_INSTANCES, namespace)) >= 20
            and len(kube.list_objects(PODS, namespace)) >= 20
        )

    wait_for(all_there, "20 VMIs and 20 pods", timeout=120, log=second.log)
    time.sleep(3)  # anything created twice would show up by now
    vmis = kube.list_objects(VIRTUAL_MACHINE_INSTANCES, namespace)
    pods = kube.list_objects(PODS, namespace)
    assert sorted(v["metadata"]["name"] for v in vmis) == names
    assert len(pods) == 20
    owners = sorted(p["metadata"]["labels"]["kubevirt.io/created-by"] for p in pods)
    assert owners == sorted(v["metadata"]["uid"] for v in vmis), "one pod per VMI"


def test_deleting_a_vm_whose_pod_is_gone_does_not_hang(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    ctl = start_controller()
    create_vm(kube, namespace, vm_manifest("orphaned"))
    vmi = wait_for(lambda: vmi_of(kube, namespace, "orphaned"), "the VMI", log=ctl.log)
    wait_for(lambda: pods_of(kube, namespace, vmi), "its pod", log=ctl.log)
    ctl.stop(signal.SIGKILL)  # nobody to watch while the pod disappears
    for pod in pods_of(kube, namespace, vmi):
        kube.delete(PODS, pod["metadata"]["name"], namespace, grace_period_seconds=0)
    cluster.kubectl("delete", "vm", "orphaned", "-n", namespace, "--cascade=foreground", "--wait=false")
    again = start_controller()
    wait_for(
        lambda: (
            get(kube, VIRTUAL_MACHINES, namespace, "orphaned") is None and vmi_of(kube, namespace, "orphaned") is None
        ),
        "the VM and its VMI to be gone",
        timeout=45,
        log=again.log,
    )


# -- replica sets and leadership ---------------------------------------------------------------


def test_a_replica_set_creates_scales_and_counts_ready_replicas(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    ctl = start_controller()
    rs = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "pool", "namespace": namespace},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"pool": "yes"}},
            "template": {
                "metadata": {"labels": {"pool": "yes"}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}},
            },
        },
    }
    kube.create(VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS, rs, namespace)

    def live() -> list[dict[str, Any]]:
        return [
            v
            for v in kube.list_objects(VIRTUAL_MACHINE_INSTANCES, namespace)
            if not v["metadata"].get("deletionTimestamp")
        ]

    wait_for(lambda: len(live()) == 3, "3 VMIs", log=ctl.log)
    cluster.kubectl("scale", "vmirs", "pool", "-n", namespace, "--replicas=1")
    wait_for(lambda: len(live()) == 1, "1 VMI after scaling down", log=ctl.log)

    def status_with_one_replica() -> dict[str, Any] | None:
        status = (get(kube, VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS, namespace, "pool") or {}).get("status") or {}
        return status if status.get("replicas") == 1 else None

    status = wait_for(status_with_one_replica, "status.replicas 1", log=ctl.log)
    assert status["labelSelector"] == "pool=yes"
    assert status["readyReplicas"] == 0  # ready needs a running guest


def test_only_the_lease_holder_acts_and_a_standby_takes_over(
    cluster: Cluster, kube: Kube, namespace: str, start_controller: Callable[..., ControllerProcess]
) -> None:
    active = start_controller(identity="replica-a")
    wait_for(lambda: active.logged("caches synced"), "the first replica to lead", log=active.log)
    standby = start_controller(identity="replica-b")
    wait_for(lambda: standby.logged("waiting for lease"), "the second replica to wait", log=standby.log)
    create_vm(kube, namespace, vm_manifest("led"))
    wait_for(lambda: vmi_of(kube, namespace, "led"), "the VMI", log=active.log)
    assert not standby.logged("created"), "the standby must not act"
    # A standby is alive and ready to take over: its probes say so (a Deployment of two can be ready).
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{standby.metrics_port}{path}", timeout=5) as answer:
            assert answer.status == 200, path
    active.stop()  # a clean stop releases the lease
    wait_for(lambda: standby.logged("caches synced"), "the standby to take over", timeout=30, log=standby.log)
    lease = kube.get(LEASES, "virt-controller", "kube-system")
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] >= 1
