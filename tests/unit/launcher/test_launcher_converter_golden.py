"""Golden XML per configurator: each configurator alone, on small specs, against a file under golden/.

Regenerate after an intended change with ``PODVIRT_UPDATE_GOLDEN=1 pytest tests/unit/launcher`` and review
the diff. Whole-domain goldens at the end run the full chain and libvirt's RelaxNG schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from launcher_fixtures import context, vmi
from lxml import etree

from virt_launcher.converter import CONFIGURATORS, convert, new_domain
from virt_launcher.converter.xml import to_string

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("PODVIRT_UPDATE_GOLDEN") == "1"
CONFIGURATOR = dict(CONFIGURATORS)

KERNEL_BOOT = {"kernelArgs": "console=ttyS0", "container": {"image": "k", "kernelPath": "/boot/vmlinuz"}}

# (configurator, case, domain spec, other spec fields, domain type)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = [
    ("identity", "default", {}, {}, "qemu"),
    ("identity", "firmware-uuid-serial", {"firmware": {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223",
                                                        "serial": "SN-1"}}, {}, "qemu"),
    ("machine", "default-q35", {}, {}, "qemu"),
    ("machine", "pc-kvm", {"machine": {"type": "pc-i440fx-7.2"}}, {}, "kvm"),
    ("cpu", "default-emulated", {}, {}, "qemu"),
    ("cpu", "default-kvm-host-model", {}, {}, "kvm"),
    ("cpu", "topology-and-features", {"cpu": {"sockets": 2, "cores": 2, "threads": 1, "model": "Haswell",
                                              "features": [{"name": "vmx", "policy": "disable"}, {"name": "pcid"}]}},
     {}, "kvm"),
    ("cpu", "max-sockets-hotplug", {"cpu": {"sockets": 1, "cores": 2, "maxSockets": 4}}, {}, "qemu"),
    ("cpu", "from-cpu-request", {"resources": {"requests": {"cpu": "1500m", "memory": "64Mi"}}}, {}, "qemu"),
    ("memory", "guest", {"memory": {"guest": "1Gi"}}, {}, "qemu"),
    ("memory", "from-request-no-balloon", {"memory": None, "resources": {"requests": {"memory": "100M"}},
                                           "devices": {"autoattachMemBalloon": False}}, {}, "qemu"),
    ("firmware", "bios-default", {}, {}, "qemu"),
    ("firmware", "bios-serial", {"firmware": {"bootloader": {"bios": {"useSerial": True}}}}, {}, "qemu"),
    ("firmware", "efi-secure-boot", {"firmware": {"bootloader": {"efi": {}}}}, {}, "qemu"),
    ("firmware", "efi-insecure", {"firmware": {"bootloader": {"efi": {"secureBoot": False}}}}, {}, "qemu"),
    ("firmware", "kernel-boot", {"firmware": {"kernelBoot": KERNEL_BOOT}}, {}, "qemu"),
    ("clock", "default-utc", {}, {}, "qemu"),
    ("clock", "utc-offset-timers", {"clock": {"utc": {"offsetSeconds": 3600}, "timer": {
        "hpet": {"present": False}, "pit": {"tickPolicy": "delay"}, "rtc": {"tickPolicy": "catchup", "track": "guest"},
        "kvm": {"present": True}}}}, {}, "kvm"),
    ("clock", "timezone-emulated-drops-kvmclock", {"clock": {"timezone": "Europe/Berlin",
                                                             "timer": {"kvm": {}}}}, {}, "qemu"),
    ("features", "default", {}, {}, "qemu"),
    ("features", "windows-like", {"features": {"acpi": {}, "apic": {"endOfInterrupt": True}, "smm": {},
        "kvm": {"hidden": True}, "pvspinlock": {"enabled": False},
        "hyperv": {"relaxed": {}, "vapic": {}, "spinlocks": {"spinlocks": 8191}, "vpindex": {}, "synic": {},
                   "synictimer": {"direct": {}}, "vendorid": {"vendorid": "podvirt"}, "frequencies": {},
                   "reenlightenment": {"enabled": False}, "tlbflush": {}, "ipi": {}}}}, {}, "kvm"),
    ("features", "no-acpi-no-apic", {"features": {"acpi": {"enabled": False}, "apic": {"enabled": False}}}, {},
     "qemu"),
    ("disks", "kinds-and-buses", {"devices": {"disks": [
        {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1, "cache": "none", "io": "native"},
        {"name": "data", "disk": {"bus": "sata", "readonly": True}, "serial": "DATA-1"},
        {"name": "scratch", "disk": {"bus": "scsi"}, "shareable": True},
        {"name": "seed", "cdrom": {"bus": "sata", "tray": "closed"}},
        {"name": "raw", "lun": {}},
    ]}}, {"volumes": [
        {"name": "root", "containerDisk": {"image": "r"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
        {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
        {"name": "seed", "cloudInitNoCloud": {"userData": "x"}},
        {"name": "raw", "dataVolume": {"name": "dv"}},
    ]}, "qemu"),
    ("disks", "iothreads-queues-pci", {"cpu": {"cores": 2}, "devices": {"blockMultiQueue": True, "disks": [
        {"name": "a", "dedicatedIOThread": True, "disk": {"pciAddress": "0000:05:00.0"}},
        {"name": "b", "dedicatedIOThread": True},
    ]}}, {"volumes": [{"name": "a", "emptyDisk": {"capacity": "1Gi"}},
                      {"name": "b", "emptyDisk": {"capacity": "2Gi"}}]},
     "kvm"),
    ("interfaces", "tap-with-mac", {"devices": {"interfaces": [
        {"name": "default", "masquerade": {}, "macAddress": "DE-AD-00-00-BE-AF", "ports": [{"port": 22}]}]}},
     {"networks": [{"name": "default", "pod": {}}], "_tap": True}, "qemu"),
    ("interfaces", "user-e1000-boot", {"devices": {"interfaces": [
        {"name": "default", "masquerade": {}, "model": "e1000", "bootOrder": 2}]}},
     {"networks": [{"name": "default", "pod": {}}]}, "qemu"),
    ("interfaces", "multiqueue-kvm", {"cpu": {"cores": 4}, "devices": {"networkInterfaceMultiqueue": True,
        "interfaces": [{"name": "default", "bridge": {}}]}}, {"networks": [{"name": "default", "pod": {}}],
                                                              "_tap": True}, "kvm"),
    ("serial", "default", {}, {}, "qemu"),
    ("serial", "disabled", {"devices": {"autoattachSerialConsole": False}}, {}, "qemu"),
    ("graphics", "default-vnc", {}, {}, "qemu"),
    ("graphics", "disabled", {"devices": {"autoattachGraphicsDevice": False}}, {}, "qemu"),
    ("rng", "virtio", {"devices": {"rng": {}}}, {}, "qemu"),
    ("inputs", "none", {}, {}, "qemu"),
    ("inputs", "tablets", {"devices": {"inputs": [{"name": "t1", "type": "tablet", "bus": "usb"},
                                                  {"name": "t2", "type": "tablet", "bus": "virtio"}]}}, {}, "qemu"),
    ("watchdog", "poweroff", {"devices": {"watchdog": {"name": "w", "i6300esb": {"action": "poweroff"}}}}, {}, "qemu"),
    ("watchdog", "default-reset", {"devices": {"watchdog": {"name": "w", "i6300esb": {}}}}, {}, "qemu"),
    ("agent", "channel", {}, {}, "qemu"),
]  # fmt: skip


IDS = [f"{c[0]}-{c[1]}" for c in CASES]


def check_golden(path: Path, text: str) -> None:
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote missing golden file {path.relative_to(GOLDEN)}; review and commit it")
    assert text == path.read_text(), f"{path.name} differs; PODVIRT_UPDATE_GOLDEN=1 regenerates it"


def build(domain: dict[str, Any], spec: dict[str, Any], domain_type: str) -> Any:
    spec = dict(spec)
    tap = spec.pop("_tap", False)
    return context(vmi(domain, **spec), domain_type, tap=tap)


def test_every_configurator_has_a_golden_case() -> None:
    assert {name for name, *_ in CASES} == set(CONFIGURATOR)


@pytest.mark.parametrize(("configurator", "case", "domain", "spec", "domain_type"), CASES, ids=IDS)
def test_configurator_output_matches_golden(
    configurator: str, case: str, domain: dict[str, Any], spec: dict[str, Any], domain_type: str
) -> None:
    ctx = build(dict(domain), spec, domain_type)
    root = new_domain()
    CONFIGURATOR[configurator](root, ctx)
    check_golden(GOLDEN / configurator / f"{case}.xml", to_string(root))


@pytest.mark.parametrize(("configurator", "case", "domain", "spec", "domain_type"), CASES, ids=IDS)
def test_whole_domain_of_every_case_validates_against_libvirt_schema(
    configurator: str, case: str, domain: dict[str, Any], spec: dict[str, Any], domain_type: str
) -> None:
    convert(build(dict(domain), spec, domain_type))  # raises SchemaError when libvirt's schema disagrees


def test_full_domain_golden() -> None:
    domain = {
        "cpu": {"cores": 2},
        "memory": {"guest": "128Mi"},
        "firmware": {"kernelBoot": KERNEL_BOOT},
        "devices": {
            "disks": [{"name": "root", "disk": {}, "bootOrder": 1}, {"name": "seed", "cdrom": {}}],
            "interfaces": [{"name": "default", "masquerade": {}}],
            "rng": {},
        },
    }
    spec = {
        "volumes": [
            {"name": "root", "containerDisk": {"image": "tiny"}},
            {"name": "seed", "cloudInitNoCloud": {"userData": "#!/bin/sh\n"}},
        ],
        "networks": [{"name": "default", "pod": {}}],
    }
    ctx = build(domain, spec, "qemu")
    root = convert(ctx)
    assert root[-1].tag == "devices", "devices come last, where readers look for them"
    check_golden(GOLDEN / "full" / "kernel-boot-container-disk.xml", to_string(root))
    assert ctx.warnings == []


def test_configurators_never_emit_text_built_markup() -> None:
    """Element text is data, never XML: a hostile name stays a name."""
    ctx = build({"firmware": {"serial": "<evil/>&"}}, {}, "qemu")
    root = convert(ctx)
    entry = root.find("sysinfo/system/entry[@name='serial']")
    assert entry is not None and entry.text == "<evil/>&"
    assert b"<evil/>" not in etree.tostring(root)
