"""podvirt on a fresh devcluster for benchmarks: the cluster, the tiny guest's containerDisk, the CRDs,
virt-controller and one virt-handler per node as host processes, and a watcher that timestamps what it
sees. Everything is stopped and removed on the way out, on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster import processes
from devcluster.cluster import Cluster, down, up
from devcluster.config import ClusterConfig, Ports, free_port
from devcluster.images import import_image
from podvirt_common import certs, httpserve
from podvirt_common.kube import PODS, VIRTUAL_MACHINE_INSTANCES, Kube
from virt_handler.deviceplugin import TUN_RESOURCE

REPO = Path(__file__).resolve().parent.parent
IMAGE = "registry.podvirt.test/tiny-containerdisk:1"
NAMESPACE = "default"
LAUNCHERS = "kubevirt.io=virt-launcher"


def tiny_vmi(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The tiny guest (Debian kernel + busybox, 96 MiB, one vCPU) from its containerDisk, masquerade."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "labels": labels or {}},
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
            "volumes": [{"name": "root", "containerDisk": {"image": IMAGE}}],
            "terminationGracePeriodSeconds": 5,
        },
    }


def unschedulable(vmis: list[dict[str, Any]]) -> dict[str, str]:
    """VMI name -> the scheduler's message, for each VMI whose launcher pod the scheduler cannot place
    (virt-controller copies the pod's ``PodScheduled`` condition onto the VMI)."""
    out = {}
    for vmi in vmis:
        for cond in (vmi.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                out[vmi["metadata"]["name"]] = str(cond.get("message") or "")
    return out


class Seen:
    """When this process first saw each VMI in each phase, and each launcher pod Running (monotonic)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.vmi: dict[str, dict[str, float]] = {}
        self.pod_running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _vmis(self) -> None:
        while not self.stop.is_set():
            for kind, obj in self.kube.watch(VIRTUAL_MACHINE_INSTANCES, NAMESPACE, timeout_seconds=60):
                if kind == "BOOKMARK":
                    continue
                phase = (obj.get("status") or {}).get("phase")
                with self.lock:
                    self.vmi.setdefault(obj["metadata"]["name"], {}).setdefault(str(phase), time.monotonic())

    def _pods(self) -> None:
        while not self.stop.is_set():
            for kind, pod in self.kube.watch(PODS, NAMESPACE, label_selector=LAUNCHERS, timeout_seconds=60):
                if kind == "BOOKMARK":
                    continue
                owner = next((r["name"] for r in pod["metadata"].get("ownerReferences") or []), None)
                if owner and (pod.get("status") or {}).get("phase") == "Running":
                    with self.lock:
                        self.pod_running.setdefault(owner, time.monotonic())

    def start(self) -> None:
        for target in (self._vmis, self._pods):
            threading.Thread(target=target, daemon=True).start()

    def count(self, phase: str) -> int:
        with self.lock:
            return sum(phase in phases for phases in self.vmi.values())


@dataclass
class Deployment:
    cfg: ClusterConfig
    cluster: Cluster
    kube: Kube
    seen: Seen
    started: list[processes.ProcessRecord] = field(default_factory=list)

    def record(self, name: str) -> processes.ProcessRecord:
        return next(r for r in self.started if r.name == name)

    def log(self, name: str) -> Path:
        return self.cfg.state_dir / "logs" / f"{name}.log"

    def start(self, name: str, argv: list[str]) -> None:
        proc = processes.spawn(name, argv, self.log(name))
        self.started.append(processes.record(name, proc))

    def metrics_port(self, name: str, timeout: float = 60) -> int:
        """The port a component chose for ``--metrics-address=127.0.0.1:0``, from its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = httpserve.port_from_log(self.log(name).read_text(errors="replace"))
            if port is not None:
                return port
            time.sleep(0.2)
        raise RuntimeError(f"{name} never said where /metrics is; see {self.log(name)}")

    def wait(self, phase: str, count: int, timeout: float, stalled: float = 60.0) -> None:
        """Until ``count`` VMIs were seen in ``phase``. Gives up after ``timeout`` s, or as soon as no VMI
        reached it for ``stalled`` s while some cannot be scheduled at all (they never will by waiting)."""
        deadline = time.monotonic() + timeout
        told = progressed = time.monotonic()
        reached = self.seen.count(phase)
        while reached < count:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"only {reached} of {count} VMIs {phase} after {timeout:.0f} s")
            if now - told > 15:
                told = now
                stuck = unschedulable(self.kube.list_objects(VIRTUAL_MACHINE_INSTANCES, NAMESPACE))
                print(f"  ... {reached} of {count} VMIs {phase}, {len(stuck)} unschedulable", flush=True)
                if stuck and now - progressed > stalled:
                    name, why = sorted(stuck.items())[0]
                    raise RuntimeError(
                        f"stalled at {reached} of {count} VMIs {phase}: {len(stuck)} cannot be scheduled "
                        f"(e.g. {name}: {why})"
                    )
            time.sleep(0.5)
            if self.seen.count(phase) > reached:
                reached, progressed = self.seen.count(phase), time.monotonic()


@contextlib.contextmanager
def deployed(
    name: str,
    nodes: tuple[str, ...],
    pod_cidr: str,
    bridge: str,
    controller_flags: Callable[[Kube], Sequence[str]] = lambda _: (),
    *,
    qemu_capabilities: bool = True,
) -> Iterator[Deployment]:
    """A devcluster with ``nodes`` and podvirt's controller and handlers; torn down afterwards.
    ``controller_flags`` gives extra virt-controller flags once the nodes are up. The handlers hand
    launchers the node's QEMU capabilities (probed first, as their init container does in a
    DaemonSet) unless ``qemu_capabilities`` is false: then every launcher's libvirt probes QEMU.
    ``PODVIRT_BENCH_KEEP=1`` keeps the state directory (the logs) under /var/tmp."""
    build = subprocess.run([str(REPO / "images/guest/build.sh")], check=True, capture_output=True, text=True)
    guest = Path(build.stdout.strip().splitlines()[-1])
    base = Path(tempfile.mkdtemp(prefix=f"podvirt-bench-{name}-", dir="/var/tmp"))
    base.chmod(0o755)
    cfg = ClusterConfig(state_dir=base, ports=Ports.random(), nodes=nodes, pod_cidr=pod_cidr, bridge=bridge)
    dep: Deployment | None = None
    try:
        cluster = up(cfg)
        import_image(cfg.image_store, guest / "oci" / "containerdisk", IMAGE)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kube = Kube.connect(str(cluster.kubeconfig))
        dep = Deployment(cfg, cluster, kube, Seen(kube))
        pki = base / "bench-pki"
        pki.mkdir()
        ca = certs.new_ca("bench-podvirt-internal-ca")
        (pki / "ca.crt").write_bytes(ca.cert_pem)
        certs.issue(ca, "virt-handler", hosts=("127.0.0.1",), server=True).write(pki / "h.crt", pki / "h.key")
        kubeconfig, py = str(cluster.kubeconfig), sys.executable
        capabilities = base / "qemu-capabilities"
        if qemu_capabilities:
            subprocess.run([py, "-m", "virt_launcher.capabilities", str(capabilities)], check=True, capture_output=True)
        dep.start("virt-controller", [
            py, "-m", "virt_controller", f"--kubeconfig={kubeconfig}", "--use-emulation", "--no-leader-elect",
            "--metrics-address=", "--log-format=text", *controller_flags(kube),
        ])  # fmt: skip
        for node in nodes:
            dep.start(f"virt-handler-{node}", [
                py, "-m", "virt_handler", f"--node-name={node}", f"--kubeconfig={kubeconfig}",
                f"--kubelet-root={cfg.node_root(node)}", "--listen=127.0.0.1", f"--port={free_port()}",
                f"--tls-cert={pki / 'h.crt'}", f"--tls-key={pki / 'h.key'}", f"--client-ca={pki / 'ca.crt'}",
                f"--qemu-capabilities-dir={capabilities}", "--metrics-address=127.0.0.1:0", "--log-format=text",
            ])  # fmt: skip
        dep.seen.start()
        cluster.wait_allocatable(TUN_RESOURCE)  # the handlers' device plugins registered
        yield dep
    finally:
        if dep is not None:
            dep.seen.stop.set()
            with contextlib.suppress(Exception):
                dep.kube.request("DELETE", VIRTUAL_MACHINE_INSTANCES.path(NAMESPACE))
                deadline = time.monotonic() + 180
                while dep.kube.list_objects(PODS, NAMESPACE) and time.monotonic() < deadline:
                    time.sleep(1)
            dep.kube.close()
            for record in reversed(dep.started):
                record.stop(15)
        down(base)
        if os.environ.get("PODVIRT_BENCH_KEEP"):
            print(f"kept {base} (logs in {base / 'logs'})", flush=True)
        else:
            shutil.rmtree(base, ignore_errors=True)
