"""Per-VMI statistics of this node's guests as Prometheus metrics, with KubeVirt's metric names.

At every scrape the handler asks each running VMI's launcher for its domain statistics (``GET
/v1/stats``: libvirt's ``virDomainListGetStats``, normalised by the launcher) — in parallel, each with a
timeout (10 s; a call takes milliseconds, the first one seconds when the launcher was not handed the
node's QEMU capabilities: libvirt then probes every QEMU binary for the host's capabilities), so one
stuck launcher costs a scrape at most that long and shows as a missing VMI, not
a failed scrape. :func:`families` turns the answers into metric families; it is pure. Every sample is
labelled ``node``, ``namespace`` and ``name`` (the VMI), as KubeVirt labels them; the launcher's
numbers are only ever values, never labels it could choose freely beyond the device names libvirt
reports (bounded in length).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from virt_handler.launcher_client import LauncherClient, LauncherError, LauncherTarget

log = logging.getLogger("virt_handler.metrics")
SCRAPE_TIMEOUT = 10.0
MAX_PARALLEL = 8
MAX_LABEL = 64
VCPU_STATES = {0: "OFFLINE", 1: "RUNNING", 2: "BLOCKED"}

#: (metric, help, the stats key under "memory", in KiB)
MEMORY_GAUGES = (
    ("kubevirt_vmi_memory_resident_bytes", "Resident set size of the process running the domain.", "rssKiB"),
    ("kubevirt_vmi_memory_available_bytes", "Amount of usable memory as seen by the domain.", "availableKiB"),
    ("kubevirt_vmi_memory_unused_bytes", "The amount of memory left completely unused by the guest.", "unusedKiB"),
    ("kubevirt_vmi_memory_usable_bytes", "Memory the balloon can reclaim without the guest swapping.", "usableKiB"),
    ("kubevirt_vmi_memory_actual_balloon_bytes", "Current balloon size in bytes.", "currentKiB"),
    ("kubevirt_vmi_memory_domain_bytes_total", "The amount of memory in bytes allocated to the domain.", "maximumKiB"),
)
#: (metric without _total, help, the stats key of a block device)
STORAGE_COUNTERS = (
    ("kubevirt_vmi_storage_read_traffic_bytes", "Total number of bytes read from storage.", "readBytes"),
    ("kubevirt_vmi_storage_write_traffic_bytes", "Total number of written bytes.", "writeBytes"),
    ("kubevirt_vmi_storage_iops_read", "Total number of I/O read operations.", "readRequests"),
    ("kubevirt_vmi_storage_iops_write", "Total number of I/O write operations.", "writeRequests"),
)
NETWORK_COUNTERS = (
    ("kubevirt_vmi_network_receive_bytes", "Total network traffic received in bytes.", "rxBytes"),
    ("kubevirt_vmi_network_transmit_bytes", "Total network traffic transmitted in bytes.", "txBytes"),
    ("kubevirt_vmi_network_receive_packets", "Total network traffic received packets.", "rxPackets"),
    ("kubevirt_vmi_network_transmit_packets", "Total network traffic transmitted packets.", "txPackets"),
    ("kubevirt_vmi_network_receive_errors", "Total network received error packets.", "rxErrors"),
    ("kubevirt_vmi_network_transmit_errors", "Total network transmitted error packets.", "txErrors"),
    ("kubevirt_vmi_network_receive_packets_dropped", "The total number of rx packets dropped.", "rxDropped"),
    ("kubevirt_vmi_network_transmit_packets_dropped", "The total number of tx packets dropped.", "txDropped"),
)
VMI_LABELS = ["node", "namespace", "name"]


@dataclass(frozen=True)
class Sample:
    """One VMI's statistics as its launcher answered them."""

    namespace: str
    name: str
    stats: Mapping[str, Any]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _label(value: Any, fallback: str) -> str:
    text = value if isinstance(value, str) and value else fallback
    return text[:MAX_LABEL]


def _items(stats: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = stats.get(key)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def families(node: str, samples: Iterable[Sample]) -> list[Metric]:
    """The metric families for ``samples`` (values the launcher did not report are left out)."""
    cpu = {
        key: GaugeMetricFamily(name, doc, labels=VMI_LABELS)
        for key, name, doc in (
            ("timeNs", "kubevirt_vmi_cpu_usage_seconds", "Total CPU time spent in all modes."),
            ("userNs", "kubevirt_vmi_cpu_user_usage_seconds", "Total CPU time spent in user mode."),
            ("systemNs", "kubevirt_vmi_cpu_system_usage_seconds", "Total CPU time spent in system mode."),
        )
    }
    vcpu = CounterMetricFamily(
        "kubevirt_vmi_vcpu_seconds", "Time spent by each vCPU in its state.", labels=[*VMI_LABELS, "id", "state"]
    )
    vcpu_wait = CounterMetricFamily(
        "kubevirt_vmi_vcpu_wait_seconds", "Time each vCPU spent waiting on I/O.", labels=[*VMI_LABELS, "id"]
    )
    memory = {key: GaugeMetricFamily(name, doc, labels=VMI_LABELS) for name, doc, key in MEMORY_GAUGES}
    storage = {
        key: CounterMetricFamily(name, doc, labels=[*VMI_LABELS, "drive"]) for name, doc, key in STORAGE_COUNTERS
    }
    network = {
        key: CounterMetricFamily(name, doc, labels=[*VMI_LABELS, "interface"]) for name, doc, key in NETWORK_COUNTERS
    }
    for sample in samples:
        vmi = [node, sample.namespace, sample.name]
        cpu_stats = sample.stats.get("cpu")
        if isinstance(cpu_stats, Mapping):
            for key, family in cpu.items():
                if (ns := _number(cpu_stats.get(key))) is not None:
                    family.add_metric(vmi, ns / 1e9)
        for index, item in enumerate(_items(sample.stats, "vcpus")):
            state = VCPU_STATES.get(int(_number(item.get("state")) or 0), "OFFLINE")
            if (ns := _number(item.get("timeNs"))) is not None:
                vcpu.add_metric([*vmi, str(index), state], ns / 1e9)
            if (ns := _number(item.get("waitNs"))) is not None:
                vcpu_wait.add_metric([*vmi, str(index)], ns / 1e9)
        mem_stats = sample.stats.get("memory")
        if isinstance(mem_stats, Mapping):
            for key, family in memory.items():
                if (kib := _number(mem_stats.get(key))) is not None:
                    family.add_metric(vmi, kib * 1024)
        for index, item in enumerate(_items(sample.stats, "blocks")):
            drive = _label(item.get("name"), f"disk{index}")
            for key, counter in storage.items():
                if (value := _number(item.get(key))) is not None:
                    counter.add_metric([*vmi, drive], value)
        for index, item in enumerate(_items(sample.stats, "nets")):
            interface = _label(item.get("name"), f"net{index}")
            for key, counter in network.items():
                if (value := _number(item.get(key))) is not None:
                    counter.add_metric([*vmi, interface], value)
    return [*cpu.values(), vcpu, vcpu_wait, *memory.values(), *storage.values(), *network.values()]


#: This node's running VMIs with their launchers: (namespace, name, target).
RunningVMIs = Callable[[], list[tuple[str, str, LauncherTarget]]]


class VMIStatsCollector(Collector):
    """Collects :func:`families` for this node's running VMIs at every scrape."""

    def __init__(self, node: str, running: RunningVMIs, timeout: float = SCRAPE_TIMEOUT) -> None:
        self.node = node
        self.running = running
        self.timeout = timeout
        self._told: dict[tuple[str, str], str] = {}

    def _sample(self, entry: tuple[str, str, LauncherTarget]) -> Sample | None:
        namespace, name, target = entry
        started = time.monotonic()
        try:
            stats = LauncherClient(target, timeout=self.timeout).request("GET", "/v1/stats")
            log.debug("%s/%s: statistics in %.2f s", namespace, name, time.monotonic() - started)
        except LauncherError as exc:
            # Said once per VMI and kind of failure, not at every scrape.
            problem = f"{type(exc).__name__}: {exc}"
            if self._told.get((namespace, name)) != problem:
                self._told[(namespace, name)] = problem
                log.warning("%s/%s: no statistics from the launcher: %s", namespace, name, problem)
            return None
        self._told.pop((namespace, name), None)
        return Sample(namespace, name, stats) if isinstance(stats, Mapping) else None

    def collect(self) -> Iterator[Metric]:
        entries = self.running()
        if entries:
            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(entries))) as pool:
                samples = [s for s in pool.map(self._sample, entries) if s is not None]
        else:
            samples = []
        yield from families(self.node, samples)
