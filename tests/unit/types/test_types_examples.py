"""Every example in examples/ parses into the models and comes back out unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubevirt_types as kt
from kubevirt_types import KubeModel

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
KINDS: dict[str, type[KubeModel]] = {
    model.__name__: model
    for model in (
        kt.VirtualMachine,
        kt.VirtualMachineInstance,
        kt.VirtualMachineInstanceReplicaSet,
        kt.VirtualMachineInstanceMigration,
        kt.KubeVirt,
    )
}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}#{index}", document)
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for index, document in enumerate(yaml.safe_load_all(path.read_text()))
    ]


DOCUMENTS = _documents()


def _parse(document: dict[str, Any]) -> KubeModel:
    return KINDS[document["kind"]].model_validate(document)


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_example_round_trips_losslessly(name: str, document: dict[str, Any]) -> None:
    model = _parse(document)
    assert model.model_dump(by_alias=True, exclude_none=True) == document
    assert kt.to_wire(model) == json.loads(json.dumps(document))


def test_there_is_an_example_of_every_kind() -> None:
    assert {document["kind"] for _, document in DOCUMENTS} == set(KINDS)


def test_the_examples_use_every_volume_type() -> None:
    used: set[str] = set()
    for _, document in DOCUMENTS:
        model = _parse(document)
        spec = None
        if isinstance(model, kt.VirtualMachineInstance):
            spec = model.spec
        elif isinstance(model, kt.VirtualMachine | kt.VirtualMachineInstanceReplicaSet):
            spec = model.spec.template.spec
        for volume in (spec.volumes if spec else None) or []:
            used |= {name for name in volume.model_fields_set if name != "name"}
    every = {name for name in kt.Volume.model_fields if name != "name"}
    assert used == every, f"no example uses {sorted(every - used)}"


def test_a_vmi_spec_reads_with_python_names() -> None:
    vmi = kt.VirtualMachineInstance.model_validate(yaml.safe_load((EXAMPLES / "vmi-fedora.yaml").read_text()))
    domain = vmi.spec.domain
    assert domain.cpu is not None
    assert domain.cpu.cores == 2
    assert domain.memory is not None
    assert domain.memory.guest == kt.Quantity("1Gi")
    assert domain.firmware is not None
    assert domain.firmware.bootloader is not None
    assert domain.firmware.bootloader.efi is not None
    assert domain.firmware.bootloader.efi.secure_boot is False
    disks = domain.devices.disks or []
    assert [(d.name, d.disk.bus if d.disk else None, d.boot_order) for d in disks] == [
        ("containerdisk", kt.DiskBus.VIRTIO, 1),
        ("cloudinitdisk", kt.DiskBus.VIRTIO, None),
    ]
    interface = (domain.devices.interfaces or [])[0]
    assert interface.masquerade is not None
    assert interface.mac_address == "02:00:00:0a:0b:0c"
    assert [(p.port, p.protocol) for p in interface.ports or []] == [(80, None), (53, kt.PortProtocol.UDP)]
    assert domain.devices.watchdog is not None
    assert domain.devices.watchdog.i6300esb is not None
    assert vmi.spec.eviction_strategy is kt.EvictionStrategy.LIVE_MIGRATE_IF_POSSIBLE
    assert vmi.spec.readiness_probe is not None
    assert vmi.spec.readiness_probe.http_get is not None
    assert vmi.spec.readiness_probe.http_get.port == 80
