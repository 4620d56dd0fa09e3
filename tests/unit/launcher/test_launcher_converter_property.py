"""Property: every VMI spec the API models accept converts, and libvirt's RelaxNG schema accepts the result.

The strategy draws consistent specs (what virt-api admits) over every field the converter reads; a second
property feeds arbitrary combinations and requires either valid XML or an error that names a spec field.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from launcher_fixtures import context
from pydantic import ValidationError

from kubevirt_types import VirtualMachineInstance
from virt_launcher.converter import convert
from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

NAMES = ["root", "data", "seed", "scratch", "extra", "cfg"]
MEMORY = st.sampled_from(["64Mi", "96Mi", "1Gi", "134217728", "0.5Gi", "100M"])
TOGGLE = st.none() | st.fixed_dictionaries({}, optional={"enabled": st.booleans()})
BOOL = st.booleans()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


cpu = optional(
    cores=st.integers(1, 4),
    sockets=st.integers(1, 2),
    threads=st.integers(1, 2),
    model=st.sampled_from(["host-model", "host-passthrough", "Haswell", "qemu64", "Skylake-Client"]),
    features=st.lists(
        optional(policy=st.sampled_from(["force", "require", "optional", "disable", "forbid"])).map(
            lambda f: {"name": "pcid", **f}
        ),
        max_size=2,
    ),
)
clock = st.one_of(
    optional(utc=optional(offsetSeconds=st.integers(-86400, 86400))),
    st.fixed_dictionaries({"timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])}),
).flatmap(
    lambda c: st.fixed_dictionaries(
        {k: st.just(v) for k, v in c.items()},
        optional={
            "timer": optional(
                hpet=optional(present=st.booleans(), tickPolicy=st.sampled_from(["delay", "catchup", "merge"])),
                pit=optional(present=st.booleans(), tickPolicy=st.sampled_from(["delay", "catchup", "discard"])),
                rtc=optional(present=st.booleans(), tickPolicy=st.sampled_from(["delay", "catchup"]),
                             track=st.sampled_from(["guest", "wall"])),
                kvm=optional(present=st.booleans()),
                hyperv=optional(present=st.booleans()),
            )
        },
    )
)  # fmt: skip
HYPERV_SWITCHES = ("relaxed", "vapic", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment",
                   "tlbflush", "ipi", "evmcs")  # fmt: skip
hyperv = optional(
    **dict.fromkeys(HYPERV_SWITCHES, TOGGLE),
    spinlocks=optional(enabled=st.booleans(), spinlocks=st.integers(4096, 1 << 20)),
    vendorid=optional(enabled=st.booleans(), vendorid=st.text("abcdefXYZ019", min_size=1, max_size=12)),
    synictimer=optional(enabled=st.booleans(), direct=TOGGLE),
)  # fmt: skip
features = optional(
    acpi=TOGGLE,
    apic=optional(enabled=st.booleans(), endOfInterrupt=st.booleans()),
    smm=st.just({"enabled": True}) | st.just({}),
    hyperv=hyperv,
    kvm=optional(hidden=st.booleans()),
    pvspinlock=TOGGLE,
)
firmware = optional(
    uuid=st.uuids().map(str),
    serial=st.text("ABC123-", min_size=1, max_size=20),
    bootloader=st.one_of(
        st.fixed_dictionaries({"bios": optional(useSerial=st.booleans())}),
        st.fixed_dictionaries({"efi": optional(secureBoot=st.booleans(), persistent=st.just(False))}),
    ),
    kernelBoot=st.fixed_dictionaries(
        {"container": st.fixed_dictionaries({"image": st.just("k"), "kernelPath": st.just("/boot/vmlinuz")})},
        optional={"kernelArgs": st.text("abc=01 _.", max_size=40)},
    ),
)


@st.composite
def disks_and_volumes(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=5))
    boot_orders = draw(st.permutations(list(range(1, len(names) + 1))))
    disks, volumes = [], []
    for name, order in zip(names, boot_orders, strict=True):
        kind = draw(st.sampled_from(["disk", "cdrom", "lun"]))
        disk: dict[str, Any] = {"name": name}
        if kind == "disk":
            disk["disk"] = draw(optional(bus=st.sampled_from(["virtio", "sata", "scsi"]), readonly=BOOL))
        elif kind == "cdrom":
            disk["cdrom"] = draw(
                optional(bus=st.sampled_from(["sata", "scsi"]), tray=st.sampled_from(["open", "closed"]))
            )
        else:
            disk["lun"] = draw(optional(bus=st.just("scsi"), readonly=st.booleans()))
        if draw(st.booleans()):
            disk["bootOrder"] = order
        cache = draw(st.none() | st.sampled_from(["none", "writethrough", "writeback"]))
        if cache is not None:
            disk["cache"] = cache
            if cache == "none" and draw(st.booleans()):
                disk["io"] = "native"
        if draw(st.booleans()):
            disk["io"] = disk.get("io", "threads")
        disk.update(
            draw(
                optional(
                    serial=st.text("abcXYZ019-_", min_size=1, max_size=20),
                    shareable=st.booleans(),
                    dedicatedIOThread=st.booleans(),
                )
            )
        )
        disks.append(disk)
        if kind == "lun":
            volumes.append({"name": name, "dataVolume": {"name": f"dv-{name}"}})
        else:
            volumes.append({"name": name, **draw(st.sampled_from([
                {"containerDisk": {"image": "img"}},
                {"emptyDisk": {"capacity": "1Gi"}},
                {"persistentVolumeClaim": {"claimName": "pvc"}},
                {"ephemeral": {"persistentVolumeClaim": {"claimName": "pvc"}}},
                {"hostDisk": {"path": "/var/data/disk.img", "type": "DiskOrCreate", "capacity": "1Gi"}},
                {"cloudInitNoCloud": {"userData": "#cloud-config\n"}},
                {"cloudInitConfigDrive": {"userData": "#cloud-config\n"}},
                {"configMap": {"name": "cm"}},
                {"secret": {"secretName": "s"}},
                {"serviceAccount": {"serviceAccountName": "default"}},
            ]))})  # fmt: skip
    return disks, volumes


@st.composite
def vmi_objects(draw: st.DrawFn) -> dict[str, Any]:
    disks, volumes = draw(disks_and_volumes())
    boot_orders = {d["bootOrder"] for d in disks if "bootOrder" in d}
    devices: dict[str, Any] = {"disks": disks}
    devices.update(draw(optional(
        autoattachSerialConsole=st.booleans(), autoattachGraphicsDevice=st.booleans(),
        autoattachMemBalloon=st.booleans(), rng=st.just({}), blockMultiQueue=st.booleans(),
        networkInterfaceMultiqueue=st.booleans(),
        inputs=st.lists(st.fixed_dictionaries({"type": st.just("tablet")}, optional={
            "bus": st.sampled_from(["usb", "virtio"])}), max_size=2).map(
            lambda items: [{"name": f"input{i}", **item} for i, item in enumerate(items)]),
        watchdog=optional(action=st.sampled_from(["poweroff", "reset", "shutdown"])).map(
            lambda w: {"name": "wd", "i6300esb": w}),
    )))  # fmt: skip
    spec: dict[str, Any] = {"volumes": volumes}
    if draw(st.booleans()):
        iface: dict[str, Any] = {"name": "default", draw(st.sampled_from(["masquerade", "bridge"])): {}}
        iface.update(draw(optional(
            model=st.sampled_from(["virtio", "e1000", "e1000e", "rtl8139"]),
            macAddress=st.sampled_from(["02:00:00:00:00:01", "DE-AD-00-00-BE-AF"]),
            ports=st.lists(st.fixed_dictionaries({"port": st.integers(1, 65535)}), max_size=2),
        )))  # fmt: skip
        if draw(st.booleans()):
            iface["bootOrder"] = max(boot_orders, default=0) + 1
        devices["interfaces"] = [iface]
        spec["networks"] = [{"name": "default", "pod": {}}]
    domain: dict[str, Any] = {"devices": devices, "memory": {"guest": draw(MEMORY)}}
    domain.update(
        draw(
            optional(
                cpu=cpu,
                clock=clock,
                features=features,
                firmware=firmware,
                machine=optional(type=st.sampled_from(["q35", "pc", "pc-q35-7.2", "pc-i440fx-7.2"])),
            )
        )
    )
    spec.update(draw(optional(terminationGracePeriodSeconds=st.integers(0, 600), hostname=st.just("guest"))))
    efi_secure = "efi" in domain.get("firmware", {}).get("bootloader", {}) and domain["firmware"]["bootloader"][
        "efi"
    ].get("secureBoot", True)
    if efi_secure and domain.get("features", {}).get("smm") == {"enabled": False}:
        domain["features"]["smm"] = {}
    return {"metadata": {"name": "prop", "namespace": "ns"}, "spec": {"domain": domain, **spec}}  # fmt: skip


@SETTINGS
@given(obj=vmi_objects(), domain_type=st.sampled_from(["kvm", "qemu"]))
def test_every_consistent_spec_converts_to_schema_valid_xml(obj: dict[str, Any], domain_type: str) -> None:
    vm = VirtualMachineInstance.model_validate(obj)
    root = convert(context(vm, domain_type))  # validates against domain.rng
    assert len(root.findall("devices/disk")) == len(obj["spec"]["domain"]["devices"]["disks"])


@SETTINGS
@given(obj=vmi_objects(), data=st.data())
def test_any_accepted_spec_converts_or_names_the_field_at_fault(obj: dict[str, Any], data: st.DataObject) -> None:
    """Scramble consistent specs (a CD-ROM on virtio, io native without cache none, a LUN on a file...)."""
    devices = obj["spec"]["domain"]["devices"]
    for disk in devices["disks"]:
        if data.draw(st.booleans()):
            target = next(k for k in ("disk", "cdrom", "lun") if k in disk)
            disk[target]["bus"] = data.draw(st.sampled_from(["virtio", "sata", "scsi"]))
        if data.draw(st.booleans()):
            disk["io"] = "native"
    for volume in obj["spec"]["volumes"]:
        if data.draw(st.booleans()):
            volume.pop(next(k for k in volume if k != "name"))
            volume["emptyDisk"] = {"capacity": "1Gi"}
    try:
        vm = VirtualMachineInstance.model_validate(obj)
    except ValidationError:
        return  # the models refuse it; virt-api would too
    problem: InvalidSpecError | UnsupportedFieldError | None = None
    try:
        convert(context(vm, data.draw(st.sampled_from(["kvm", "qemu"]))))
    except (InvalidSpecError, UnsupportedFieldError) as exc:
        problem = exc
    assert problem is None or (problem.field or "").startswith("spec."), problem


@pytest.mark.parametrize(
    ("domain", "field"),
    [
        ({"memory": None, "devices": {}}, "spec.domain.memory.guest"),
        ({"memory": {"guest": "64Mi", "maxGuest": "1Gi"}, "devices": {}}, "spec.domain.memory.maxGuest"),
        ({"memory": {"guest": "64Mi"}, "machine": {"type": "virt"}, "devices": {}}, "spec.domain.machine.type"),
        ({"memory": {"guest": "64Mi"}, "devices": {"disks": [{"name": "nope"}]}}, "spec.domain.devices.disks[0].name"),
        (
            {"memory": {"guest": "64Mi"}, "firmware": {"bootloader": {"efi": {"persistent": True}}}, "devices": {}},
            "spec.domain.firmware.bootloader.efi.persistent",
        ),
    ],
)
def test_refusals_name_the_field(domain: dict[str, Any], field: str) -> None:
    vm = VirtualMachineInstance.model_validate({"metadata": {"name": "x"}, "spec": {"domain": domain}})
    with pytest.raises((InvalidSpecError, UnsupportedFieldError)) as exc:
        convert(context(vm))
    assert exc.value.field == field
