"""``create vm``: a VirtualMachine manifest from flags, built with the shared ``kubevirt_types`` models.

Defaults and flag syntax follow KubeVirt's ``virtctl create vm``: runStrategy Always, 512Mi of guest
memory, a 180 s termination grace period, a random ``vm-xxxxx`` name, volumes as
``src:IMAGE,name:NAME,bootorder:N`` and base64-encoded cloud-init data on a NoCloud disk named
``cloudinitdisk``. Unlike KubeVirt's, every volume also gets an explicit virtio disk, so the manifest
does not depend on the server adding disks for bare volumes. Pure: no cluster needed.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from kubevirt_types import (
    CloudInitSource,
    ContainerDiskSource,
    Devices,
    Disk,
    DiskBus,
    DiskTarget,
    DomainSpec,
    Memory,
    ObjectMeta,
    PersistentVolumeClaimSource,
    Quantity,
    QuantityError,
    RunStrategy,
    VirtualMachine,
    VirtualMachineInstanceSpec,
    VirtualMachineInstanceTemplateSpec,
    VirtualMachineSpec,
    Volume,
    to_wire,
)
from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode

CLOUD_INIT_DISK = "cloudinitdisk"
DEFAULT_MEMORY = "512Mi"
DEFAULT_GRACE_PERIOD = 180


def _flag_error(flag: str, message: str) -> VirtctlError:
    return VirtctlError(f"--{flag}: {message}", ExitCode.USAGE)


def parse_params(flag: str, text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``key:value,key:value`` (each value may itself contain ':', e.g. an image tag)."""
    params: dict[str, str] = {}
    for pair in filter(None, text.split(",")):
        key, sep, value = pair.partition(":")
        key = key.strip().lower()
        if not sep:
            raise _flag_error(flag, f"{pair!r} is not KEY:VALUE (supported keys: {', '.join(allowed)})")
        if key not in allowed:
            raise _flag_error(flag, f"unknown parameter {key!r} (supported: {', '.join(allowed)})")
        if key in params:
            raise _flag_error(flag, f"parameter {key!r} given twice")
        params[key] = value
    return params


def random_name() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "vm-" + "".join(secrets.choice(alphabet) for _ in range(5))


@dataclass
class VMFlags:
    """The flags of ``create vm``, as given."""

    name: str | None = None
    namespace: str | None = None
    run_strategy: str = "Always"
    termination_grace_period: int = DEFAULT_GRACE_PERIOD
    memory: str = DEFAULT_MEMORY
    containerdisks: list[str] = field(default_factory=list)
    pvcs: list[str] = field(default_factory=list)
    cloud_init_user_data: str | None = None
    cloud_init_network_data: str | None = None


@dataclass
class _Builder:
    vm_name: str
    volumes: list[Volume] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)
    boot_orders: dict[int, str] = field(default_factory=dict)

    def add(self, flag: str, volume: Volume, boot_order: str | None) -> None:
        if any(v.name == volume.name for v in self.volumes):
            raise _flag_error(flag, f"there is already a volume named {volume.name!r}")
        order = None
        if boot_order is not None:
            try:
                order = int(boot_order)
            except ValueError:
                raise _flag_error(flag, f"bootorder {boot_order!r} is not a number") from None
            if order < 1:
                raise _flag_error(flag, "bootorder must be greater than 0")
            if order in self.boot_orders:
                raise _flag_error(flag, f"bootorder {order} was given to {self.boot_orders[order]!r} already")
            self.boot_orders[order] = volume.name
        self.volumes.append(volume)
        self.disks.append(Disk(name=volume.name, disk=DiskTarget(bus=DiskBus.VIRTIO), boot_order=order))


def _base64(flag: str, text: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _flag_error(flag, "must be base64-encoded (e.g. --" + flag + '="$(base64 -w0 user-data.yaml)")') from None
    return text


def build_vm(flags: VMFlags) -> VirtualMachine:
    """The VirtualMachine the flags describe, validated by the models."""
    try:
        strategy = RunStrategy(flags.run_strategy)
    except ValueError:
        allowed = ", ".join(s.value for s in RunStrategy)
        raise _flag_error("run-strategy", f"invalid runStrategy {flags.run_strategy!r}; use one of {allowed}") from None
    try:
        memory = Quantity(flags.memory)
    except QuantityError as e:
        raise _flag_error("memory", str(e)) from None
    if flags.termination_grace_period < 0:
        raise _flag_error("termination-grace-period", "must not be negative")

    name = flags.name or random_name()
    builder = _Builder(name)
    for i, text in enumerate(flags.containerdisks):
        params = parse_params("volume-containerdisk", text, ("src", "name", "bootorder"))
        if not params.get("src"):
            raise _flag_error("volume-containerdisk", "src must be given: src:IMAGE")
        volume = Volume(
            name=params.get("name") or f"{name}-containerdisk-{i}",
            container_disk=ContainerDiskSource(image=params["src"]),
        )
        builder.add("volume-containerdisk", volume, params.get("bootorder"))
    for text in flags.pvcs:
        params = parse_params("volume-pvc", text, ("src", "name", "bootorder"))
        claim = params.get("src", "")
        if not claim:
            raise _flag_error("volume-pvc", "src must be given: src:CLAIM")
        if "/" in claim:
            raise _flag_error("volume-pvc", f"a claim in another namespace cannot be used directly: {claim!r}")
        volume = Volume(
            name=params.get("name") or claim, persistent_volume_claim=PersistentVolumeClaimSource(claim_name=claim)
        )
        builder.add("volume-pvc", volume, params.get("bootorder"))
    if flags.cloud_init_user_data or flags.cloud_init_network_data:
        source = CloudInitSource(
            user_data_base64=_base64("cloud-init-user-data", flags.cloud_init_user_data)
            if flags.cloud_init_user_data
            else None,
            network_data_base64=_base64("cloud-init-network-data", flags.cloud_init_network_data)
            if flags.cloud_init_network_data
            else None,
        )
        builder.add("cloud-init-user-data", Volume(name=CLOUD_INIT_DISK, cloud_init_no_cloud=source), None)

    try:
        return VirtualMachine(
            metadata=ObjectMeta(name=name, namespace=flags.namespace),
            spec=VirtualMachineSpec(
                run_strategy=strategy,
                template=VirtualMachineInstanceTemplateSpec(
                    spec=VirtualMachineInstanceSpec(
                        termination_grace_period_seconds=flags.termination_grace_period,
                        domain=DomainSpec(
                            memory=Memory(guest=memory),
                            devices=Devices(disks=builder.disks or None),
                        ),
                        volumes=builder.volumes or None,
                    )
                ),
            ),
        )
    except ValidationError as e:
        raise VirtctlError(f"the flags make an invalid VirtualMachine: {e}", ExitCode.USAGE) from None


def to_yaml(vm: VirtualMachine) -> str:
    document: dict[str, Any] = to_wire(vm)
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
