"""How much memory a launcher pod needs beyond the guest's RAM, and the pod's resource requirements.

Overhead (MiB) = 40 launcher + 30 QEMU + 8 per vCPU + guest RAM / 512 (page tables)
                 [+ 64 TCG translation cache, under software emulation]
                 [+ 16 VNC and video, when a graphics device is attached]

Where the figures come from (measured on the development machine, Debian 12, QEMU 7.2):
- launcher: the Python launcher with embedded libvirt, 32.8-35 MiB RSS (BRIEF section 6); 40 with margin.
- QEMU: ~24 MiB of its binary and libraries resident, plus device state; 30 with margin.
- TCG: a 128 MiB guest booting the test kernel under ``-accel tcg`` is 206 MiB RSS with QEMU's default
  translation cache and 171 MiB with ``tb-size=16``: the cache is ~64 MiB of the difference.
- vCPUs (thread stacks, per-vCPU state) and page tables: KubeVirt's figures, kept.
KubeVirt's own fixed estimate is 240 MiB; podvirt's is 70 MiB (134 MiB under emulation).
``spec.domain.resources.overcommitGuestOverhead: true`` leaves the overhead out of the request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubevirt_types import Quantity, QuantityError

MIB = 1024 * 1024
LAUNCHER_MIB = 40
QEMU_MIB = 30
PER_VCPU_MIB = 8
TCG_CACHE_MIB = 64
GRAPHICS_MIB = 16
PAGE_TABLE_DIVISOR = 512
#: vCPUs per core the scheduler is told about when a VMI asks for no CPU: each vCPU requests
#: 1/ratio of a core (KubeVirt's ``developerConfiguration.cpuAllocationRatio``, default 10: 100m).
DEFAULT_CPU_ALLOCATION_RATIO = 10


class ResourceError(ValueError):
    """The VMI's resources cannot be turned into a pod's; the message names the field."""


@dataclass(frozen=True)
class PodResources:
    vcpus: int
    guest_bytes: int
    overhead_bytes: int
    requests: dict[str, str]
    limits: dict[str, str]


def _quantity(value: Any, where: str) -> Quantity:
    try:
        return Quantity(value)
    except QuantityError as exc:
        raise ResourceError(f"{where}: {exc}") from None


def vcpus(domain: Mapping[str, Any]) -> int:
    """vCPUs of the guest: sockets x cores x threads, else the CPU limit or request rounded up, else 1."""
    cpu = domain.get("cpu") or {}
    if any(cpu.get(k) for k in ("sockets", "cores", "threads")):
        return int(cpu.get("sockets") or 1) * int(cpu.get("cores") or 1) * int(cpu.get("threads") or 1)
    resources = domain.get("resources") or {}
    for source in ("limits", "requests"):
        value = (resources.get(source) or {}).get("cpu")
        if value is not None:
            return max(1, math.ceil(_quantity(value, f"spec.domain.resources.{source}.cpu").value))
    return 1


def overhead_bytes(domain: Mapping[str, Any], guest_bytes: int, *, emulation: bool) -> int:
    devices = domain.get("devices") or {}
    mib = LAUNCHER_MIB + QEMU_MIB + PER_VCPU_MIB * vcpus(domain)
    if emulation:
        mib += TCG_CACHE_MIB
    if devices.get("autoattachGraphicsDevice") is not False:  # attached unless switched off
        mib += GRAPHICS_MIB
    return mib * MIB + math.ceil(guest_bytes / PAGE_TABLE_DIVISOR)


def cpu_request_millis(n_vcpus: int, allocation_ratio: int = DEFAULT_CPU_ALLOCATION_RATIO) -> int:
    """The CPU request, in millicores, of a pod whose VMI asks for none: ``n_vcpus / allocation_ratio``
    cores, rounded up to a whole millicore (as Kubernetes rounds a finer quantity)."""
    if allocation_ratio < 1:
        raise ValueError(f"the CPU allocation ratio must be at least 1, not {allocation_ratio}")
    return max(1, math.ceil(n_vcpus * 1000 / allocation_ratio))


def _mib_string(n_bytes: int) -> str:
    return f"{math.ceil(n_bytes / MIB)}Mi"


def pod_resources(
    vmi_spec: Mapping[str, Any],
    *,
    emulation: bool = False,
    cpu_allocation_ratio: int = DEFAULT_CPU_ALLOCATION_RATIO,
) -> PodResources:
    """Requests and limits of the compute container: the guest's plus the overhead; without a CPU
    request of its own, ``vcpus / cpu_allocation_ratio`` cores."""
    domain = vmi_spec.get("domain") or {}
    resources = domain.get("resources") or {}
    requests_in = dict(resources.get("requests") or {})
    limits_in = dict(resources.get("limits") or {})
    guest_raw = (domain.get("memory") or {}).get("guest") or requests_in.get("memory") or limits_in.get("memory")
    if guest_raw is None:
        raise ResourceError(
            "the VMI has no memory size: set spec.domain.memory.guest or spec.domain.resources.requests.memory"
        )
    guest = _quantity(guest_raw, "spec.domain.memory.guest").as_int()
    n_vcpus = vcpus(domain)
    overhead = 0 if resources.get("overcommitGuestOverhead") else overhead_bytes(domain, guest, emulation=emulation)

    requests = {k: str(Quantity(v)) for k, v in requests_in.items() if k not in ("cpu", "memory")}
    limits = {k: str(Quantity(v)) for k, v in limits_in.items() if k not in ("cpu", "memory")}
    base_memory = (
        _quantity(requests_in["memory"], "spec.domain.resources.requests.memory").as_int()
        if "memory" in requests_in
        else guest
    )
    requests["memory"] = _mib_string(base_memory + overhead)
    if "memory" in limits_in:
        limit = _quantity(limits_in["memory"], "spec.domain.resources.limits.memory").as_int()
        limits["memory"] = _mib_string(limit + overhead)
    if "cpu" in requests_in:
        requests["cpu"] = str(requests_in["cpu"])
    else:
        requests["cpu"] = f"{cpu_request_millis(n_vcpus, cpu_allocation_ratio)}m"
    if "cpu" in limits_in:
        limits["cpu"] = str(limits_in["cpu"])
    return PodResources(n_vcpus, guest, overhead, requests, limits)
