"""Configurator: network interfaces on the pod network (a prepared tap, or QEMU user networking)."""

from __future__ import annotations

from kubevirt_types import InterfaceModel
from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

from .context import ConvertContext
from .disks import claim_boot_order, pci_address
from .xml import Element, ensure, sub

FIELD = "spec.domain.devices.interfaces"


def normalise_mac(value: str, field: str) -> str:
    mac = value.replace("-", ":").lower()
    if int(mac.split(":")[0], 16) & 1:
        raise InvalidSpecError(f"{value} is a multicast address; a NIC needs a unicast one", field=field)
    return mac


def configure(domain: Element, ctx: ConvertContext) -> None:
    devices = ensure(domain, "devices")
    spec = ctx.vmi.spec
    networks = {n.name: (i, n) for i, n in enumerate(spec.networks or [])}
    vcpus = ctx.vcpu_count()
    for i, iface in enumerate(spec.domain.devices.interfaces or []):
        field = f"{FIELD}[{i}]"
        if iface.name not in networks:
            raise InvalidSpecError(f"no network named {iface.name!r}", field=f"{field}.name")
        net_index, network = networks[iface.name]
        if network.multus is not None:
            raise UnsupportedFieldError("Multus networks are not supported", field=f"spec.networks[{net_index}].multus")
        attachment = ctx.networks.get(iface.name)
        if attachment is None:
            raise InvalidSpecError("the interface's network attachment was not resolved", field=field)
        if attachment.kind == "tap":
            el = sub(devices, "interface", type="ethernet")
        else:
            el = sub(devices, "interface", type="user")
            if iface.ports:
                ctx.warnings.append(f"{field}.ports: not forwarded with QEMU user networking (no privileged setup)")
        if iface.mac_address:
            sub(el, "mac", address=normalise_mac(iface.mac_address, f"{field}.macAddress"))
        if attachment.kind == "tap":
            sub(el, "target", dev=attachment.tap, managed="no")
        model = iface.model or InterfaceModel.VIRTIO
        sub(el, "model", type=model.value)
        if model == InterfaceModel.VIRTIO and spec.domain.devices.network_interface_multiqueue and vcpus > 1:
            sub(el, "driver", name="vhost" if ctx.domain_type == "kvm" else "qemu", queues=vcpus)
        if iface.boot_order is not None:
            claim_boot_order(domain, iface.boot_order, f"{field}.bootOrder")
            sub(el, "boot", order=iface.boot_order)
        else:
            # Without a boot order QEMU would still try PXE from every NIC (slow under emulation).
            sub(el, "rom", enabled=False)
        if iface.pci_address:
            pci_address(el, iface.pci_address, f"{field}.pciAddress")
