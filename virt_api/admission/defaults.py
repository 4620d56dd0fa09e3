"""KubeVirt's defaults, applied by the mutating webhook and returned as an RFC 6902 patch.

Defaulting works on the typed models (a deep copy) and the patch is the difference between the object as
sent and the defaulted object as it goes over the wire, so it only ever adds what was missing. Applying
the defaults to an already defaulted object changes nothing: a second pass yields an empty patch.

Defaults (KubeVirt's, for what podvirt implements):

- machine type ``q35``;
- CPU topology: 1 for each of sockets, cores and threads that is unset; when all three are unset the
  vCPU count comes from the CPU limit (else request), rounded up, as sockets;
- guest memory from the memory request (or limit), and the memory request from guest memory;
- a ``default`` pod network with a masquerade interface when neither interfaces nor networks are given
  (unless ``autoattachPodInterface: false``);
- a disk for every volume that has none; a disk is a ``disk`` unless it says cdrom or lun; buses
  virtio (disk), sata (cdrom), scsi (lun); CD-ROMs read-only with a closed tray; ``cache: none`` for
  ``io: native`` (which needs it);
- ``autoattachSerialConsole: true``; tablet inputs on USB; watchdog action ``reset``;
- ``terminationGracePeriodSeconds: 180``;
- VirtualMachine: ``runStrategy: Halted`` when neither it nor the deprecated ``running`` is set;
- VirtualMachineInstanceReplicaSet: ``replicas: 1``;
- VirtualMachineInstanceMigration: the label ``kubevirt.io/vmi-name``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jsonpatch
from pydantic import ValidationError

from kubevirt_types import (
    CPU,
    CDRomTarget,
    Devices,
    Disk,
    DiskBus,
    DiskTarget,
    DriverCache,
    DriverIO,
    InputBus,
    Interface,
    InterfaceMasquerade,
    Machine,
    Memory,
    Network,
    PodNetwork,
    Quantity,
    ResourceRequirements,
    RunStrategy,
    VirtualMachine,
    VirtualMachineInstance,
    VirtualMachineInstanceMigration,
    VirtualMachineInstanceReplicaSet,
    VirtualMachineInstanceSpec,
    WatchdogAction,
    to_wire,
)

DEFAULT_MACHINE_TYPE = "q35"
DEFAULT_NETWORK = "default"
DEFAULT_GRACE_PERIOD_SECONDS = 180
VMI_NAME_LABEL = "kubevirt.io/vmi-name"

Patch = list[dict[str, Any]]
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def default_vmi_spec(spec: VirtualMachineInstanceSpec) -> VirtualMachineInstanceSpec:
    """A copy of ``spec`` with KubeVirt's defaults filled in."""
    return _fill_in(spec.model_copy(deep=True))


def _fill_in(spec: VirtualMachineInstanceSpec) -> VirtualMachineInstanceSpec:
    """Fill in the defaults in place (for a model parsed just for this)."""
    domain = spec.domain
    if domain.machine is None:
        domain.machine = Machine()
    if domain.machine.type is None:
        domain.machine.type = DEFAULT_MACHINE_TYPE
    domain.cpu = _default_cpu(domain.cpu, domain.resources)
    _default_memory(spec)
    _default_network(spec)
    _default_disks(spec)
    devices = domain.devices
    if devices.autoattach_serial_console is None:
        devices.autoattach_serial_console = True
    for device in devices.inputs or []:
        if device.bus is None:
            device.bus = InputBus.USB
    watchdog = devices.watchdog.i6300esb if devices.watchdog is not None else None
    if watchdog is not None and watchdog.action is None:
        watchdog.action = WatchdogAction.RESET
    if spec.termination_grace_period_seconds is None:
        spec.termination_grace_period_seconds = DEFAULT_GRACE_PERIOD_SECONDS
    return spec


def _default_cpu(cpu: CPU | None, resources: ResourceRequirements | None) -> CPU:
    cpu = cpu or CPU()
    if cpu.sockets is None and cpu.cores is None and cpu.threads is None:
        cpu.sockets = _vcpus_from_resources(resources)
    cpu.sockets = cpu.sockets or 1
    cpu.cores = cpu.cores or 1
    cpu.threads = cpu.threads or 1
    return cpu


def _vcpus_from_resources(resources: ResourceRequirements | None) -> int:
    if resources is None:
        return 1
    for amounts in (resources.limits, resources.requests):
        if amounts and "cpu" in amounts and amounts["cpu"].value > 0:
            # Beyond what a machine can have, validation refuses it anyway; keep the number small.
            return max(1, min(math.ceil(amounts["cpu"].value), 1 << 16))
    return 1


def _default_memory(spec: VirtualMachineInstanceSpec) -> None:
    domain = spec.domain
    resources = domain.resources or ResourceRequirements()
    requests = dict(resources.requests or {})
    limits = resources.limits or {}
    if "memory" not in requests and "memory" in limits:
        requests["memory"] = Quantity(limits["memory"])
    guest = domain.memory.guest if domain.memory is not None else None
    if guest is None and "memory" in requests:
        domain.memory = domain.memory or Memory()
        domain.memory.guest = Quantity(requests["memory"])
        guest = domain.memory.guest
    if guest is not None and "memory" not in requests:
        requests["memory"] = Quantity(guest)
    if requests != (resources.requests or {}):
        resources.requests = requests
        domain.resources = resources


def _default_network(spec: VirtualMachineInstanceSpec) -> None:
    devices = spec.domain.devices
    if devices.interfaces or spec.networks or devices.autoattach_pod_interface is False:
        return
    devices.interfaces = [Interface(name=DEFAULT_NETWORK, masquerade=InterfaceMasquerade())]
    spec.networks = [Network(name=DEFAULT_NETWORK, pod=PodNetwork())]


def _default_disks(spec: VirtualMachineInstanceSpec) -> None:
    devices: Devices = spec.domain.devices
    disks = list(devices.disks or [])
    named = {disk.name for disk in disks}
    for volume in spec.volumes or []:
        if volume.name not in named:
            disks.append(Disk(name=volume.name))
            named.add(volume.name)
    for disk in disks:
        if disk.disk is None and disk.cdrom is None and disk.lun is None:
            disk.disk = DiskTarget()
        if disk.disk is not None and disk.disk.bus is None:
            disk.disk.bus = DiskBus.VIRTIO
        if disk.cdrom is not None:
            _default_cdrom(disk.cdrom)
        if disk.lun is not None and disk.lun.bus is None:
            disk.lun.bus = DiskBus.SCSI
        if disk.io == DriverIO.NATIVE and disk.cache is None:
            disk.cache = DriverCache.NONE  # native I/O is only possible without the host page cache
    if disks:
        devices.disks = disks


def _default_cdrom(cdrom: CDRomTarget) -> None:
    if cdrom.bus is None:
        cdrom.bus = DiskBus.SATA
    if cdrom.readonly is None:
        cdrom.readonly = True
    if cdrom.tray is None:
        cdrom.tray = "closed"


# -- per kind: the patch for an object as the apiserver sent it ---------------------------------------------


def _diff(before: Any, after: Any, prefix: str) -> Patch:
    """RFC 6902 operations turning ``before`` into ``after``, with paths under ``prefix``.

    Objects are walked key by key, skipping equal subtrees (a C-speed comparison), so the cost follows
    what the defaults changed rather than the size of the spec; lists and values are diffed by jsonpatch.
    """
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        operations: Patch = []
        for key, value in after.items():
            path = f"{prefix}/{_escape(key)}"
            if key not in before:
                operations.append({"op": "add", "path": path, "value": value})
            elif before[key] != value:
                operations += _diff(before[key], value, path)
        operations += [{"op": "remove", "path": f"{prefix}/{_escape(key)}"} for key in before if key not in after]
        return operations
    if not isinstance(before, list) or not isinstance(after, list):
        return [{"op": "replace", "path": prefix, "value": after}]
    operations = jsonpatch.make_patch(before, after).patch
    for op in operations:
        op["path"] = prefix + op["path"]
        if "from" in op:
            op["from"] = prefix + op["from"]
    return operations


def _template_spec_patch(
    raw_template_spec: dict[str, Any] | None, spec: VirtualMachineInstanceSpec | None, at: str
) -> Patch:
    if spec is None or raw_template_spec is None:
        return []
    return _diff(raw_template_spec, to_wire(_fill_in(spec)), at)


def vmi_patch(obj: dict[str, Any]) -> Patch:
    """Defaults for a VirtualMachineInstance; empty if it does not parse (validation then says why)."""
    try:
        vmi = VirtualMachineInstance.model_validate(obj)
    except ValidationError:
        return []
    return _diff(obj.get("spec"), to_wire(_fill_in(vmi.spec)), "/spec")


def vm_patch(obj: dict[str, Any]) -> Patch:
    try:
        vm = VirtualMachine.model_validate(obj)
    except ValidationError:
        return []
    raw_spec = obj["spec"]
    operations: Patch = []
    if vm.spec.running is None and vm.spec.run_strategy is None:
        operations.append({"op": "add", "path": "/spec/runStrategy", "value": RunStrategy.HALTED.value})
    raw_template = raw_spec.get("template") or {}
    operations += _template_spec_patch(raw_template.get("spec"), vm.spec.template.spec, "/spec/template/spec")
    return operations


def vmirs_patch(obj: dict[str, Any]) -> Patch:
    try:
        rs = VirtualMachineInstanceReplicaSet.model_validate(obj)
    except ValidationError:
        return []
    operations: Patch = []
    if rs.spec.replicas is None:
        operations.append({"op": "add", "path": "/spec/replicas", "value": 1})
    raw_template = obj["spec"].get("template") or {}
    operations += _template_spec_patch(raw_template.get("spec"), rs.spec.template.spec, "/spec/template/spec")
    return operations


def migration_patch(obj: dict[str, Any]) -> Patch:
    try:
        migration = VirtualMachineInstanceMigration.model_validate(obj)
    except ValidationError:
        return []
    labels = migration.metadata.labels or {}
    if labels.get(VMI_NAME_LABEL) == migration.spec.vmi_name or not _LABEL_VALUE.match(migration.spec.vmi_name):
        return []  # already there, or a name too long to be a label value (validation judges the name)
    if migration.metadata.labels is None:
        return [{"op": "add", "path": "/metadata/labels", "value": {VMI_NAME_LABEL: migration.spec.vmi_name}}]
    return [{"op": "add", "path": "/metadata/labels/" + _escape(VMI_NAME_LABEL), "value": migration.spec.vmi_name}]


def _escape(key: str) -> str:
    """A map key as one JSON-pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
