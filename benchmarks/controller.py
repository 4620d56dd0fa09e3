"""virt-controller at scale: many VMs created at once on devcluster, until every VMI has its pod scheduled.

python -m benchmarks controller [--vms 1000] [--nodes 8] [--timeout 300]

The cluster is a devcluster control plane (real etcd, apiserver, scheduler, controller-manager) with
*fake nodes*: Node objects with Leases renewed by this benchmark, and a *simulated kubelet* that marks
every pod bound to them Running with its compute container ready (one pods/status write each) — the
launcher pods only simulate readiness; nothing runs. virt-controller runs as its own process.

Figures:
- seconds from the first VM create until every launcher pod is bound to a node, and until every VMI
  is phase Scheduled; per-VMI latency (VM create request -> VMI Scheduled) percentiles;
- API writes per VMI, from the apiserver's ``apiserver_request_total`` (successful writes, by verb,
  resource and subresource), split into the controller's (VMIs, pods, VM status, Events) and everyone
  else's (the benchmark's VM creates, the scheduler's bindings, the simulated kubelet, Leases);
- virt-controller's resident memory (now and peak) and CPU seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import _results
from devcluster.cluster import Cluster, down, up
from devcluster.config import ClusterConfig, Ports, free_port
from podvirt_common.kube import (
    EVENTS,
    LEASES,
    NODES,
    PODS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    ApiError,
    Kube,
    format_micro_time,
)

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
# Writes that are virt-controller's, as (verb, resource, subresource) of apiserver_request_total.
CONTROLLER_WRITES = {
    ("POST", "virtualmachineinstances", ""),
    ("PATCH", "virtualmachineinstances", ""),
    ("PATCH", "virtualmachineinstances", "status"),
    ("DELETE", "virtualmachineinstances", ""),
    ("POST", "pods", ""),
    ("DELETE", "pods", ""),
    ("PATCH", "virtualmachines", "status"),
}
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"}
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_writes(kube: Kube) -> Counter[tuple[str, str, str, str]]:
    """Successful and failed writes so far: (verb, resource, subresource, code class) -> count."""
    response = kube.api.call_api(
        "GET",
        kube.configuration.host + "/metrics",
        header_params=kube.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])[2],
    )
    text = response.read().decode()
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        code = labels.get("code", "")
        key = (labels["verb"], labels.get("resource", ""), labels.get("subresource", ""), code[:1] + "xx")
        counts[key] += int(float(match["value"]))
    return counts


def proc_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    ticks = stat[stat.rindex(")") + 2 :].split()
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_seconds": (int(ticks[11]) + int(ticks[12])) / hz,
    }


class FakeNodes:
    """Node objects the scheduler can bind to, kept alive by renewing their Leases."""

    def __init__(self, kube: Kube, count: int, pods_each: int) -> None:
        self.kube = kube
        self.names = [f"fake-{i:02d}" for i in range(count)]
        self.pods_each = pods_each
        self.stop = threading.Event()

    def create(self) -> None:
        # What a node with KubeVirt's device plugins advertises (they serve 1000 of each).
        capacity = {
            "cpu": "1000",
            "memory": "4Ti",
            "pods": str(self.pods_each),
            "devices.kubevirt.io/kvm": "1000",
            "devices.kubevirt.io/tun": "1000",
        }
        for name in self.names:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "podvirt.io/fake-node": "true"}},
                "status": {"capacity": capacity, "allocatable": capacity},
            }
            self.kube.create(NODES, node)
            self._ready(name)
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": format_micro_time()},
            }
            self.kube.create(LEASES, lease, "kube-node-lease")
        threading.Thread(target=self._heartbeat, name="fake-node-heartbeat", daemon=True).start()

    def _ready(self, name: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "FakeNodeReady",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        self.kube.merge_patch(NODES, name, {"status": {"conditions": [ready]}}, subresource="status")

    def _heartbeat(self) -> None:
        while not self.stop.wait(10):
            for name in self.names:
                with contextlib.suppress(ApiError):
                    self.kube.merge_patch(LEASES, name, {"spec": {"renewTime": format_micro_time()}}, "kube-node-lease")


class SimulatedKubelet:
    """Marks pods bound to the fake nodes Running and ready: launcher pods that only simulate readiness."""

    def __init__(self, kube: Kube, workers: int = 16) -> None:
        self.kube = kube
        self.created: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubelet")
        self._started: set[str] = set()

    def run(self) -> None:
        version = None
        while not self.stop.is_set():
            try:
                for kind, pod in self.kube.watch(PODS, NAMESPACE, resource_version=version, timeout_seconds=30):
                    version = pod.get("metadata", {}).get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED"):
                        self.created.setdefault(pod["metadata"]["name"], time.monotonic())
                        if (pod.get("spec") or {}).get("nodeName"):
                            self._bound(pod)
                    if self.stop.is_set():
                        return
            except ApiError:
                version = None

    def _bound(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        self.bound.setdefault(name, time.monotonic())
        if name in self._started or (pod.get("status") or {}).get("phase") == "Running":
            return
        self._started.add(name)
        self._pool.submit(self._start, name)

    def _start(self, name: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
        ]
        status = {
            "phase": "Running",
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": "compute",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "image": "podvirt/virt-launcher:latest",
                    "imageID": "simulated",
                    "containerID": f"simulated://{name}",
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        with contextlib.suppress(ApiError):
            self.kube.merge_patch(PODS, name, {"status": status}, NAMESPACE, subresource="status")


class VMIWatcher:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.created: dict[str, float] = {}
        self.scheduled: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        version = None
        while not self.stop.is_set():
            try:
                for kind, vmi in self.kube.watch(
                    VIRTUAL_MACHINE_INSTANCES, NAMESPACE, resource_version=version, timeout_seconds=30
                ):
                    version = vmi.get("metadata", {}).get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED"):
                        self.created.setdefault(vmi["metadata"]["name"], time.monotonic())
                    if kind != "BOOKMARK" and (vmi.get("status") or {}).get("phase") == "Scheduled":
                        self.scheduled.setdefault(vmi["metadata"]["name"], time.monotonic())
                    if self.stop.is_set():
                        return
            except ApiError:
                version = None


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"bench": "controller"}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "90Mi"}}},
            },
        },
    }


def wait(predicate: Any, timeout: float, what: str, progress: Any = None) -> None:
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f} s waiting for {what}" + (f": {progress()}" if progress else "")
            )
        if progress is not None and now > next_report:
            print(f"... {progress()}", file=sys.stderr, flush=True)
            next_report = now + 10
        time.sleep(0.2)


def per_vmi(writes: Counter[tuple[str, str, str, str]], count: int, controller_events: int) -> dict[str, Any]:
    ok = Counter({(v, r, s): n for (v, r, s, code), n in writes.items() if code == "2xx"})
    failed = Counter({f"{v} {r}{'/' + s if s else ''} {c}": n for (v, r, s, c), n in writes.items() if c != "2xx"})
    controller = {k: n for k, n in ok.items() if k in CONTROLLER_WRITES}
    events = ok.get(("POST", "events", ""), 0)
    others = {k: n for k, n in ok.items() if k not in CONTROLLER_WRITES and k != ("POST", "events", "")}

    def named(items: dict[tuple[str, str, str], int]) -> dict[str, int]:
        return {f"{v} {r}{'/' + s if s else ''}": n for (v, r, s), n in sorted(items.items())}

    return {
        "controller_writes_per_vmi": sum(controller.values()) / count,
        "controller_writes_per_vmi_with_its_events": (sum(controller.values()) + controller_events) / count,
        "controller_writes": named(controller),
        "events_all_components": events,
        "other_writes": named(others),
        "refused_writes": dict(failed),
    }


def run(vms: int, nodes: int, timeout: float, workers: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="podvirt-bench-controller-", dir="/var/tmp"))
    cfg = ClusterConfig(
        state_dir=state, ports=Ports.random(), nodes=(), pod_cidr="10.177.0.0/16", bridge=f"pvbc{os.getpid() % 10000}"
    )
    controller: subprocess.Popen[bytes] | None = None
    stops: list[threading.Event] = []
    try:
        cluster: Cluster = up(cfg)
        cluster.kubectl("apply", "--server-side", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds"))
        cluster.kubectl("create", "namespace", NAMESPACE)
        kube = Kube.connect(cluster.kubeconfig, pool_size=32, user_agent="benchmark")
        wait(lambda: _served(kube), 60, "kubevirt.io/v1 to be served")
        fake = FakeNodes(kube, nodes, pods_each=math.ceil(vms / nodes) + 20)
        fake.create()
        stops.append(fake.stop)
        kubelet = SimulatedKubelet(kube)
        watcher = VMIWatcher(kube)
        for worker in (kubelet, watcher):
            stops.append(worker.stop)
            threading.Thread(target=worker.run, daemon=True).start()

        log = state / "logs" / "virt-controller.log"
        metrics_port = free_port()
        with log.open("wb") as out:
            argv = [sys.executable, "-m", "virt_controller", f"--kubeconfig={cluster.kubeconfig}"]
            argv += [f"--metrics-address=127.0.0.1:{metrics_port}", f"--workers={workers}", "--log-level=WARNING"]
            argv += ["--lease-namespace=kube-system"]
            controller = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait(lambda: "caches synced" in log.read_text() or _listening(metrics_port), 60, "virt-controller to start")
        time.sleep(2)
        idle = proc_figures(controller.pid)
        before = apiserver_writes(kube)

        names = [f"vm-{i:04d}" for i in range(vms)]
        created_at: dict[str, float] = {}
        start = time.monotonic()

        def create(name: str) -> None:
            kube.create(VIRTUAL_MACHINES, vm(name), NAMESPACE)
            created_at[name] = time.monotonic()

        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(create, names))
        created = time.monotonic() - start

        def progress() -> str:
            return (
                f"{time.monotonic() - start:.0f} s: {len(watcher.created)} VMIs, {len(kubelet.created)} pods, "
                f"{len(kubelet.bound)} bound, {len(watcher.scheduled)} VMIs Scheduled"
            )

        wait(lambda: len(kubelet.bound) >= vms, timeout, f"{vms} launcher pods bound", progress)
        all_bound = time.monotonic() - start
        wait(lambda: len(watcher.scheduled) >= vms, timeout, f"{vms} VMIs Scheduled", progress)
        all_scheduled = time.monotonic() - start
        time.sleep(3)  # let trailing writes land before counting
        after = apiserver_writes(kube)
        events = Counter(
            f"{e.get('reportingComponent') or (e.get('source') or {}).get('component')}: {e.get('reason')}"
            for e in kube.list_objects(EVENTS, NAMESPACE)
        )
        loaded = proc_figures(controller.pid)
        latencies = [watcher.scheduled[n] - created_at[n] for n in names]

        def last(times: dict[str, float]) -> float:
            return max(times.values()) - start

        return {
            "vms": vms,
            "fake_nodes": nodes,
            "controller_workers": workers,
            "seconds_to_create_vms": created,
            "seconds_until_all_vmis_created": last(watcher.created),
            "seconds_until_all_pods_created": last(kubelet.created),
            "seconds_until_all_pods_bound": all_bound,
            "seconds_from_last_vm_created_until_all_pods_bound": all_bound - created,
            "seconds_until_all_vmis_scheduled": all_scheduled,
            "vm_create_to_vmi_scheduled_seconds": _results.summary(latencies),
            **per_vmi(after - before, vms, sum(n for k, n in events.items() if k.startswith("virt-controller:"))),
            "events_by_component": dict(sorted(events.items())),
            "controller_rss_idle_mib": idle["rss_mib"],
            "controller_rss_mib": loaded["rss_mib"],
            "controller_peak_rss_mib": loaded["peak_rss_mib"],
            "controller_cpu_seconds": loaded["cpu_seconds"] - idle["cpu_seconds"],
        }
    finally:
        for stop in stops:
            stop.set()
        if controller is not None and controller.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(controller.pid, signal.SIGTERM)
            try:
                controller.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(controller.pid, signal.SIGKILL)
                controller.wait(5)
        down(state)
        shutil.rmtree(state, ignore_errors=True)


def _served(kube: Kube) -> bool:
    try:
        kube.list_objects(VIRTUAL_MACHINES, NAMESPACE)
    except ApiError:
        return False
    return True


def _listening(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks controller")
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=8, help="fake nodes to schedule on")
    parser.add_argument("--workers", type=int, default=32, help="virt-controller --workers")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    args = parser.parse_args(argv)
    figures = run(args.vms, args.nodes, args.timeout, args.workers)
    figures["aims"] = {
        "controller_writes_per_vmi": "<= 5",
        "seconds_until_all_pods_bound": "<= 60 at 1000 VMs",
        "controller_rss_mib": "<= 150 at 1000 VMs",
    }
    _results.write("controller", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
