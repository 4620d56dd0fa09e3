"""A real cloud guest the way a KubeVirt user meets it, in one boot: ``kubectl apply`` of a VirtualMachine
(KubeVirt's YAML, cloudInitNoCloud user-data with a user, a password and an SSH key) → Running; cloud-init
applies; ``virtctl console`` in a terminal logs in with the password; ``virtctl ssh`` logs in with the
key; the guest agent makes ``AgentConnected`` true and ``virtctl guestosinfo`` answers with Debian's facts;
``virtctl stop`` shuts the guest down through ACPI (the VMI ends Succeeded, never Failed) and the VM
shows Stopped.

The guest is the Debian image of ``images/cloudguest/build.sh`` (cached; built on first use, which takes
minutes), imported into the stand-in nodes' image store as a containerDisk. Under TCG it reaches its
login prompt about 60 s after QEMU starts on a quiet machine, cloud-init's last stage later still.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_env import Podvirt
from test_virtctl_guest import read_until, virtctl, virtctl_env
from test_vmi_lifecycle import qemu_pids

from devcluster.cluster import Cluster
from devcluster.images import import_image
from podvirt_common.kube import PODS, VIRTUAL_MACHINES, Kube, NotFoundError
from virt_api.testing import VirtApiProcess

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "images/cloudguest/build.sh"
IMAGE = "registry.podvirt.test/cloudguest-containerdisk:1"
VM = "cloud"  # short: libvirt's agent socket path (namespace_name) must stay under 108 bytes
USER, PASSWORD = "podvirt", f"pw-{secrets.token_hex(6)}"
DONE = b"PODVIRT-CLOUDINIT-DONE"
# One guest, one boot: boot and cloud-init take minutes under TCG on a loaded 2-core machine.
BOOT_TIMEOUT = 600
VIRTCTL = (sys.executable, "-m", "virtctl")


@pytest.fixture(scope="module")
def cloudguest_containerdisk(cluster: Cluster) -> str:
    """The cloud guest's containerDisk (built by build.sh the first time), in the nodes' image store."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=3000)
    image_dir = Path(out.stdout.strip().splitlines()[-1])
    import_image(cluster.config.image_store, image_dir / "oci" / "containerdisk", IMAGE)
    return IMAGE


def vm_yaml(ssh_key: str) -> str:
    """A VirtualMachine as KubeVirt's documentation writes one."""
    user_data = "\n".join(
        [
            "#cloud-config",
            "users:",
            f"  - name: {USER}",
            "    shell: /bin/bash",
            "    lock_passwd: false",
            f"    plain_text_passwd: {PASSWORD}",
            "    ssh_authorized_keys:",
            f"      - {ssh_key}",
            "ssh_pwauth: true",
            "runcmd:",
            f"  - echo {DONE.decode()} > /dev/ttyS0",
        ]
    )
    indented = "\n".join("                " + line for line in user_data.splitlines())
    return f"""\
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {VM}
spec:
  runStrategy: Always
  template:
    metadata:
      labels:
        kubevirt.io/vm: {VM}
    spec:
      terminationGracePeriodSeconds: 180
      domain:
        devices:
          disks:
            - name: containerdisk
              disk:
                bus: virtio
            - name: cloudinitdisk
              disk:
                bus: virtio
          interfaces:
            - name: default
              masquerade: {{}}
        resources:
          requests:
            memory: 512Mi
      networks:
        - name: default
          pod: {{}}
      volumes:
        - name: containerdisk
          containerDisk:
            image: {IMAGE}
        - name: cloudinitdisk
          cloudInitNoCloud:
            userData: |
{indented}
"""


def ssh_key_pair(directory: Path) -> tuple[Path, str]:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "podvirt-e2e", "-f", str(key)], check=True)
    return key, (directory / "id_ed25519.pub").read_text().strip()


def vm_status(podvirt: Podvirt, namespace: str) -> dict[str, Any]:
    try:
        return podvirt.kube.get(VIRTUAL_MACHINES, VM, namespace).get("status") or {}
    except NotFoundError:
        return {}


def condition(vmi: dict[str, Any] | None, ctype: str) -> str | None:
    conditions = ((vmi or {}).get("status") or {}).get("conditions") or []
    return next((c.get("status") for c in conditions if c.get("type") == ctype), None)


class LauncherExits(threading.Thread):
    """Watches the namespace's launcher pods and records how their ``compute`` container ended: the
    launcher exits 0 only when the guest shut itself down, 1 when it was killed or crashed."""

    def __init__(self, podvirt: Podvirt, namespace: str) -> None:
        super().__init__(daemon=True, name="launcher-exits")
        self.kube = Kube.connect(str(podvirt.cluster.kubeconfig))
        self.namespace = namespace
        self.exit_codes: list[int] = []
        self.watching = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for kind, pod in self.kube.watch(
                PODS, self.namespace, label_selector="kubevirt.io=virt-launcher", timeout_seconds=300
            ):
                self.watching.set()
                for container in (pod.get("status") or {}).get("containerStatuses") or []:
                    ended = (container.get("state") or {}).get("terminated")
                    if container.get("name") == "compute" and ended and not self.exit_codes:
                        self.exit_codes.append(int(ended["exitCode"]))
                if kind == "DELETED":
                    break
        finally:
            self.done.set()
            self.kube.close()


@pytest.fixture
def cloud_vm(
    podvirt: Podvirt, virt_api: VirtApiProcess, cloudguest_containerdisk: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """The VM applied with kubectl; deleted afterwards (and no QEMU of its left behind) even on failure."""
    key, public = ssh_key_pair(tmp_path)
    manifest = tmp_path / "vm.yaml"
    manifest.write_text(vm_yaml(public))
    before = qemu_pids(namespace)
    podvirt.cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
    try:
        yield namespace, key
    finally:
        podvirt.cluster.kubectl("delete", "vm", VM, "-n", namespace, "--wait=false", check=False)
        deadline = time.monotonic() + 240
        while (podvirt.vmi(namespace, VM) or podvirt.launcher_pods(namespace)) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in qemu_pids(namespace) - before:
            os.kill(pid, 9)


@pytest.mark.timeout(1500)
def test_cloud_guest_from_kubectl_apply_to_virtctl_stop(podvirt: Podvirt, cloud_vm: tuple[str, Path]) -> None:
    namespace, key = cloud_vm
    running = podvirt.wait_phase(namespace, VM, "Running", timeout=300)
    assert running["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachine"

    # The console from the start, so that cloud-init's marker (written to ttyS0 by runcmd) is seen.
    master, slave = os.openpty()
    console = virtctl(podvirt, "console", VM, "-n", namespace, stdin=slave, stdout=slave, stderr=slave)
    try:
        seen = read_until(master, DONE, BOOT_TIMEOUT)
        seen = read_until(master, b"login: ", 120, poke=b"\r", seen=seen.split(DONE, 1)[1])
        os.write(master, USER.encode() + b"\r")
        seen = read_until(master, b"assword: ", 60)
        os.write(master, PASSWORD.encode() + b"\r")
        seen = read_until(master, b"$ ", 120)
        os.write(master, b'echo "ID=$(id -un)"\r')
        seen = read_until(master, f"ID={USER}".encode(), 60)
        os.write(master, b"exit\r\x1d")
        assert console.wait(30) == 0
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
        os.close(master)
        os.close(slave)

    # SSH with the key from the user-data, through virtctl port-forward --stdio as ssh's ProxyCommand.
    ssh = [
        "ssh",
        "-i",
        str(key),
        "--known-hosts=/dev/null",
        "-t",
        "-o StrictHostKeyChecking=no",
        "-t",
        "-o BatchMode=yes",
        "-c",
        "echo SSH-$((6*7)) $(id -un)",
        f"{USER}@vmi/{VM}/{namespace}",
    ]
    for attempt in range(5):
        done = subprocess.run([*VIRTCTL, *ssh], capture_output=True, env=virtctl_env(podvirt), timeout=180, check=False)
        if done.returncode == 0 or attempt == 4:
            break
        time.sleep(10)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().strip() == f"SSH-42 {USER}"

    # The guest agent (Debian's qemu-guest-agent, started by udev) reaches the VMI's status.
    vmi = podvirt.wait_vmi(
        namespace,
        VM,
        "AgentConnected with guestOSInfo",
        lambda o: condition(o, "AgentConnected") == "True" and bool((o or {}).get("status", {}).get("guestOSInfo")),
        timeout=120,
    )
    assert vmi is not None
    os_info = vmi["status"]["guestOSInfo"]
    assert os_info["id"] == "debian" and os_info["versionId"] == "12", os_info
    assert os_info["kernelRelease"] and os_info["machine"] == "x86_64"
    (iface,) = vmi["status"]["interfaces"]
    pod_ip = podvirt.launcher_pods(namespace)[0]["status"]["podIP"]
    assert iface["ipAddress"] == pod_ip, "masquerade: the pod's address, as in KubeVirt"
    assert iface["infoSource"] == "domain, guest-agent" and iface["interfaceName"].startswith(("enp", "eth")), iface

    info = subprocess.run(
        [*VIRTCTL, "guestosinfo", VM, "-n", namespace],
        capture_output=True,
        env=virtctl_env(podvirt),
        timeout=60,
        check=False,
    )
    assert info.returncode == 0, info.stderr.decode(errors="replace")
    answer = json.loads(info.stdout)
    assert answer["os"]["prettyName"].startswith("Debian GNU/Linux 12"), answer
    assert answer["hostname"] == VM

    # virtctl stop: runStrategy becomes Halted, the VMI is deleted, the handler asks for an ACPI shutdown
    # and the guest powers itself off well within the 180 s grace period (a kill would end it Failed).
    uid = vmi["metadata"]["uid"]
    exits = LauncherExits(podvirt, namespace)
    exits.start()
    assert exits.watching.wait(30), "the launcher pod watch did not start"
    stop = subprocess.run(
        [*VIRTCTL, "stop", VM, "-n", namespace], capture_output=True, env=virtctl_env(podvirt), check=False
    )
    assert stop.returncode == 0, stop.stderr.decode(errors="replace")
    phases = set()
    deadline = time.monotonic() + 240
    while (current := podvirt.vmi(namespace, VM)) is not None and current["metadata"]["uid"] == uid:
        phases.add((current.get("status") or {}).get("phase"))
        assert time.monotonic() < deadline, f"VMI still there after stop; phases seen {phases}"
        time.sleep(0.2)
    assert "Failed" not in phases, phases
    assert exits.done.wait(120), "the launcher pod was never deleted"
    assert exits.exit_codes == [0], f"the launcher reported no clean shutdown: exit codes {exits.exit_codes}"
    deadline = time.monotonic() + 60
    while vm_status(podvirt, namespace).get("printableStatus") != "Stopped":
        assert time.monotonic() < deadline, vm_status(podvirt, namespace)
        time.sleep(0.5)
    assert podvirt.vmi(namespace, VM) is None
