"""virtctl's VM and VMI actions against a real guest: pause/unpause, reset, VNC, restart, stop and start,
each through the apiserver's aggregation layer, virt-api and (for the VMI actions) the node's handler.
The tests run in file order on one VirtualMachine of the tiny guest."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_env import Podvirt
from test_virtctl_guest import virtctl
from test_vmi_lifecycle import tiny_vmi

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES
from virt_api.testing import VirtApiProcess

pytestmark = [pytest.mark.e2e, pytest.mark.vm]


@dataclass(frozen=True)
class VM:
    namespace: str
    name: str


def _vm_manifest(name: str, image: str) -> dict[str, Any]:
    template = tiny_vmi(name, image)
    # With a VNC display this time (the tiny guest's default omits it).
    del template["spec"]["domain"]["devices"]["autoattachGraphicsDevice"]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"metadata": template["metadata"], "spec": template["spec"]}},
    }


@pytest.fixture(scope="module")
def vm(podvirt: Podvirt, virt_api: VirtApiProcess, tiny_containerdisk: str) -> Iterator[VM]:
    namespace = f"va-{secrets.token_hex(2)}"
    podvirt.cluster.kubectl("create", "namespace", namespace)
    try:
        podvirt.kube.create(VIRTUAL_MACHINES, _vm_manifest("act", tiny_containerdisk), namespace)
        podvirt.wait_phase(namespace, "act", "Running")
        yield VM(namespace, "act")
    finally:
        podvirt.kube.delete(VIRTUAL_MACHINES, "act", namespace)
        podvirt.wait_vmi(namespace, "act", "deleted", lambda o: o is None, timeout=90)
        podvirt.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def run(podvirt: Podvirt, vm: VM, *args: str) -> str:
    proc = virtctl(podvirt, *args, "-n", vm.namespace, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"virtctl {' '.join(args)} exited {proc.returncode}: {err.decode()}"
    return out.decode() + err.decode()


def condition(vmi: dict[str, Any] | None, type_: str) -> str | None:
    for cond in ((vmi or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return str(cond["status"])
    return None


def node_of(podvirt: Podvirt, vm: VM) -> str:
    vmi = podvirt.vmi(vm.namespace, vm.name)
    assert vmi is not None
    return str(vmi["status"]["nodeName"])


def test_pause_and_unpause_the_vm(podvirt: Podvirt, vm: VM) -> None:
    run(podvirt, vm, "pause", "vm", vm.name)
    podvirt.wait_vmi(vm.namespace, vm.name, "paused", lambda o: condition(o, "Paused") == "True", timeout=60)
    paused = podvirt.vmi(vm.namespace, vm.name)
    assert condition(paused, "Ready") == "False"
    run(podvirt, vm, "unpause", "vm", vm.name)
    podvirt.wait_vmi(
        vm.namespace,
        vm.name,
        "running again",
        lambda o: condition(o, "Paused") is None and condition(o, "Ready") == "True",
        timeout=60,
    )


def test_reset_reboots_the_guest_in_place(podvirt: Podvirt, vm: VM) -> None:
    node = node_of(podvirt, vm)
    uid = podvirt.vmi(vm.namespace, vm.name)["metadata"]["uid"]  # type: ignore[index]
    podvirt.read_console_until(node, vm.namespace, vm.name, b"guest# ", send=b"\n", timeout=180)
    podvirt.read_console_until(
        node, vm.namespace, vm.name, b"MARKED-7", send=b"touch /tmp/before-reset && echo MARKED-$((3+4))\n"
    )
    run(podvirt, vm, "reset", vm.name)
    # /tmp is a tmpfs: a guest that really rebooted has lost the file; the VMI is the same one.
    podvirt.read_console_until(node, vm.namespace, vm.name, b"PODVIRT-GUEST-READY", send=b"\n", timeout=180)
    # `test` answers 1 when the file is gone: RESET-PROBE-12 (a guest that kept it would print -02). The
    # typed line, echoed back, holds only the unexpanded `$?$((1+1))`.
    podvirt.read_console_until(
        node, vm.namespace, vm.name, b"RESET-PROBE-12", send=b"test -e /tmp/before-reset; echo RESET-PROBE-$?$((1+1))\n"
    )
    assert podvirt.vmi(vm.namespace, vm.name)["metadata"]["uid"] == uid  # type: ignore[index]


def test_vnc_proxy_only_serves_the_guests_display(podvirt: Podvirt, vm: VM) -> None:
    proc = virtctl(podvirt, "vnc", "--proxy-only", vm.name, "-n", vm.namespace, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        port = json.loads(line)["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as viewer:
            viewer.settimeout(30)
            greeting = viewer.recv(12)
        assert greeting.startswith(b"RFB 003."), greeting
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_restart_replaces_the_vmi(podvirt: Podvirt, vm: VM) -> None:
    before = podvirt.vmi(vm.namespace, vm.name)["metadata"]["uid"]  # type: ignore[index]
    run(podvirt, vm, "restart", vm.name)

    def restarted(obj: dict[str, Any] | None) -> bool:
        return (
            obj is not None and obj["metadata"]["uid"] != before and (obj.get("status") or {}).get("phase") == "Running"
        )

    podvirt.wait_vmi(vm.namespace, vm.name, "restarted (a new VMI running)", restarted, timeout=240)


def test_stop_then_start(podvirt: Podvirt, vm: VM) -> None:
    run(podvirt, vm, "stop", vm.name)
    podvirt.wait_vmi(vm.namespace, vm.name, "gone after stop", lambda o: o is None, timeout=120)
    deadline = time.monotonic() + 60
    while podvirt.kube.get(VIRTUAL_MACHINES, vm.name, vm.namespace).get("status", {}).get("printableStatus") != (
        "Stopped"
    ):
        assert time.monotonic() < deadline, "the VM never showed Stopped"
        time.sleep(0.5)
    run(podvirt, vm, "start", vm.name)
    podvirt.wait_phase(vm.namespace, vm.name, "Running", timeout=240)
    assert podvirt.kube.list_objects(VIRTUAL_MACHINE_INSTANCES, vm.namespace)[0]["metadata"]["name"] == vm.name
