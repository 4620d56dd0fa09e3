"""virt-handler: VMI Scheduled -> Running for VMIs created together on one node; the handler's RSS and CPU
with them idle; the time one /metrics scrape of all of them takes.

A real devcluster (one stand-in node), the CRDs, virt-controller and one virt-handler as host processes,
and N VMIs of the tiny test guest (images/guest, kernel boot, 96 MiB, QEMU TCG here) created at once.
Times are taken where this process sees the watch events (millisecond clock), not from
``phaseTransitionTimestamps`` (whole seconds):

- ``podRunningToVmiRunningSeconds``: the launcher pod reported Running -> the VMI Running (the
  handler's share: it sees the pod, prepares the network, hands the spec over, the domain starts);
- ``scheduledToRunningSeconds``: the VMI Scheduled -> Running.

Then the guests idle for ``--idle`` seconds and the handler's RSS and CPU over that window are read
from /proc; one /metrics scrape of every guest's statistics is timed. Everything is deleted and
stopped at the end, on every exit path.

    python -m benchmarks handler [--vmis 20] [--idle 30]

``PODVIRT_BENCH_KEEP=1`` keeps the cluster's state directory (logs) under /var/tmp afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._results import summary, write
from benchmarks.controller import proc_figures
from devcluster import processes
from devcluster.cluster import Cluster, down, up
from devcluster.config import ClusterConfig, Ports, free_port
from devcluster.images import import_image
from podvirt_common import certs
from podvirt_common.kube import PODS, VIRTUAL_MACHINE_INSTANCES, Kube

REPO = Path(__file__).resolve().parent.parent
IMAGE = "registry.podvirt.test/tiny-containerdisk:1"
NAMESPACE = "default"
LAUNCHERS = "kubevirt.io=virt-launcher"


def vmi(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "labels": {"bench": "handler"}},
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


class Seen:
    """When this process first saw each VMI Scheduled and Running, and each launcher pod Running."""

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

    def running(self) -> int:
        with self.lock:
            return sum("Running" in phases for phases in self.vmi.values())


def _start(state: Path, name: str, argv: list[str], started: list[processes.ProcessRecord]) -> None:
    proc = processes.spawn(name, argv, state / "logs" / f"{name}.log")
    started.append(processes.record(name, proc))


def _metrics_port(log: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "/metrics" in line and " on 127.0.0.1:" in line:
                return int(line.rsplit(":", 1)[1])
        time.sleep(0.2)
    raise RuntimeError(f"the handler never said where /metrics is; see {log}")


def run(count: int, idle: float, timeout: float) -> dict[str, Any]:
    build = subprocess.run([str(REPO / "images/guest/build.sh")], check=True, capture_output=True, text=True)
    guest = Path(build.stdout.strip().splitlines()[-1])
    base = Path(tempfile.mkdtemp(prefix="podvirt-bench-handler-", dir="/var/tmp"))
    base.chmod(0o755)
    cfg = ClusterConfig(
        state_dir=base, ports=Ports.random(), nodes=("node-1",), pod_cidr="10.242.0.0/16", bridge="pvbhdl0"
    )
    started: list[processes.ProcessRecord] = []
    kube: Kube | None = None
    seen: Seen | None = None
    try:
        cluster: Cluster = up(cfg)
        import_image(cfg.image_store, guest / "oci" / "containerdisk", IMAGE)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        pki = base / "bench-pki"
        pki.mkdir()
        ca = certs.new_ca("bench-podvirt-internal-ca")
        (pki / "ca.crt").write_bytes(ca.cert_pem)
        certs.issue(ca, "virt-handler", hosts=("127.0.0.1",), server=True).write(pki / "h.crt", pki / "h.key")
        kubeconfig = str(cluster.kubeconfig)
        py = sys.executable
        _start(base, "virt-controller", [
            py, "-m", "virt_controller", f"--kubeconfig={kubeconfig}", "--use-emulation", "--no-leader-elect",
            "--metrics-address=", "--log-format=text",
        ], started)  # fmt: skip
        _start(base, "virt-handler", [
            py, "-m", "virt_handler", "--node-name=node-1", f"--kubeconfig={kubeconfig}",
            f"--kubelet-root={cfg.node_root('node-1')}", "--listen=127.0.0.1", f"--port={free_port()}",
            f"--tls-cert={pki / 'h.crt'}", f"--tls-key={pki / 'h.key'}", f"--client-ca={pki / 'ca.crt'}",
            "--metrics-address=127.0.0.1:0", "--log-format=text",
        ], started)  # fmt: skip
        handler = started[-1]
        metrics_port = _metrics_port(base / "logs" / "virt-handler.log")
        kube = Kube.connect(kubeconfig)
        seen = Seen(kube)
        seen.start()
        time.sleep(1)
        created = time.monotonic()
        for i in range(count):
            kube.create(VIRTUAL_MACHINE_INSTANCES, vmi(f"bench-{i:03d}"), NAMESPACE)
        deadline = time.monotonic() + timeout
        while seen.running() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {seen.running()} of {count} VMIs Running after {timeout:.0f} s")
            time.sleep(0.5)
        all_running = time.monotonic() - created
        with seen.lock:
            pod_to_running = [
                seen.vmi[name]["Running"] - seen.pod_running[name] for name in seen.vmi if name in seen.pod_running
            ]
            scheduled_to_running = [
                phases["Running"] - phases["Scheduled"] for phases in seen.vmi.values() if "Scheduled" in phases
            ]
        # The guests boot (TCG) and then idle; measure the handler over the idle window only.
        time.sleep(idle)
        before = proc_figures(handler.pid)
        time.sleep(idle)
        after = proc_figures(handler.pid)
        scrape_started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as answer:
            text = answer.read().decode()
        scrape_seconds = time.monotonic() - scrape_started
        reported = sum(1 for line in text.splitlines() if line.startswith("kubevirt_vmi_cpu_usage_seconds{"))
        return {
            "vmis": count,
            "guest": "tiny (Debian kernel + busybox initramfs), kernel boot, 96 MiB, 1 vCPU, QEMU TCG",
            "allRunningSecondsAfterFirstCreate": round(all_running, 2),
            "podRunningToVmiRunningSeconds": {k: round(v, 3) for k, v in summary(pod_to_running).items()},
            "scheduledToRunningSeconds": {k: round(v, 3) for k, v in summary(scheduled_to_running).items()},
            "handlerIdle": {
                "rssMiB": round(after["rss_mib"], 1),
                "peakRssMiB": round(after["peak_rss_mib"], 1),
                "cpuPercentOfOneCore": round(100 * (after["cpu_seconds"] - before["cpu_seconds"]) / idle, 2),
                "windowSeconds": idle,
            },
            "metricsScrape": {"seconds": round(scrape_seconds, 3), "vmisReported": reported},
        }
    finally:
        if seen is not None:
            seen.stop.set()
        if kube is not None:
            with contextlib.suppress(Exception):
                for i in range(count):
                    with contextlib.suppress(Exception):
                        kube.delete(VIRTUAL_MACHINE_INSTANCES, f"bench-{i:03d}", NAMESPACE)
                deadline = time.monotonic() + 120
                while kube.list_objects(PODS, NAMESPACE) and time.monotonic() < deadline:
                    time.sleep(1)
            kube.close()
        for record in reversed(started):
            record.stop(15)
        down(base)
        if not os.environ.get("PODVIRT_BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks handler", description=__doc__.splitlines()[0])
    p.add_argument("--vmis", type=int, default=20)
    p.add_argument("--idle", type=float, default=30.0, help="seconds of each idle measurement window")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the handler benchmark needs root (devcluster's stand-in node and pod networking)")
        return 2
    write("handler", run(args.vmis, args.idle, args.timeout))
    return 0
