"""Density: VMIs created 100 ms apart (KubeVirt's density scenario), creation -> Running for each, and
what each VM costs the node in memory beyond its guest.

A real devcluster with two stand-in nodes, virt-controller and a virt-handler per node, and ``--vmis``
tiny guests (Debian kernel + busybox, 96 MiB, one vCPU, QEMU TCG: no usable KVM here) created
``--interval`` seconds apart. Times are where this process sees the watch events (millisecond clock),
from each VMI's own create call. After every VMI runs and the guests settle, the memory of each
launcher pod (the launcher, its libvirt and QEMU: every process of the pod's process group plus the
VMI's QEMU) is read from /proc as PSS (shared pages split fairly) and RSS, with QEMU's share apart
from the launcher's and embedded libvirt's (podvirt's own cost per VM; QEMU's PSS counts only the
guest pages the guest has touched). Figures go to ``results/density.json`` and a chart of the creation -> Running
distribution to ``results/density.png``.

CPU requests: each launcher pod asks for 1/``cpuAllocationRatio`` of a core per vCPU (KubeVirt's default 10:
100m). Every stand-in node reports the machine's cores (2 here), so at the default the scheduler places 20
VMIs per node and the rest stay Pending (``Insufficient cpu``). The benchmark therefore raises
virt-controller's ``--cpu-allocation-ratio`` just enough for ``--vmis`` to fit, as a KubeVirt admin would
through ``developerConfiguration.cpuAllocationRatio``, and records the ratio; a run that stalls on
unschedulable pods anyway stops with the scheduler's message instead of waiting out its timeout.

    python -m benchmarks density [--vmis 50] [--interval 0.1] [--settle 30]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._podvirt import NAMESPACE, Deployment, deployed, tiny_vmi
from benchmarks._results import RESULTS_DIR, rounded, summary, write
from benchmarks.controller import apiserver_writes, proc_figures
from devcluster import processes
from kubevirt_types import Quantity
from podvirt_common.kube import NODES, VIRTUAL_MACHINE_INSTANCES, Kube, parse_time
from virt_controller.overhead import DEFAULT_CPU_ALLOCATION_RATIO, cpu_request_millis

GUEST_MIB = 96
#: Room for an uneven spread over the nodes: each node must hold this much more than its even share.
SPREAD_MARGIN = 1.25


def cpu_allocation_ratio(count: int, node_millicpu: list[int]) -> int:
    """KubeVirt's default ratio, or the smallest above it at which ``count`` one-vCPU VMIs' CPU requests
    fit the nodes (``node_millicpu``: each node's allocatable CPU) with :data:`SPREAD_MARGIN` to spare."""
    if not node_millicpu:
        raise ValueError("no nodes")
    per_node = math.ceil(count * SPREAD_MARGIN / len(node_millicpu))
    ratio = DEFAULT_CPU_ALLOCATION_RATIO
    while cpu_request_millis(1, ratio) * per_node > min(node_millicpu) and cpu_request_millis(1, ratio) > 1:
        ratio += 1
    return ratio


def node_millicpu(kube: Kube) -> list[int]:
    """Each node's allocatable CPU in millicores."""
    return [int(Quantity(node["status"]["allocatable"]["cpu"]).value * 1000) for node in kube.list_objects(NODES)]


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; (0, 0) when it is gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        return 0, 0
    return pss, rss


def _qemu_of(vmi: str) -> set[int]:
    """QEMU processes whose command line names this VMI's domain (``<namespace>_<name>``)."""
    found = set()
    marker = f"guest={NAMESPACE}_{vmi},".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def pod_memory(dep: Deployment) -> list[dict[str, float]]:
    """For each launcher pod: PSS and RSS in MiB of everything it runs, and the PSS of its QEMU and of
    the rest (the launcher and embedded libvirt: podvirt's own cost per VM)."""
    out = []
    for node in dep.cfg.nodes:
        for record in processes.load_records(dep.cfg.node_root(node) / "processes.json"):
            namespace, pod, container = record.name.split("/", 2)
            if namespace != NAMESPACE or not pod.startswith("virt-launcher-") or container != "compute":
                continue
            vmi = pod.removeprefix("virt-launcher-").rsplit("-", 1)[0]
            qemu = _qemu_of(vmi)
            totals = {"pss": 0, "rss": 0, "qemuPss": 0}
            for pid in set(processes.group_members(record.pgid)) | qemu:
                pss, rss = _memory_kib(pid)
                totals["pss"] += pss
                totals["rss"] += rss
                if pid in qemu:
                    totals["qemuPss"] += pss
            out.append({
                "pssMiB": totals["pss"] / 1024,
                "rssMiB": totals["rss"] / 1024,
                "qemuPssMiB": totals["qemuPss"] / 1024,
                "launcherPssMiB": (totals["pss"] - totals["qemuPss"]) / 1024,
            })  # fmt: skip
    return out


def writes_per_vmi(
    before: Counter[tuple[str, str, str, str]], after: Counter[tuple[str, str, str, str]], count: int
) -> dict[str, Any]:
    """Successful apiserver writes per VMI between the two readings, by kind; podvirt's own are the
    VMI writes after its creation (controller and handler) and the launcher pod's creation."""
    done = Counter({(v, r, sub): n for (v, r, sub, code), n in (after - before).items() if code == "2xx"})
    podvirt = sum(n for (v, r, _), n in done.items() if r == "virtualmachineinstances" and v != "POST")
    podvirt += done.get(("POST", "pods", ""), 0)
    return {
        "podvirtWritesPerVmi": round(podvirt / count, 2),
        "allWritesPerVmi": {
            f"{v} {r}{'/' + sub if sub else ''}": round(n / count, 2) for (v, r, sub), n in sorted(done.items())
        },
    }


def control_plane_rss(dep: Deployment) -> dict[str, float]:
    """RSS in MiB of each control-plane process and of podvirt's controller and handlers."""
    out = {}
    for record in [*dep.cluster.processes(), *dep.started]:
        if record.alive():
            out[record.name] = round(proc_figures(record.pid)["rss_mib"], 1)
    return out


def chart(latencies: list[tuple[float, float]], path: Path, title: str) -> None:
    """Two panels: each VMI's creation -> Running against when it was created, and the distribution."""
    import matplotlib  # noqa: PLC0415 - only this benchmark draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    created = [c for c, _ in latencies]
    seconds = [s for _, s in latencies]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.scatter(created, seconds, s=12)
    left.set_xlabel("created at (s after the first create)")
    left.set_ylabel("creation → Running (s)")
    left.grid(alpha=0.3)
    right.hist(seconds, bins=min(30, max(5, len(seconds) // 2)))
    right.set_xlabel("creation → Running (s)")
    right.set_ylabel("VMIs")
    right.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(count: int, interval: float, settle: float, timeout: float) -> dict[str, Any]:
    chosen: dict[str, Any] = {}

    def controller_flags(kube: Kube) -> list[str]:
        nodes = node_millicpu(kube)
        ratio = cpu_allocation_ratio(count, nodes)
        chosen.update(
            cpuAllocationRatio=ratio, cpuRequestPerVmi=f"{cpu_request_millis(1, ratio)}m", nodeAllocatableMilliCpu=nodes
        )
        print(f"  nodes' allocatable CPU {nodes} m: --cpu-allocation-ratio={ratio}", flush=True)
        return [f"--cpu-allocation-ratio={ratio}"]

    with deployed("density", ("node-1", "node-2"), "10.243.0.0/16", "pvbdens0", controller_flags) as dep:
        sent: dict[str, float] = {}
        writes_before = apiserver_writes(dep.kube)
        first = time.monotonic()
        # Each create from a thread of its own at its time: a slow answer from the loaded apiserver must not
        # push the later creates back (sequential creates once spread 60 VMIs over 60 s, not 6).
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="create") as pool:
            creates = []
            for i in range(count):
                name = f"density-{i:03d}"
                time.sleep(max(0.0, first + i * interval - time.monotonic()))
                sent[name] = time.monotonic()
                body = tiny_vmi(name, {"bench": "density"})
                creates.append(pool.submit(dep.kube.create, VIRTUAL_MACHINE_INSTANCES, body, NAMESPACE))
            for create in creates:
                create.result()  # a refused create fails the run here, not as a stall later
        created_over = time.monotonic() - first  # every create answered
        dep.wait("Running", count, timeout)
        all_running = time.monotonic() - first
        load = os.getloadavg()
        writes = writes_per_vmi(writes_before, apiserver_writes(dep.kube), count)
        # The objects' own record, to the second: creationTimestamp -> the Running phase transition.
        stamped = []
        for obj in dep.kube.list_objects(VIRTUAL_MACHINE_INSTANCES, NAMESPACE):
            created = parse_time(obj["metadata"]["creationTimestamp"])
            running = [t for t in obj["status"].get("phaseTransitionTimestamps") or [] if t["phase"] == "Running"]
            ran = parse_time(running[0]["phaseTransitionTimestamp"]) if running else None
            if created is not None and ran is not None:
                stamped.append((ran - created).total_seconds())
        with dep.seen.lock:
            latencies = [(sent[n] - first, dep.seen.vmi[n]["Running"] - sent[n]) for n in sent]
        time.sleep(settle)
        memory = pod_memory(dep)
        rss = control_plane_rss(dep)
        chart_path = RESULTS_DIR / "density.png"
        RESULTS_DIR.mkdir(exist_ok=True)
        title = f"podvirt: {count} tiny TCG VMIs created {interval * 1000:.0f} ms apart, 2 stand-in nodes, 2 cores"
        chart(latencies, chart_path, title)

        def mib(key: str) -> dict[str, float] | None:
            values = [m[key] for m in memory]
            return rounded(values, 1) if values else None

        return {
            "vmis": count,
            "intervalSeconds": interval,
            "allCreatedSecondsAfterFirstCreate": round(created_over, 2),
            "guest": f"tiny (Debian kernel + busybox initramfs), kernel boot, {GUEST_MIB} MiB, 1 vCPU, QEMU TCG",
            "cpuRequests": chosen,
            "allRunningSecondsAfterFirstCreate": round(all_running, 2),
            "loadAverageWhenAllRunning": [round(x, 1) for x in load],
            "creationToRunningSeconds": rounded([s for _, s in latencies]),
            "creationToRunningSecondsFromPhaseTimestamps": summary(stamped) if stamped else None,
            "apiWrites": writes,
            "controlPlaneRssMiB": rss,
            "perVmPodMemoryMiB": {
                "pods": len(memory),
                "pss": mib("pssMiB"),
                "rss": mib("rssMiB"),
                "qemuPss": mib("qemuPssMiB"),
                "launcherAndLibvirtPss": mib("launcherPssMiB"),
            },
            "chart": str(chart_path.relative_to(RESULTS_DIR.parent)),
        }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks density", description=__doc__.splitlines()[0])
    p.add_argument("--vmis", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.1, help="seconds between creations (KubeVirt: 0.1)")
    p.add_argument("--settle", type=float, default=30.0, help="seconds for the guests to boot before measuring memory")
    p.add_argument("--timeout", type=float, default=1200.0)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the density benchmark needs root (devcluster's stand-in nodes and pod networking)")
        return 2
    write("density", run(args.vmis, args.interval, args.settle, args.timeout))
    return 0
