"""The rules every VMI spec must obey (a VMI's own, or the template of a VM or replica set).

Each rule returns field errors naming the offending field; nothing here raises on bad input. The rules
are KubeVirt's where KubeVirt has one, plus the ones that keep the launcher out of trouble: names that
are safe in file paths, one pod network, a memory size QEMU accepts, a MAC libvirt accepts.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable
from decimal import Decimal

from kubevirt_types import (
    CPU,
    Disk,
    DiskBus,
    DriverCache,
    DriverIO,
    HostDiskType,
    Port,
    Probe,
    Quantity,
    StartStrategy,
    VirtualMachineInstanceSpec,
    Volume,
)
from virt_api.admission.unsupported import unsupported_features
from virt_api.fielderrors import (
    FieldError,
    FieldPath,
    duplicate,
    forbidden,
    invalid,
    not_found,
    not_supported,
    required,
    too_long,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IANA_SERVICE_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PCI_ADDRESS = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

#: QEMU's q35 machine without an IOMMU stops at 255 vCPUs.
MAX_VCPUS = 255
MIN_GUEST_MEMORY = Quantity("1Mi")
#: KubeVirt's limit on cloud-init user and network data.
MAX_CLOUD_INIT_BYTES = 16 * 1024
CPU_FEATURE_POLICIES = ["force", "require", "optional", "disable", "forbid"]
#: Volume sources that may back a ``lun`` disk (it passes a block device through).
LUN_SOURCES = ("persistent_volume_claim", "data_volume")


def validate_vmi_spec(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    """Every rule; ``at`` is where the spec sits in the object (``spec``, ``spec.template.spec``)."""
    errors = unsupported_features(spec, at)
    errors += _names(spec, at)
    errors += _disks(spec, at)
    errors += _volumes(spec, at)
    errors += _boot_order(spec, at)
    errors += _networks(spec, at)
    errors += _cpu(spec.domain.cpu, at / "domain" / "cpu")
    errors += _memory(spec, at)
    errors += _firmware(spec, at)
    errors += _scheduling(spec, at)
    errors += _probes(spec, at)
    return errors


def _unique_dns_labels(names: Iterable[str], at: FieldPath, what: str) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        path = at[i] / "name"
        if not DNS_LABEL.match(name) or len(name) > 63:
            errors.append(
                invalid(
                    path, name, f"a {what} name must be a DNS label: lower-case letters, digits and '-', at most 63"
                )
            )
        if name in seen:
            errors.append(duplicate(path, name))
        seen.add(name)
    return errors


def _names(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    devices = spec.domain.devices
    dev = at / "domain" / "devices"
    errors = _unique_dns_labels((v.name for v in spec.volumes or []), at / "volumes", "volume")
    errors += _unique_dns_labels((d.name for d in devices.disks or []), dev / "disks", "disk")
    errors += _unique_dns_labels((i.name for i in devices.interfaces or []), dev / "interfaces", "interface")
    errors += _unique_dns_labels((n.name for n in spec.networks or []), at / "networks", "network")
    errors += _unique_dns_labels((i.name for i in devices.inputs or []), dev / "inputs", "input")
    return errors


def _disks(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    volumes = {v.name: v for v in spec.volumes or []}
    for i, disk in enumerate(spec.domain.devices.disks or []):
        path = (at / "domain" / "devices" / "disks")[i]
        volume = volumes.get(disk.name)
        if volume is None:
            errors.append(not_found(path / "name", disk.name, f"no volume named {disk.name} in {at / 'volumes'}"))
        errors += _disk(disk, volume, path)
    return errors


def _disk(disk: Disk, volume: Volume | None, path: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    if disk.cdrom is not None and disk.cdrom.bus == DiskBus.VIRTIO:
        errors.append(not_supported(path / "cdrom" / "bus", "virtio", ["sata", "scsi"]))
    if disk.cdrom is not None and disk.cdrom.readonly is False:
        errors.append(invalid(path / "cdrom" / "readonly", False, "a CD-ROM is always read-only"))
    if disk.cdrom is not None and disk.cdrom.tray not in (None, "open", "closed"):
        errors.append(not_supported(path / "cdrom" / "tray", disk.cdrom.tray, ["closed", "open"]))
    if disk.lun is not None and disk.lun.bus not in (None, DiskBus.SCSI):
        errors.append(not_supported(path / "lun" / "bus", disk.lun.bus, ["scsi"]))
    if disk.lun is not None and volume is not None and not any(getattr(volume, s) for s in LUN_SOURCES):
        errors.append(
            invalid(
                path / "lun",
                disk.name,
                "a LUN passes a block device through: its volume must be a persistentVolumeClaim or dataVolume",
            )
        )
    if disk.disk is not None and disk.disk.pci_address is not None:
        if disk.disk.bus not in (None, DiskBus.VIRTIO):
            errors.append(
                invalid(path / "disk" / "pciAddress", disk.disk.pci_address, "a PCI address needs the virtio bus")
            )
        elif not PCI_ADDRESS.match(disk.disk.pci_address):
            errors.append(
                invalid(
                    path / "disk" / "pciAddress",
                    disk.disk.pci_address,
                    "expected domain:bus:slot.function, e.g. 0000:81:01.0",
                )
            )
    if disk.io == DriverIO.NATIVE and disk.cache != DriverCache.NONE:
        errors.append(
            invalid(
                path / "io",
                "native",
                f"native I/O needs cache: none (QEMU refuses it with cache {disk.cache or 'unset'})",
            )
        )
    if disk.serial is not None and (len(disk.serial) > 36 or not re.fullmatch(r"[A-Za-z0-9_.+-]*", disk.serial)):
        errors.append(invalid(path / "serial", disk.serial, "at most 36 letters, digits and _ . + -"))
    return errors


def _volumes(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    single: dict[str, FieldPath] = {}
    for i, volume in enumerate(spec.volumes or []):
        path = (at / "volumes")[i]
        errors += _volume(volume, path)
        for kind in ("cloudInitNoCloud", "cloudInitConfigDrive", "serviceAccount"):
            if getattr(volume, _snake(kind)) is None:
                continue
            if kind in single:
                errors.append(
                    duplicate(path / kind, volume.name, f"only one {kind} volume is allowed ({single[kind]} is one)")
                )
            else:
                single[kind] = path
    return errors


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _volume(volume: Volume, path: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    if volume.container_disk is not None:
        source = volume.container_disk
        if not source.image.strip():
            errors.append(required(path / "containerDisk" / "image"))
        if source.path is not None and not _safe_absolute(source.path):
            errors.append(
                invalid(path / "containerDisk" / "path", source.path, "must be an absolute path without '..'")
            )
    for kind in ("cloudInitNoCloud", "cloudInitConfigDrive"):
        cloud_init = getattr(volume, _snake(kind))
        if cloud_init is None:
            continue
        if not (
            cloud_init.user_data
            or cloud_init.user_data_base64
            or cloud_init.user_data_secret_ref
            or cloud_init.network_data
            or cloud_init.network_data_base64
            or cloud_init.network_data_secret_ref
        ):
            errors.append(required(path / kind, "give userData, userDataBase64 or userDataSecretRef (or network data)"))
        for field in ("userData", "userDataBase64", "networkData", "networkDataBase64"):
            value = getattr(cloud_init, _snake(field))
            if value is not None and len(value.encode()) > MAX_CLOUD_INIT_BYTES:
                errors.append(too_long(path / kind / field, MAX_CLOUD_INIT_BYTES))
    if volume.empty_disk is not None and volume.empty_disk.capacity.value <= 0:
        errors.append(invalid(path / "emptyDisk" / "capacity", volume.empty_disk.capacity, "must be greater than zero"))
    if volume.host_disk is not None:
        host = volume.host_disk
        if not _safe_absolute(host.path):
            errors.append(invalid(path / "hostDisk" / "path", host.path, "must be an absolute path without '..'"))
        if host.type == HostDiskType.DISK_OR_CREATE and host.capacity is None:
            errors.append(
                required(path / "hostDisk" / "capacity", "DiskOrCreate needs the size of the image to create")
            )
        if host.capacity is not None and host.capacity.value <= 0:
            errors.append(invalid(path / "hostDisk" / "capacity", host.capacity, "must be greater than zero"))
    if volume.ephemeral is not None and volume.ephemeral.persistent_volume_claim is None:
        errors.append(required(path / "ephemeral" / "persistentVolumeClaim"))
    return errors


def _safe_absolute(path: str) -> bool:
    return path.startswith("/") and ".." not in path.split("/") and "\x00" not in path


def _boot_order(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    used: dict[int, FieldPath] = {}
    devices = spec.domain.devices
    numbered = [((at / "domain" / "devices" / "disks")[i], d.boot_order) for i, d in enumerate(devices.disks or [])]
    numbered += [
        ((at / "domain" / "devices" / "interfaces")[i], n.boot_order) for i, n in enumerate(devices.interfaces or [])
    ]
    for path, order in numbered:
        if order is None:
            continue
        if order in used:
            errors.append(invalid(path / "bootOrder", order, f"boot order {order} is already used by {used[order]}"))
        else:
            used[order] = path
    return errors


def _networks(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    networks = {n.name: n for n in spec.networks or []}
    interfaces = spec.domain.devices.interfaces or []
    attached = {i.name for i in interfaces}
    macs: dict[str, FieldPath] = {}
    for i, interface in enumerate(interfaces):
        path = (at / "domain" / "devices" / "interfaces")[i]
        network = networks.get(interface.name)
        if network is None:
            errors.append(
                not_found(path / "name", interface.name, f"no network named {interface.name} in {at / 'networks'}")
            )
        if interface.masquerade is None and interface.bridge is None:
            errors.append(required(path, "choose a binding: masquerade: {} or bridge: {}"))
        if interface.masquerade is not None and network is not None and network.pod is None:
            errors.append(invalid(path / "masquerade", interface.name, "masquerade works on the pod network only"))
        if interface.ports and interface.masquerade is None:
            errors.append(forbidden(path / "ports", "ports are forwarded by the masquerade binding only"))
        errors += _ports(interface.ports or [], path / "ports")
        if interface.mac_address is not None:
            mac = interface.mac_address.replace("-", ":").lower()
            if int(mac[:2], 16) & 1:
                errors.append(
                    invalid(
                        path / "macAddress", interface.mac_address, "must be a unicast address (the first octet even)"
                    )
                )
            if mac in macs:
                errors.append(duplicate(path / "macAddress", interface.mac_address, f"also used by {macs[mac]}"))
            macs[mac] = path
        if interface.pci_address is not None and not PCI_ADDRESS.match(interface.pci_address):
            errors.append(
                invalid(
                    path / "pciAddress", interface.pci_address, "expected domain:bus:slot.function, e.g. 0000:81:01.0"
                )
            )
    pod_networks = 0
    for i, network in enumerate(spec.networks or []):
        path = (at / "networks")[i]
        if network.name not in attached:
            errors.append(
                not_found(
                    path / "name",
                    network.name,
                    f"no interface named {network.name} in {at / 'domain' / 'devices' / 'interfaces'}",
                )
            )
        if network.pod is not None:
            pod_networks += 1
            if pod_networks > 1:
                errors.append(forbidden(path / "pod", "a VMI has at most one pod network"))
            errors += _cidr(network.pod.vm_network_cidr, path / "pod" / "vmNetworkCIDR", 4)
            errors += _cidr(network.pod.vm_ipv6_network_cidr, path / "pod" / "vmIPv6NetworkCIDR", 6)
    return errors


def _ports(ports: list[Port], at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        name = port.name
        if name is None:
            continue
        if len(name) > 15 or not IANA_SERVICE_NAME.match(name):
            errors.append(
                invalid(
                    at[i] / "name", name, "a port name has at most 15 lower-case letters, digits and '-', with a letter"
                )
            )
        if name in names:
            errors.append(duplicate(at[i] / "name", name))
        names.add(name)
    return errors


def _cidr(value: str | None, path: FieldPath, version: int) -> list[FieldError]:
    if value is None:
        return []
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return [invalid(path, value, f"not an IPv{version} CIDR")]
    if network.version != version:
        return [invalid(path, value, f"not an IPv{version} CIDR")]
    if network.num_addresses < 4:
        return [invalid(path, value, "too small: the guest, the gateway and DNS need addresses")]
    return []


def _cpu(cpu: CPU | None, at: FieldPath) -> list[FieldError]:
    if cpu is None:
        return []
    errors: list[FieldError] = []
    vcpus = (cpu.sockets or 1) * (cpu.cores or 1) * (cpu.threads or 1)
    if vcpus > MAX_VCPUS:
        errors.append(invalid(at, vcpus, f"sockets x cores x threads may be at most {MAX_VCPUS} vCPUs"))
    for i, feature in enumerate(cpu.features or []):
        if not feature.name:
            errors.append(required((at / "features")[i] / "name"))
        if feature.policy is not None and feature.policy not in CPU_FEATURE_POLICIES:
            errors.append(not_supported((at / "features")[i] / "policy", feature.policy, CPU_FEATURE_POLICIES))
    return errors


def _memory(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    domain = spec.domain
    errors: list[FieldError] = []
    resources = domain.resources
    requests = (resources.requests if resources else None) or {}
    limits = (resources.limits if resources else None) or {}
    guest = domain.memory.guest if domain.memory else None
    res = at / "domain" / "resources"
    for kind, amounts in (("requests", requests), ("limits", limits)):
        for name, amount in amounts.items():
            if amount.value < 0:
                errors.append(invalid(res / kind / name, amount, "must not be negative"))
    if guest is None and "memory" not in requests:
        errors.append(
            required(
                res / "requests" / "memory",
                f"set {res / 'requests' / 'memory'} or {at / 'domain' / 'memory' / 'guest'}",
            )
        )
    if guest is not None:
        path = at / "domain" / "memory" / "guest"
        if guest < MIN_GUEST_MEMORY:
            errors.append(invalid(path, guest, f"must be at least {MIN_GUEST_MEMORY}"))
        elif guest.value != guest.value.to_integral_value():
            errors.append(invalid(path, guest, "must be a whole number of bytes"))
        if "memory" in limits and guest > limits["memory"]:
            errors.append(invalid(path, guest, f"must not exceed the memory limit {limits['memory']}"))
    for name in ("memory", "cpu"):
        if name in requests and name in limits and requests[name] > limits[name]:
            errors.append(invalid(res / "requests" / name, requests[name], f"must not exceed the limit {limits[name]}"))
    if "cpu" in requests and requests["cpu"].value > Decimal(MAX_VCPUS):
        errors.append(invalid(res / "requests" / "cpu", requests["cpu"], f"at most {MAX_VCPUS} CPUs"))
    return errors


def _firmware(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    firmware = spec.domain.firmware
    if firmware is None:
        return []
    errors: list[FieldError] = []
    path = at / "domain" / "firmware"
    if firmware.uuid is not None:
        try:
            uuid.UUID(firmware.uuid)
        except ValueError:
            errors.append(invalid(path / "uuid", firmware.uuid, "not a UUID"))
    efi = firmware.bootloader.efi if firmware.bootloader else None
    features = spec.domain.features
    if efi is not None and efi.secure_boot is not False and features and features.smm and features.smm.enabled is False:
        errors.append(
            invalid(
                path / "bootloader" / "efi" / "secureBoot",
                True,
                "Secure Boot needs SMM: remove features.smm.enabled: false or set secureBoot: false",
            )
        )
    kernel = firmware.kernel_boot
    if kernel is not None:
        if kernel.container is None:
            errors.append(required(path / "kernelBoot" / "container", "the container image holding the kernel"))
        else:
            container = kernel.container
            kpath = path / "kernelBoot" / "container"
            if not container.image.strip():
                errors.append(required(kpath / "image"))
            if container.kernel_path is None and container.initrd_path is None:
                errors.append(required(kpath / "kernelPath", "give kernelPath, initrdPath or both"))
            for field, value in (("kernelPath", container.kernel_path), ("initrdPath", container.initrd_path)):
                if value is not None and not _safe_absolute(value):
                    errors.append(invalid(kpath / field, value, "must be an absolute path without '..'"))
    return errors


def _scheduling(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, value in (spec.node_selector or {}).items():
        if len(key) > 316 or not QUALIFIED_NAME.match(key):
            errors.append(invalid((at / "nodeSelector")[key], key, "not a label key"))
        if len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(invalid((at / "nodeSelector")[key], value, "not a label value"))
    for field, name in (("hostname", spec.hostname), ("subdomain", spec.subdomain)):
        if name is not None and not DNS_LABEL.match(name):
            errors.append(invalid(at / field, name, "must be a DNS label: lower-case letters, digits and '-'"))
    return errors


def _probes(spec: VirtualMachineInstanceSpec, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    if spec.start_strategy == StartStrategy.PAUSED and spec.liveness_probe is not None:
        errors.append(forbidden(at / "livenessProbe", "a VMI that starts paused cannot have a liveness probe"))
    for field, probe in (("livenessProbe", spec.liveness_probe), ("readinessProbe", spec.readiness_probe)):
        if probe is not None:
            errors += _probe(probe, at / field)
    return errors


def _probe(probe: Probe, at: FieldPath) -> list[FieldError]:
    errors: list[FieldError] = []
    for kind, action in (("httpGet", probe.http_get), ("tcpSocket", probe.tcp_socket)):
        if action is None:
            continue
        port = action.port
        if isinstance(port, int) and not 1 <= port <= 65535:
            errors.append(invalid(at / kind / "port", port, "must be between 1 and 65535"))
        if isinstance(port, str) and not (len(port) <= 15 and IANA_SERVICE_NAME.match(port)):
            errors.append(invalid(at / kind / "port", port, "must be a port number or an IANA service name"))
    if probe.exec_ is not None and not probe.exec_.command:
        errors.append(required(at / "exec" / "command"))
    return errors
