"""Failure drills: a part of the system fails while real guests run, and nothing is lost.

Each drill breaks one thing the way it breaks in a cluster and then checks what users would check:
which guests still run (the same QEMU processes), which VMIs exist and in which phase, what the VMs
show, and that no launcher pod was doubled or left behind.

- the launcher's QEMU is killed: a VM with ``runStrategy: Always`` gets a new VMI that runs, a ``Manual``
  VM stays stopped with its VMI Failed;
- kube-apiserver restarts under running guests: they keep running, no VMI changes phase, and the
  components reconnect (a pause, an unpause and a new VMI made afterwards all show);
- virt-api is down: running VMs keep running and can be deleted, a new VM is refused with an error
  naming the webhook, and creation works again once virt-api is back;
- virt-controller is SIGKILLed during a burst of VM creations: once restarted, exactly one VMI per VM,
  all Running, one launcher pod each;
- a stand-in node dies (its node agent and its virt-handler SIGKILLed; the agent's pods die with it):
  its VMIs become Failed with reason NodeUnresponsive, their launcher pods are deleted without waiting
  for the node, the ``Always`` VM comes back on the other node and a guest there never notices. Last in
  the module: it brings the node back.

(virt-handler SIGKILLed under five guests is in ``test_vmi_outcomes.py``; fuzzing of the webhooks is in
``tests/cluster/test_api_admission.py``, of the launcher's command socket in ``tests/unit/launcher/``.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from e2e_env import Podvirt
from test_vmi_lifecycle import tiny_vmi

from podvirt_common.kube import (
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    ApiError,
    Kube,
    NotFoundError,
)
from virt_api.testing import VirtApiProcess

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

T = TypeVar("T")
GRACE = 3  # seconds: the guests here are killed or deleted, never asked to shut down for long


# -- helpers ----------------------------------------------------------------------------------------


def tiny_vm(name: str, image: str, run_strategy: str) -> dict[str, Any]:
    """A KubeVirt-format VirtualMachine whose template is the tiny guest."""
    vmi = tiny_vmi(name, image, terminationGracePeriodSeconds=GRACE)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": run_strategy,
            "template": {"metadata": {"labels": vmi["metadata"]["labels"]}, "spec": vmi["spec"]},
        },
    }


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, explain: Callable[[], str] = str) -> T:
    """``probe()`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:.0f} s\n{explain()}")
        time.sleep(0.25)


def qemu_pid(namespace: str, name: str) -> int | None:
    """The QEMU process running the domain of VMI ``namespace/name`` (libvirt names it ``<ns>_<name>``)."""
    wanted = f"guest={namespace}_{name},".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"qemu-system" in cmd.split(b"\0")[0] and wanted in cmd:
            return int(entry)
    return None


def vm_status(podvirt: Podvirt, namespace: str, name: str) -> dict[str, Any]:
    return podvirt.kube.get(VIRTUAL_MACHINES, name, namespace).get("status") or {}


def phase_of(vmi: dict[str, Any] | None) -> str | None:
    return None if vmi is None else (vmi.get("status") or {}).get("phase")


def condition_true(vmi: dict[str, Any] | None, kind: str) -> bool:
    conditions = ((vmi or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def live_launcher_pods(podvirt: Podvirt, namespace: str) -> list[dict[str, Any]]:
    return [p for p in podvirt.launcher_pods(namespace) if not p["metadata"].get("deletionTimestamp")]


def virtctl(podvirt: Podvirt, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(podvirt.cluster.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "virtctl", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def logs(podvirt: Podvirt) -> str:
    return "\n".join(podvirt.log_tail(r.name, 40) for r in podvirt.records)


class PhaseRecorder:
    """Every (name, uid, phase) a namespace's VMIs were seen in, from a watch (short phases included)."""

    def __init__(self, podvirt: Podvirt, namespace: str) -> None:
        self.kube = Kube.connect(str(podvirt.cluster.kubeconfig))
        self.namespace = namespace
        self.seen: list[tuple[str, str, str]] = []
        self.deleted: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a watch ends now and then: start another
                for kind, obj in self.kube.watch(VIRTUAL_MACHINE_INSTANCES, self.namespace, timeout_seconds=30):
                    if kind == "BOOKMARK":
                        continue
                    meta = obj["metadata"]
                    self.seen.append((meta["name"], meta["uid"], phase_of(obj) or ""))
                    if kind == "DELETED":
                        self.deleted.add(meta["uid"])
                    if self._stop.is_set():
                        return

    def phases(self, uid: str) -> list[str]:
        return [phase for _, seen_uid, phase in self.seen if seen_uid == uid]

    def __enter__(self) -> PhaseRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.kube.close()


def start_vms(podvirt: Podvirt, namespace: str, image: str, strategies: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Create the VMs (Manual ones started with virtctl, as a user would) and wait until each VMI runs."""
    for name, strategy in strategies.items():
        podvirt.kube.create(VIRTUAL_MACHINES, tiny_vm(name, image, strategy), namespace)
        if strategy == "Manual":
            started = virtctl(podvirt, "start", name, "-n", namespace)
            assert started.returncode == 0, started.stderr
    return {name: podvirt.wait_phase(namespace, name, "Running", timeout=300) for name in strategies}


@pytest.fixture(scope="module")
def api(virt_api: VirtApiProcess) -> VirtApiProcess:
    """virt-api for this module (the drills stop and start it; they leave it running)."""
    return virt_api


# -- the drills ------------------------------------------------------------------------------------


def test_killed_qemu_restarts_an_always_vm_and_leaves_a_manual_vm_stopped(
    podvirt: Podvirt, api: VirtApiProcess, namespace: str, tiny_containerdisk: str
) -> None:
    with PhaseRecorder(podvirt, namespace) as recorder:
        before = start_vms(podvirt, namespace, tiny_containerdisk, {"alw": "Always", "man": "Manual"})
        old = {name: vmi["metadata"]["uid"] for name, vmi in before.items()}
        pids = {name: qemu_pid(namespace, name) for name in before}
        assert None not in pids.values(), pids
        for pid in pids.values():
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

        # Always: the failed VMI is replaced (after the crash-loop back-off) by a new one that runs.
        renewed = podvirt.wait_vmi(
            namespace,
            "alw",
            "replaced by a Running VMI",
            lambda o: o is not None and o["metadata"]["uid"] != old["alw"] and phase_of(o) == "Running",
            timeout=240,
        )
        assert renewed is not None
        assert "Failed" in recorder.phases(old["alw"]), recorder.seen
        wait_for("the old VMI gone", lambda: old["alw"] in recorder.deleted, 30)
        new_pid = wait_for("a QEMU for the new VMI", lambda: qemu_pid(namespace, "alw"), 30)
        assert new_pid != pids["alw"]
        assert wait_for(
            "VM alw Running", lambda: vm_status(podvirt, namespace, "alw").get("printableStatus") == "Running", 60
        )

        # Manual: the VMI stays, Failed, and nothing starts it again.
        failed = podvirt.wait_phase(namespace, "man", "Failed", timeout=60)
        assert failed["metadata"]["uid"] == old["man"]
        assert failed["status"].get("reason"), failed["status"]
        wait_for("VM man Stopped", lambda: vm_status(podvirt, namespace, "man").get("printableStatus") == "Stopped", 60)
        time.sleep(15)  # longer than the crash-loop back-off that would restart an automatic VM
        still = podvirt.vmi(namespace, "man")
        assert still is not None and still["metadata"]["uid"] == old["man"] and phase_of(still) == "Failed"
        status = vm_status(podvirt, namespace, "man")
        assert status.get("printableStatus") == "Stopped"
        assert status.get("ready") is not True
        assert qemu_pid(namespace, "man") is None
    pods = live_launcher_pods(podvirt, namespace)
    running = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    assert [p["metadata"]["labels"]["kubevirt.io/created-by"] for p in running] == [renewed["metadata"]["uid"]]


def test_apiserver_restart_leaves_guests_running_and_components_reconnect(
    podvirt: Podvirt, api: VirtApiProcess, namespace: str, tiny_containerdisk: str
) -> None:
    before = start_vms(podvirt, namespace, tiny_containerdisk, {"steady": "Always"})
    podvirt.kube.create(VIRTUAL_MACHINE_INSTANCES, tiny_vmi("bare", tiny_containerdisk), namespace)
    before["bare"] = podvirt.wait_phase(namespace, "bare", "Running", timeout=300)
    pids = {name: qemu_pid(namespace, name) for name in before}
    stamps = {name: vmi["status"]["phaseTransitionTimestamps"] for name, vmi in before.items()}

    podvirt.cluster.restart_component("kube-apiserver")
    wait_for(
        "kube-apiserver ready again",
        lambda: podvirt.cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        120,
    )

    # Through virt-api and the handler, reported by the handler (VMI) and the controller (VM).
    paused = virtctl(podvirt, "pause", "vm", "steady", "-n", namespace)
    assert paused.returncode == 0, paused.stderr
    podvirt.wait_vmi(namespace, "steady", "Paused", lambda o: condition_true(o, "Paused"), timeout=90)
    wait_for(
        "VM steady shown Paused",
        lambda: vm_status(podvirt, namespace, "steady").get("printableStatus") == "Paused",
        60,
        lambda: logs(podvirt),
    )
    unpaused = virtctl(podvirt, "unpause", "vm", "steady", "-n", namespace)
    assert unpaused.returncode == 0, unpaused.stderr
    podvirt.wait_vmi(namespace, "steady", "unpaused", lambda o: not condition_true(o, "Paused"), timeout=90)
    wait_for(
        "VM steady Running", lambda: vm_status(podvirt, namespace, "steady").get("printableStatus") == "Running", 60
    )
    # A new VMI goes the whole way: controller, scheduler, node, handler.
    podvirt.kube.create(VIRTUAL_MACHINE_INSTANCES, tiny_vmi("after", tiny_containerdisk), namespace)
    podvirt.wait_phase(namespace, "after", "Running", timeout=300)

    for name, vmi in before.items():
        now = podvirt.vmi(namespace, name)
        assert now is not None and now["metadata"]["uid"] == vmi["metadata"]["uid"]
        assert phase_of(now) == "Running"
        assert now["status"]["phaseTransitionTimestamps"] == stamps[name], name
        assert qemu_pid(namespace, name) == pids[name], name
    node = before["bare"]["status"]["nodeName"]
    podvirt.read_console_until(node, namespace, "bare", b"ECHO-9", send=b"echo ECHO-$((4+5))\n", timeout=120)


def test_virt_api_down_running_vms_keep_running_and_can_be_deleted(
    podvirt: Podvirt, api: VirtApiProcess, namespace: str, tiny_containerdisk: str
) -> None:
    before = start_vms(podvirt, namespace, tiny_containerdisk, {"keep": "Always", "drop": "Always"})
    pids = {name: qemu_pid(namespace, name) for name in before}
    stamps = {name: vmi["status"]["phaseTransitionTimestamps"] for name, vmi in before.items()}

    assert api.process is not None
    os.kill(api.process.pid, signal.SIGKILL)  # a crash: no chance to unregister its webhooks
    api.process.wait(10)
    api.process = None
    try:
        # Deleting needs no webhook: the VM, its VMI (finalizer removed by metadata patches) and its pod go.
        podvirt.kube.delete(VIRTUAL_MACHINES, "drop", namespace)
        podvirt.wait_vmi(namespace, "drop", "deleted", lambda o: o is None, timeout=120)
        wait_for(
            "VM drop deleted",
            lambda: (
                not any(
                    vm["metadata"]["name"] == "drop" for vm in podvirt.kube.list_objects(VIRTUAL_MACHINES, namespace)
                )
            ),
            60,
        )
        wait_for("drop's QEMU gone", lambda: qemu_pid(namespace, "drop") is None, 60)
        wait_for(
            "drop's launcher pod gone",
            lambda: all(
                p["metadata"]["labels"].get("vm.kubevirt.io/name") != "drop" for p in podvirt.launcher_pods(namespace)
            ),
            60,
        )

        # Creating is refused, saying which webhook could not be asked.
        with pytest.raises(ApiError) as refused:
            podvirt.kube.create(VIRTUAL_MACHINES, tiny_vm("new", tiny_containerdisk, "Always"), namespace)
        message = str(refused.value)
        assert "webhook" in message and "kubevirt.io" in message, message
        with pytest.raises(NotFoundError):
            podvirt.kube.get(VIRTUAL_MACHINES, "new", namespace)

        # The running guest never noticed.
        keep = podvirt.vmi(namespace, "keep")
        assert keep is not None and phase_of(keep) == "Running"
        assert keep["status"]["phaseTransitionTimestamps"] == stamps["keep"]
        assert qemu_pid(namespace, "keep") == pids["keep"]
        node = keep["status"]["nodeName"]
        podvirt.read_console_until(node, namespace, "keep", b"ECHO-6", send=b"echo ECHO-$((3+3))\n", timeout=120)
    finally:
        api.start()

    podvirt.kube.create(VIRTUAL_MACHINES, tiny_vm("new", tiny_containerdisk, "Always"), namespace)
    podvirt.wait_phase(namespace, "new", "Running", timeout=300)
    assert qemu_pid(namespace, "keep") == pids["keep"]


def test_controller_killed_during_a_burst_of_vm_creations(
    podvirt: Podvirt, api: VirtApiProcess, namespace: str, tiny_containerdisk: str
) -> None:
    names = [f"burst-{i}" for i in range(6)]
    with PhaseRecorder(podvirt, namespace) as recorder:
        for name in names:
            podvirt.kube.create(VIRTUAL_MACHINES, tiny_vm(name, tiny_containerdisk, "Always"), namespace)
        # Killed once it has begun: some VMIs (and perhaps pods) exist, others not yet.
        wait_for("a first VMI", lambda: recorder.seen, 60, lambda: logs(podvirt))
        podvirt.kill("virt-controller")
        seen_before = {uid for _, uid, _ in recorder.seen}
        podvirt.start("virt-controller")

        running = {name: podvirt.wait_phase(namespace, name, "Running", timeout=300) for name in names}
    uids = {vmi["metadata"]["uid"] for vmi in running.values()}
    assert len(uids) == len(names)
    # No VMI was made twice: every VMI ever seen is one of these, and none was deleted.
    assert {uid for _, uid, _ in recorder.seen} == uids, recorder.seen
    assert seen_before <= uids
    assert not recorder.deleted
    vmis = podvirt.kube.list_objects(VIRTUAL_MACHINE_INSTANCES, namespace)
    assert sorted(v["metadata"]["name"] for v in vmis) == names
    for vmi in vmis:
        owners = vmi["metadata"].get("ownerReferences") or []
        assert [(o["kind"], o["name"]) for o in owners] == [("VirtualMachine", vmi["metadata"]["name"])]
    pods = podvirt.launcher_pods(namespace)
    assert sorted(p["metadata"]["labels"]["kubevirt.io/created-by"] for p in pods) == sorted(uids)
    assert all((p.get("status") or {}).get("phase") == "Running" for p in pods)
    for name in names:
        assert qemu_pid(namespace, name) is not None, name


#: The controller's node timeout for the node drill (its default is KubeVirt's 300 s). Longer than the
#: handlers' 30 s heartbeat interval with room to spare, and longer than the node lifecycle controller
#: takes to taint the dead node unreachable (about 50 s), so the replacement is not scheduled onto it.
NODE_TIMEOUT = 100


def test_a_dead_node_fails_its_vmis_and_an_always_vm_comes_back_on_the_other_node(
    podvirt: Podvirt, api: VirtApiProcess, namespace: str, tiny_containerdisk: str
) -> None:
    podvirt.kill("virt-controller")
    podvirt.start("virt-controller", [*podvirt.argv["virt-controller"], f"--node-unresponsive-timeout={NODE_TIMEOUT}"])
    with PhaseRecorder(podvirt, namespace) as recorder:
        lost = start_vms(podvirt, namespace, tiny_containerdisk, {"moves": "Always"})["moves"]
        dead = lost["status"]["nodeName"]
        (alive,) = (n for n in podvirt.cluster.nodes if n != dead)
        for name, node in (("stays", dead), ("bystander", alive)):
            pinned = tiny_vmi(name, tiny_containerdisk, nodeSelector={"kubernetes.io/hostname": node})
            podvirt.kube.create(VIRTUAL_MACHINE_INSTANCES, pinned, namespace)
        stays = podvirt.wait_phase(namespace, "stays", "Running", timeout=300)
        bystander = podvirt.wait_phase(namespace, "bystander", "Running", timeout=300)
        assert stays["status"]["nodeName"] == dead and bystander["status"]["nodeName"] == alive
        bystander_qemu = qemu_pid(namespace, "bystander")

        try:
            podvirt.cluster.kill_component(f"node/{dead}")
            podvirt.kill(f"virt-handler-{dead}")
            # The node's guests died with it (their launchers got SIGKILL, QEMU's guard followed).
            wait_for("the dead node's guests gone", lambda: qemu_pid(namespace, "stays") is None, 60)

            failed = podvirt.wait_phase(namespace, "stays", "Failed", timeout=NODE_TIMEOUT + 90)
            assert failed["status"]["reason"] == "NodeUnresponsive", failed["status"]
            assert not any(c["type"] == "Ready" for c in failed["status"].get("conditions") or [])
            wait_for(
                "the launcher pods on the dead node deleted",
                lambda: not [p for p in podvirt.launcher_pods(namespace) if p["spec"].get("nodeName") == dead],
                60,
                lambda: logs(podvirt),
            )
            moved = podvirt.wait_vmi(
                namespace,
                "moves",
                "running again elsewhere",
                lambda o: (
                    o is not None and o["metadata"]["uid"] != lost["metadata"]["uid"] and phase_of(o) == "Running"
                ),
                timeout=240,
            )
            assert moved is not None and moved["status"]["nodeName"] == alive
            assert "Failed" in recorder.phases(lost["metadata"]["uid"]), recorder.seen
            assert qemu_pid(namespace, "moves") is not None

            # The other node's guest never noticed.
            now = podvirt.vmi(namespace, "bystander")
            assert now is not None and phase_of(now) == "Running"
            assert now["status"]["phaseTransitionTimestamps"] == bystander["status"]["phaseTransitionTimestamps"]
            assert qemu_pid(namespace, "bystander") == bystander_qemu
            # A VMI of no VM stays Failed: nothing brings it back.
            assert phase_of(podvirt.vmi(namespace, "stays")) == "Failed"
        finally:
            podvirt.cluster.start_component(f"node/{dead}")
            podvirt.start(f"virt-handler-{dead}")
            podvirt.wait_handler(dead)
            podvirt.cluster.kubectl("wait", "--for=condition=Ready", f"node/{dead}", "--timeout=120s")
