"""Property: a VMI spec the webhooks admit (defaulted, then validated) converts to a domain libvirt's schema accepts.

virt-api and virt-launcher may not import each other; this test joins them. Specs are drawn two ways: a
generator of plausible specs over the features podvirt supports (some of them deliberately wrong, which
the webhook must refuse), and the shared model strategies (arbitrary typed specs). Whatever is admitted
must convert, for emulated and KVM guests alike; a launcher refusal of an admitted spec is a rule
missing from the webhook (or a feature missing from the launcher).
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import jsonpatch
import pytest
from hypothesis import HealthCheck, event, example, given, settings

import kubevirt_types as kt
from kubevirt_types.strategies import from_model
from virt_api.admission import defaults, kinds
from virt_launcher.converter import ConvertContext, DiskSource, DomainPaths, KernelFiles, NetAttachment, convert

pytestmark = pytest.mark.unit

PATHS = DomainPaths(
    serial_socket="/pod/serial.sock",
    vnc_socket="/pod/vnc.sock",
    nvram_dir="/pod/nvram",
    guest_agent_socket="/pod/qga.sock",
)
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _source(volume: kt.Volume) -> DiskSource:
    """What the launcher's preparation step would make of a volume, without touching a disk."""
    path = f"/pod/disks/{volume.name}"
    if volume.container_disk or volume.ephemeral:
        return DiskSource(
            "file", path + ".qcow2", "qcow2", backing=DiskSource("file", path + ".base", "qcow2", readonly=True)
        )
    if volume.persistent_volume_claim or volume.data_volume:
        return DiskSource("block", path, "raw")
    if volume.empty_disk:
        return DiskSource("file", path + ".qcow2", "qcow2")
    if volume.host_disk:
        return DiskSource("file", path + ".img", "raw")
    return DiskSource("file", path + ".iso", "raw", readonly=True)


def _context(vmi: kt.VirtualMachineInstance, domain_type: str) -> ConvertContext:
    firmware = vmi.spec.domain.firmware
    kernel = None
    if firmware and firmware.kernel_boot and firmware.kernel_boot.container:
        kernel = KernelFiles("/pod/kernel/vmlinuz", "/pod/kernel/initrd.img")
    return ConvertContext(
        vmi=vmi,
        domain_type=domain_type,  # type: ignore[arg-type]
        paths=PATHS,
        disks={v.name: _source(v) for v in vmi.spec.volumes or []},
        kernel=kernel,
        networks={i.name: NetAttachment("user") for i in vmi.spec.domain.devices.interfaces or []},
    )


def admitted(spec: dict[str, Any]) -> kt.VirtualMachineInstance | None:
    """The VMI as stored, if the webhooks admit ``spec``; None if they refuse it."""
    obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    }
    stored = jsonpatch.apply_patch(obj, defaults.vmi_patch(obj))
    verdict = kinds.validate_vmi(stored, None)
    return kt.VirtualMachineInstance.model_validate(stored) if verdict.allowed else None


def check_converts(spec: dict[str, Any]) -> None:
    vmi = admitted(spec)
    event("admitted" if vmi is not None else "refused")
    if vmi is None:
        return
    for domain_type in ("qemu", "kvm"):
        convert(_context(vmi, domain_type))  # raises on a launcher refusal or a schema violation


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def mostly(*good: Any, bad: Any) -> st.SearchStrategy[Any]:
    """One of ``good``, and now and then ``bad`` (a mistake the webhook must catch)."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.just(bad))


SOURCES = [
    {"containerDisk": {"image": "example.com/disk:1"}},
    {"emptyDisk": {"capacity": "1Gi"}},
    {"persistentVolumeClaim": {"claimName": "claim"}},
    {"dataVolume": {"name": "dv"}},
    {"ephemeral": {"persistentVolumeClaim": {"claimName": "claim"}}},
    {"hostDisk": {"path": "/var/data/disk.img", "type": "DiskOrCreate", "capacity": "1Gi"}},
    {"cloudInitNoCloud": {"userData": "#cloud-config\n"}},
    {"cloudInitConfigDrive": {"userData": "#cloud-config\n", "networkData": "version: 2\n"}},
    {"configMap": {"name": "cm"}},
    {"secret": {"secretName": "s"}},
    {"serviceAccount": {"serviceAccountName": "default"}},
]


@st.composite
def plausible_specs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["root", "data", "seed", "cfg", "scratch"]), unique=True, max_size=4))
    disks, volumes = [], []
    for name in names:
        volumes.append({"name": name, **draw(mostly(*SOURCES, bad={"hostDisk": {"path": "x.img", "type": "Disk"}}))})
        if draw(st.integers(0, 4)) == 0:
            continue  # a volume without a disk: the defaults add one
        target = draw(mostly("disk", "cdrom", bad="lun"))
        disk: dict[str, Any] = {
            "name": name,
            target: draw(optional(bus=mostly("virtio", "sata", "scsi", bad="virtio"))),
        }
        disk.update(
            draw(
                optional(
                    bootOrder=st.integers(1, 12),
                    cache=st.sampled_from(["none", "writethrough", "writeback"]),
                    io=st.sampled_from(["native", "threads"]),
                    serial=mostly("SER0001", bad="bad serial!"),
                )
            )
        )
        disks.append(disk)
    devices: dict[str, Any] = {"disks": disks} if disks else {}
    devices.update(
        draw(
            optional(
                autoattachSerialConsole=st.booleans(),
                autoattachGraphicsDevice=st.booleans(),
                autoattachPodInterface=st.booleans(),
                rng=st.just({}),
                inputs=st.just([{"name": "tablet", "type": "tablet"}]),
                watchdog=st.just({"name": "wd", "i6300esb": {}}),
            )
        )
    )
    spec: dict[str, Any] = {"volumes": volumes}
    if draw(st.booleans()):
        binding = draw(st.sampled_from(["masquerade", "bridge"]))
        interface: dict[str, Any] = {"name": "default", binding: {}}
        interface.update(
            draw(
                optional(
                    model=st.sampled_from(["virtio", "e1000", "rtl8139"]),
                    macAddress=mostly("02:00:00:00:00:01", "DE-AD-00-00-BE-AF", bad="01:00:5e:00:00:01"),
                    ports=st.just([{"name": "ssh", "port": 22}]),
                    bootOrder=st.integers(1, 12),
                )
            )
        )
        devices["interfaces"] = [interface]
        spec["networks"] = [draw(mostly({"name": "default", "pod": {}}, bad={"name": "other", "pod": {}}))]
    memory = draw(mostly("64Mi", "1Gi", "100M", bad="512"))
    domain: dict[str, Any] = {"devices": devices, "memory": {"guest": memory}}
    domain.update(
        draw(
            optional(
                resources=mostly(
                    {"requests": {"memory": memory}}, {"requests": {"cpu": "1500m"}}, bad={"limits": {"memory": "64Mi"}}
                ),
                cpu=optional(
                    cores=st.integers(1, 4), sockets=st.integers(1, 2), model=st.sampled_from(["host-model", "qemu64"])
                ),
                machine=optional(type=st.sampled_from(["q35", "pc-q35-7.2"])),
                firmware=optional(
                    bootloader=st.sampled_from([{"bios": {}}, {"efi": {"secureBoot": False}}, {"efi": {}}]),
                    kernelBoot=st.just(
                        {"container": {"image": "k", "kernelPath": "/boot/vmlinuz"}, "kernelArgs": "console=ttyS0"}
                    ),
                    uuid=mostly("5d307ca9-b3ef-428c-8861-06e72d69f223", bad="nope"),
                ),
                features=optional(acpi=st.just({}), apic=st.just({}), smm=st.sampled_from([{}, {"enabled": False}])),
                clock=st.sampled_from([{"utc": {}}, {"timezone": "Europe/Berlin"}]),
            )
        )
    )
    spec["domain"] = domain
    spec.update(
        draw(optional(terminationGracePeriodSeconds=st.integers(0, 300), hostname=mostly("guest", bad="Not_A_Label")))
    )
    return spec


EXAMPLE = {
    "domain": {"memory": {"guest": "64Mi"}, "devices": {}},
    "volumes": [{"name": "root", "containerDisk": {"image": "example.com/disk:1"}}],
}


@SLOW
@example(EXAMPLE)
@given(plausible_specs())
def test_every_admitted_plausible_spec_converts(spec: dict[str, Any]) -> None:
    check_converts(spec)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(from_model(kt.VirtualMachineInstanceSpec))
def test_every_admitted_typed_spec_converts(spec: kt.VirtualMachineInstanceSpec) -> None:
    check_converts(kt.to_wire(spec))


def test_the_plain_example_is_admitted_so_the_properties_are_not_vacuous() -> None:
    assert admitted(EXAMPLE) is not None
