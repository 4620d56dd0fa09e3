"""A VMI's whole life on devcluster: created → launcher pod scheduled and run → guest boots → Running;
console through the handler; deletion shuts the guest down and leaves no pod and no QEMU behind.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from typing import Any

import pytest
from e2e_env import Podvirt

from devcluster.node.logs import container_log
from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES

pytestmark = [pytest.mark.e2e, pytest.mark.vm]


def tiny_vmi(name: str, image: str, **spec: Any) -> dict[str, Any]:
    """A KubeVirt-format VMI of the tiny guest from its containerDisk, on the pod network (masquerade)."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "domain": {
                "memory": {"guest": "96Mi"},
                "resources": {"requests": {"memory": "96Mi"}},
                "devices": {
                    "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                    "interfaces": [{"name": "default", "masquerade": {}}],
                    "autoattachGraphicsDevice": False,
                },
            },
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "root", "containerDisk": {"image": image}}],
            "terminationGracePeriodSeconds": 10,
            **spec,
        },
    }


def qemu_pids(namespace: str | None = None) -> set[int]:
    """QEMU processes on this machine; with ``namespace``, only those of that namespace's domains (libvirt
    names a VMI's domain ``<namespace>_<name>``: tests in their own namespace do not count QEMUs that a
    benchmark or another run has beside them)."""
    marker = None if namespace is None else f"guest={namespace}_".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read()  # noqa: SIM115
        except OSError:
            continue
        is_qemu = cmd.startswith(b"/usr/bin/qemu-system") or b"qemu-system-x86_64" in cmd.split(b"\0")[0]
        if is_qemu and (marker is None or marker in cmd):
            found.add(int(entry))
    return found


def test_vmi_runs_boots_serves_its_console_and_goes_away(
    podvirt: Podvirt, namespace: str, tiny_containerdisk: str
) -> None:
    before = qemu_pids(namespace)
    podvirt.kube.create(
        VIRTUAL_MACHINE_INSTANCES,
        tiny_vmi("tiny", tiny_containerdisk),
        namespace,
    )
    running = podvirt.wait_phase(namespace, "tiny", "Running")
    status = running["status"]
    node = status["nodeName"]
    assert node in podvirt.cluster.nodes
    assert next(c for c in status.get("conditions", []) if c["type"] == "Ready")["status"] == "True"
    phases = [t["phase"] for t in status["phaseTransitionTimestamps"]]
    assert phases[-1] == "Running"
    pods = podvirt.launcher_pods(namespace)
    assert len(pods) == 1
    assert pods[0]["metadata"]["name"].startswith("virt-launcher-tiny-")
    # The handler handed the launcher the node's QEMU capabilities: its libvirt did not probe QEMU.
    launcher_log = container_log(
        podvirt.cluster.config.node_root(node), pods[0]["metadata"]["uid"], pods[0]["spec"]["containers"][0]["name"]
    )
    assert "QEMU capabilities seeded from the node" in launcher_log, launcher_log[-2000:]

    # The guest really booted: its console (through the handler's mutual-TLS endpoint) shows the marker,
    # and a command typed into it runs in the guest.
    podvirt.read_console_until(node, namespace, "tiny", b"PODVIRT-GUEST-READY", send=b"\n")
    answer = podvirt.read_console_until(node, namespace, "tiny", b"ECHO-42", send=b"echo ECHO-$((40+2))\n")
    assert b"ECHO-42" in answer

    # Masquerade binding: the handler's DHCP gave the guest 10.0.2.2, and a port the guest listens on
    # answers at the pod's (and the VMI's reported) address from the host.
    pod_ip = pods[0]["status"]["podIP"]
    iface = podvirt.wait_vmi(namespace, "tiny", "reporting its IP", lambda o: bool(o and o["status"].get("interfaces")))
    assert iface is not None
    assert iface["status"]["interfaces"][0]["ipAddress"] == pod_ip
    podvirt.read_console_until(node, namespace, "tiny", b"PODVIRT-IP=10.0.2.2", send=b"\n", timeout=90)
    podvirt.read_console_until(
        node,
        namespace,
        "tiny",
        b"HTTPD-2-UP",
        send=b"mkdir -p /tmp/w && echo PODVIRT-FROM-GUEST > /tmp/w/index.html && "
        b"httpd -p 8080 -h /tmp/w && echo HTTPD-$((1+1))-UP\n",
    )
    # The echo of the typed line is not the marker (the guest computes it), so httpd is listening.
    with urllib.request.urlopen(f"http://{pod_ip}:8080/index.html", timeout=20) as resp:
        assert resp.read().strip() == b"PODVIRT-FROM-GUEST"
    ours = qemu_pids(namespace) - before
    assert len(ours) == 1

    # The node handler's metrics show this guest's real counters: CPU it used, bytes its NIC received.
    metrics = podvirt.handler_metrics(node)
    vmi_labels = f'name="tiny",namespace="{namespace}",node="{node}"'
    cpu = re.search(rf"^kubevirt_vmi_cpu_usage_seconds{{{vmi_labels}}} (\S+)$", metrics, re.MULTILINE)
    assert cpu is not None and float(cpu.group(1)) > 0, f"{metrics}\n{podvirt.log_tail(f'virt-handler-{node}')}"
    rx = re.search(
        rf"^kubevirt_vmi_network_receive_bytes_total{{interface=\"[^\"]+\",{vmi_labels}}} (\S+)$", metrics, re.M
    )
    assert rx is not None and float(rx.group(1)) > 0, metrics
    assert "process_resident_memory_bytes" in metrics

    podvirt.kube.delete(VIRTUAL_MACHINE_INSTANCES, "tiny", namespace)
    podvirt.wait_vmi(namespace, "tiny", "deleted", lambda o: o is None, timeout=90)
    deadline = time.monotonic() + 60
    while (podvirt.launcher_pods(namespace) or qemu_pids() & ours) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert podvirt.launcher_pods(namespace) == []
    leftover = qemu_pids() & ours
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, "QEMU outlived its VMI"
