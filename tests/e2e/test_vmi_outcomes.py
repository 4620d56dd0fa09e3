"""How a VMI ends, and what a virt-handler crash does not change.

- the guest powers itself off → Succeeded;
- QEMU is killed → Failed;
- virt-handler is SIGKILLed with guests running and started again → the guests keep running, their
  launcher pods and QEMU processes are the same, and their status is not rewritten.
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from typing import Any

import pytest
from e2e_env import Podvirt
from test_vmi_lifecycle import qemu_pids, tiny_vmi

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES

pytestmark = [pytest.mark.e2e, pytest.mark.vm]


def create_running(podvirt: Podvirt, namespace: str, image: str, *names: str) -> dict[str, dict[str, Any]]:
    for name in names:
        podvirt.kube.create(VIRTUAL_MACHINE_INSTANCES, tiny_vmi(name, image), namespace)
    return {name: podvirt.wait_phase(namespace, name, "Running", timeout=300) for name in names}


def test_guest_power_off_is_succeeded(podvirt: Podvirt, namespace: str, tiny_containerdisk: str) -> None:
    vmi = create_running(podvirt, namespace, tiny_containerdisk, "off")["off"]
    node = vmi["status"]["nodeName"]
    podvirt.read_console_until(node, namespace, "off", b"PODVIRT-GUEST-READY", send=b"\n")
    podvirt.read_console_until(node, namespace, "off", b"poweroff", send=b"poweroff -f\n")
    done = podvirt.wait_phase(namespace, "off", "Succeeded", timeout=120)
    conditions = done["status"].get("conditions") or []
    # On failure, who wrote the condition is in managedFields.
    assert not any(c["type"] == "Ready" for c in conditions), (
        f"{conditions}\n{podvirt.log_tail('virt-controller', 80)}\n{podvirt.log_tail(f'virt-handler-{node}', 40)}"
    )


def test_killed_qemu_is_failed(podvirt: Podvirt, namespace: str, tiny_containerdisk: str) -> None:
    before = qemu_pids(namespace)
    create_running(podvirt, namespace, tiny_containerdisk, "crash")
    ours = qemu_pids(namespace) - before
    assert len(ours) == 1
    os.kill(ours.pop(), signal.SIGKILL)
    failed = podvirt.wait_phase(namespace, "crash", "Failed", timeout=120)
    assert failed["status"].get("reason")


def test_handler_crash_changes_nothing_for_running_guests(
    podvirt: Podvirt, namespace: str, tiny_containerdisk: str
) -> None:
    before_qemu = qemu_pids(namespace)
    names = ("keep-a", "keep-b", "keep-c", "keep-d", "keep-e")
    running = create_running(podvirt, namespace, tiny_containerdisk, *names)
    for name in names:
        # Booted to its shell: what is typed later is read, not lost in the boot.
        node = running[name]["status"]["nodeName"]
        podvirt.read_console_until(node, namespace, name, b"guest# ", send=b"\n", timeout=180)
    qemu = qemu_pids(namespace) - before_qemu
    assert len(qemu) == len(names)
    pods = {p["metadata"]["uid"] for p in podvirt.launcher_pods(namespace)}
    stamps = {n: running[n]["status"]["phaseTransitionTimestamps"] for n in names}

    for node in podvirt.cluster.nodes:
        podvirt.kill(f"virt-handler-{node}")
    for node in podvirt.cluster.nodes:
        podvirt.start(f"virt-handler-{node}")
    for node in podvirt.cluster.nodes:
        podvirt.wait_handler(node)

    # The restarted handlers find every launcher again: consoles work, nothing was restarted.
    for name in names:
        node = running[name]["status"]["nodeName"]
        # A just-restarted handler has reset the first console connection under load (seen in CI, not
        # yet explained: see the closing note); a second try must work.
        for attempt in range(3):
            try:
                podvirt.read_console_until(node, namespace, name, b"ECHO-7", send=b"echo ECHO-$((3+4))\n", timeout=120)
                break
            except (ConnectionError, ssl.SSLError):
                if attempt == 2:
                    raise
                time.sleep(5)
    assert qemu_pids(namespace) - before_qemu == qemu
    assert {p["metadata"]["uid"] for p in podvirt.launcher_pods(namespace)} == pods
    for name in names:
        now = podvirt.vmi(namespace, name)
        assert now is not None
        assert now["status"]["phase"] == "Running"
        assert now["status"]["phaseTransitionTimestamps"] == stamps[name]
