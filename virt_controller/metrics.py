"""virt-controller's Prometheus metrics, KubeVirt's names where KubeVirt has the metric.

KubeVirt's: ``kubevirt_vmi_phase_count{node,phase}`` (gauge, from the cache at scrape time),
``kubevirt_vmi_phase_transition_time_from_creation_seconds{phase}``,
``kubevirt_vmi_phase_transition_time_seconds{phase}`` (from the previous phase),
``kubevirt_vmi_phase_transition_time_from_deletion_seconds{phase}`` (histograms with fine buckets
below 10 s), ``kubevirt_virt_controller_leading_status`` and ``kubevirt_virt_controller_ready_status``.
podvirt's own: ``podvirt_vm_printable_status_count{status}``, ``podvirt_controller_reconcile_total
{kind,outcome}``, ``podvirt_controller_reconcile_duration_seconds{kind}``,
``podvirt_controller_api_writes_total{verb,resource}``, ``podvirt_controller_queue_depth``,
``podvirt_controller_cache_objects{kind}``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import objects

PHASE_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)


class _CacheCollector(Collector):
    """Counts computed from the cache when scraped, so they can never drift from it."""

    def __init__(
        self,
        vmis: Callable[[], Iterable[Mapping[str, Any]]],
        vms: Callable[[], Iterable[Mapping[str, Any]]],
        depth: Callable[[], Mapping[str, int]],
    ) -> None:
        self._vmis, self._vms, self._depth = vmis, vms, depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases = GaugeMetricFamily("kubevirt_vmi_phase_count", "VMIs by node and phase.", labels=["node", "phase"])
        tally = Tally((str(objects.status(v).get("nodeName") or ""), objects.phase(v)) for v in self._vmis())
        for (node, phase), count in sorted(tally.items()):
            phases.add_metric([node, phase], count)
        yield phases
        printable = GaugeMetricFamily("podvirt_vm_printable_status_count", "VMs by printableStatus.", labels=["status"])
        for status, count in sorted(
            Tally(str(objects.status(v).get("printableStatus") or "") for v in self._vms()).items()
        ):
            printable.add_metric([status], count)
        yield printable
        cache = GaugeMetricFamily(
            "podvirt_controller_cache_objects", "Objects in the controller's cache.", labels=["kind"]
        )
        for kind, count in self._depth().items():
            cache.add_metric([kind], count)
        yield cache


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.from_creation = Histogram(
            "kubevirt_vmi_phase_transition_time_from_creation_seconds",
            "Seconds from a VMI's creation to its entering the phase.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.from_previous = Histogram(
            "kubevirt_vmi_phase_transition_time_seconds",
            "Seconds a VMI spent in its previous phase before entering this one.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.from_deletion = Histogram(
            "kubevirt_vmi_phase_transition_time_from_deletion_seconds",
            "Seconds from a VMI's deletion request until it was gone, by its last phase.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.leading = Gauge("kubevirt_virt_controller_leading_status", "1 while this replica leads.", registry=r)
        self.ready = Gauge("kubevirt_virt_controller_ready_status", "1 once caches are synced.", registry=r)
        self.reconciles = Counter(
            "podvirt_controller_reconcile", "Reconciles by kind and outcome.", ["kind", "outcome"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "podvirt_controller_reconcile_duration_seconds",
            "Time to decide and carry out one reconcile.",
            ["kind"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.writes = Counter(
            "podvirt_controller_api_writes", "Writes sent to the apiserver.", ["verb", "resource"], registry=r
        )
        self.queue_depth = Gauge("podvirt_controller_queue_depth", "Keys waiting to be reconciled.", registry=r)

    def watch_cache(
        self,
        vmis: Callable[[], Iterable[Mapping[str, Any]]],
        vms: Callable[[], Iterable[Mapping[str, Any]]],
        depth: Callable[[], Mapping[str, int]],
    ) -> None:
        self.registry.register(_CacheCollector(vmis, vms, depth))

    def vmi_changed(self, before: Mapping[str, Any] | None, after: Mapping[str, Any], now: datetime) -> None:
        """Observe a phase transition seen on a watch event (not on the first sight of a VMI)."""
        if before is None:
            return
        old_phase, new_phase = objects.phase(before), objects.phase(after)
        if old_phase == new_phase:
            return
        entered = objects.phase_time(after, new_phase) or now
        created = objects.created_at(after)
        if created is not None:
            self.from_creation.labels(new_phase).observe(max(0.0, (entered - created).total_seconds()))
        left = objects.phase_time(after, old_phase) or (created if old_phase == "Pending" else None)
        if left is not None:
            self.from_previous.labels(new_phase).observe(max(0.0, (entered - left).total_seconds()))

    def vmi_gone(self, last: Mapping[str, Any], now: datetime) -> None:
        deleted = objects.deletion_time(last)
        if deleted is not None:
            self.from_deletion.labels(objects.phase(last)).observe(max(0.0, (now - deleted).total_seconds()))
