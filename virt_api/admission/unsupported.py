"""The KubeVirt features podvirt does not implement: each is refused by name instead of being ignored.

One table, so that implementing a feature means deleting one line here (and its test). Fields that
podvirt's API types do not model at all never reach this table: the apiserver drops or refuses them
(kubectl's strict field validation names them), and if a CRD keeps unknown fields, parsing reports each
one as "not supported by podvirt" (see :func:`virt_api.fielderrors.from_validation_error`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kubevirt_types import Disk, Network, VirtualMachineInstanceSpec, Volume
from virt_api.fielderrors import FieldError, FieldPath, unsupported_by_podvirt


@dataclass(frozen=True)
class _SpecFeature:
    path: tuple[str, ...]
    present: Callable[[VirtualMachineInstanceSpec], bool]
    why: str


T = TypeVar("T")


@dataclass(frozen=True)
class _ItemFeature(Generic[T]):
    path: tuple[str, ...]
    present: Callable[[T], bool]
    why: str


SPEC_FEATURES = (
    _SpecFeature(
        ("domain", "cpu", "maxSockets"),
        lambda s: s.domain.cpu is not None and s.domain.cpu.max_sockets is not None,
        "CPU hotplug",
    ),
    _SpecFeature(
        ("domain", "memory", "maxGuest"),
        lambda s: s.domain.memory is not None and s.domain.memory.max_guest is not None,
        "memory hotplug",
    ),
    _SpecFeature(
        ("domain", "features", "hyperv"),
        lambda s: s.domain.features is not None and s.domain.features.hyperv is not None,
        "Hyper-V enlightenments",
    ),
    _SpecFeature(
        ("domain", "firmware", "bootloader", "efi", "persistent"),
        lambda s: bool(
            s.domain.firmware
            and s.domain.firmware.bootloader
            and s.domain.firmware.bootloader.efi
            and s.domain.firmware.bootloader.efi.persistent
        ),
        "persistent EFI variables need backend storage",
    ),
)

DISK_FEATURES: tuple[_ItemFeature[Disk], ...] = (
    _ItemFeature(("lun", "reservation"), lambda d: bool(d.lun and d.lun.reservation), "SCSI persistent reservations"),
)

VOLUME_FEATURES: tuple[_ItemFeature[Volume], ...] = (
    _ItemFeature(
        ("persistentVolumeClaim", "hotpluggable"),
        lambda v: bool(v.persistent_volume_claim and v.persistent_volume_claim.hotpluggable),
        "volume hotplug",
    ),
    _ItemFeature(
        ("dataVolume", "hotpluggable"),
        lambda v: bool(v.data_volume and v.data_volume.hotpluggable),
        "volume hotplug",
    ),
)

NETWORK_FEATURES: tuple[_ItemFeature[Network], ...] = (
    _ItemFeature(("multus",), lambda n: n.multus is not None, "podvirt has no Multus integration; use the pod network"),
)


def _join(base: FieldPath, parts: tuple[str, ...]) -> FieldPath:
    for part in parts:
        base = base / part
    return base


def unsupported_features(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    """One error per unimplemented feature the spec uses, each naming its field."""
    errors = [unsupported_by_podvirt(_join(at, f.path), f.why) for f in SPEC_FEATURES if f.present(spec)]
    disks = at / "domain" / "devices" / "disks"
    for i, disk in enumerate(spec.domain.devices.disks or []):
        errors += [unsupported_by_podvirt(_join(disks[i], f.path), f.why) for f in DISK_FEATURES if f.present(disk)]
    for i, volume in enumerate(spec.volumes or []):
        errors += [
            unsupported_by_podvirt(_join((at / "volumes")[i], f.path), f.why)
            for f in VOLUME_FEATURES
            if f.present(volume)
        ]
    for i, network in enumerate(spec.networks or []):
        errors += [
            unsupported_by_podvirt(_join((at / "networks")[i], f.path), f.why)
            for f in NETWORK_FEATURES
            if f.present(network)
        ]
    return errors
