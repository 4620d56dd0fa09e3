"""virt-handler: VMI Scheduled -> Running for VMIs created together on one node; the handler's RSS and CPU
with them idle; the time one /metrics scrape of all of them takes.

A real devcluster (one stand-in node), the CRDs, virt-controller and one virt-handler as host processes,
and N VMIs of the tiny test guest (images/guest, kernel boot, 96 MiB, QEMU TCG here) created at once.
Times are taken where this process sees the watch events (millisecond clock), not from
``phaseTransitionTimestamps`` (whole seconds):

- ``podRunningToVmiRunningSeconds``: the launcher pod reported Running -> the VMI Running (the
  handler's share: it sees the pod, prepares the network, hands the spec over, the domain starts);
- ``scheduledToRunningSeconds``: the VMI Scheduled -> Running.

``machineCpu``: the CPU-seconds the whole machine (cluster, node, launchers, QEMU) was busy from the
first create until every VMI ran, per VMI, and what that alone makes the wait for all of them on this
many cores (``allRunningFloorSeconds``): when it is close to ``allRunningSecondsAfterFirstCreate``, the
start was bound by CPU, not by waiting.

Then the guests idle for ``--idle`` seconds and the handler's RSS and CPU over that window are read
from /proc; one /metrics scrape of every guest's statistics is timed. Everything is deleted and
stopped at the end, on every exit path.

    python -m benchmarks handler [--vmis 20] [--idle 30] [--no-qemu-capabilities] [--start-paused]

By default the handler hands launchers the node's QEMU capabilities (as installed by virt-operator);
``--no-qemu-capabilities`` shows what each launcher's own libvirt probe costs. ``--start-paused``
creates the VMIs with ``startStrategy: Paused`` (Running once QEMU is up, with no guest code run), to
tell podvirt's share from the TCG guests' boot competing for the same cores.

``PODVIRT_BENCH_KEEP=1`` keeps the cluster's state directory (logs) under /var/tmp afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._podvirt import NAMESPACE, deployed, tiny_vmi
from benchmarks._results import rounded, write
from benchmarks.controller import proc_figures
from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES


def machine_busy_seconds() -> float:
    """CPU-seconds every core of this machine has spent busy since boot (``/proc/stat``: all but idle
    and iowait), whichever process used them."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run(
    count: int, idle: float, timeout: float, *, qemu_capabilities: bool = True, start_paused: bool = False
) -> dict[str, Any]:
    deployment = deployed("handler", ("node-1",), "10.242.0.0/16", "pvbhdl0", qemu_capabilities=qemu_capabilities)
    with deployment as dep:
        handler = dep.record("virt-handler-node-1")
        metrics_port = dep.metrics_port("virt-handler-node-1")
        busy_before = machine_busy_seconds()
        created = time.monotonic()
        for i in range(count):
            vmi = tiny_vmi(f"bench-{i:03d}")
            if start_paused:
                vmi["spec"]["startStrategy"] = "Paused"
            dep.kube.create(VIRTUAL_MACHINE_INSTANCES, vmi, NAMESPACE)
        dep.wait("Running", count, timeout)
        all_running = time.monotonic() - created
        busy_per_vmi = (machine_busy_seconds() - busy_before) / count
        cores = os.cpu_count() or 1
        seen = dep.seen
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
            "nodeQemuCapabilities": qemu_capabilities,
            "startPaused": start_paused,
            "guest": "tiny (Debian kernel + busybox initramfs), kernel boot, 96 MiB, 1 vCPU, QEMU TCG",
            "allRunningSecondsAfterFirstCreate": round(all_running, 2),
            "podRunningToVmiRunningSeconds": rounded(pod_to_running),
            "machineCpu": {
                "cores": cores,
                "busySecondsPerVmiStart": round(busy_per_vmi, 2),
                "allRunningFloorSeconds": round(count * busy_per_vmi / cores, 2),
            },
            "scheduledToRunningSeconds": rounded(scheduled_to_running),
            "handlerIdle": {
                "rssMiB": round(after["rss_mib"], 1),
                "peakRssMiB": round(after["peak_rss_mib"], 1),
                "cpuPercentOfOneCore": round(100 * (after["cpu_seconds"] - before["cpu_seconds"]) / idle, 2),
                "windowSeconds": idle,
            },
            "metricsScrape": {"seconds": round(scrape_seconds, 3), "vmisReported": reported},
        }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks handler", description=__doc__.splitlines()[0])
    p.add_argument("--vmis", type=int, default=20)
    p.add_argument("--idle", type=float, default=30.0, help="seconds of each idle measurement window")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument(
        "--no-qemu-capabilities",
        action="store_true",
        help="the handler hands launchers no QEMU capabilities: each launcher's libvirt probes QEMU (as before)",
    )
    p.add_argument(
        "--start-paused",
        action="store_true",
        help="VMIs with startStrategy Paused: QEMU starts but runs no guest code (no TCG boot competing for CPU)",
    )
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the handler benchmark needs root (devcluster's stand-in node and pod networking)")
        return 2
    write(
        "handler",
        run(
            args.vmis,
            args.idle,
            args.timeout,
            qemu_capabilities=not args.no_qemu_capabilities,
            start_paused=args.start_paused,
        ),
    )
    return 0
