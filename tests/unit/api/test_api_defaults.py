"""The mutating webhook fills in KubeVirt's defaults as a JSON patch, and a second pass adds nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

import kubevirt_types as kt
from kubevirt_types.strategies import from_model
from virt_api.admission import defaults

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PATCHERS = {
    "VirtualMachine": defaults.vm_patch,
    "VirtualMachineInstance": defaults.vmi_patch,
    "VirtualMachineInstanceReplicaSet": defaults.vmirs_patch,
    "VirtualMachineInstanceMigration": defaults.migration_patch,
}


def vmi(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "t"}, "spec": spec}


def defaulted(obj: dict[str, Any], patcher: Any = defaults.vmi_patch) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patcher(obj))
    return result


MINIMAL = {
    "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}},
    "volumes": [{"name": "root", "containerDisk": {"image": "example.com/disk:1"}}],
}


def test_a_minimal_vmi_gets_kubevirts_defaults() -> None:
    spec = defaulted(vmi(copy.deepcopy(MINIMAL)))["spec"]
    domain = spec["domain"]
    assert domain["machine"] == {"type": "q35"}
    assert domain["cpu"] == {"sockets": 1, "cores": 1, "threads": 1}
    assert domain["memory"] == {"guest": "64Mi"}
    assert domain["devices"]["disks"] == [{"name": "root", "disk": {"bus": "virtio"}}]
    assert domain["devices"]["interfaces"] == [{"name": "default", "masquerade": {}}]
    assert domain["devices"]["autoattachSerialConsole"] is True
    assert spec["networks"] == [{"name": "default", "pod": {}}]
    assert spec["terminationGracePeriodSeconds"] == 180


def test_defaulting_twice_adds_nothing() -> None:
    once = defaulted(vmi(copy.deepcopy(MINIMAL)))
    assert defaults.vmi_patch(once) == []


def test_what_the_user_set_is_kept() -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["domain"]["machine"] = {"type": "pc-q35-7.2"}
    spec["domain"]["cpu"] = {"cores": 2}
    spec["terminationGracePeriodSeconds"] = 0
    spec["domain"]["devices"]["disks"] = [{"name": "root", "cdrom": {}}]
    out = defaulted(vmi(spec))["spec"]
    assert out["domain"]["machine"] == {"type": "pc-q35-7.2"}
    assert out["domain"]["cpu"] == {"cores": 2, "sockets": 1, "threads": 1}
    assert out["terminationGracePeriodSeconds"] == 0
    assert out["domain"]["devices"]["disks"] == [
        {"name": "root", "cdrom": {"bus": "sata", "readonly": True, "tray": "closed"}}
    ]


def test_guest_memory_and_memory_request_default_from_each_other() -> None:
    from_request = defaulted(vmi(copy.deepcopy(MINIMAL)))["spec"]["domain"]
    assert from_request["memory"]["guest"] == "64Mi"
    spec = copy.deepcopy(MINIMAL)
    spec["domain"]["resources"] = {}
    spec["domain"]["memory"] = {"guest": "96Mi"}
    from_guest = defaulted(vmi(spec))["spec"]["domain"]
    assert from_guest["resources"]["requests"] == {"memory": "96Mi"}
    spec = copy.deepcopy(MINIMAL)
    spec["domain"]["resources"] = {"limits": {"memory": "1Gi"}}
    from_limit = defaulted(vmi(spec))["spec"]["domain"]
    assert from_limit["resources"]["requests"] == {"memory": "1Gi"}
    assert from_limit["memory"]["guest"] == "1Gi"


def test_vcpus_come_from_the_cpu_limit_or_request_when_no_topology_is_given() -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["domain"]["resources"]["requests"]["cpu"] = "1500m"
    assert defaulted(vmi(spec))["spec"]["domain"]["cpu"] == {"sockets": 2, "cores": 1, "threads": 1}
    spec["domain"]["resources"]["limits"] = {"cpu": "3"}
    assert defaulted(vmi(spec))["spec"]["domain"]["cpu"]["sockets"] == 3


def test_no_default_network_when_the_pod_interface_is_not_wanted_or_networks_are_given() -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["domain"]["devices"]["autoattachPodInterface"] = False
    out = defaulted(vmi(spec))["spec"]
    assert "interfaces" not in out["domain"]["devices"]
    assert "networks" not in out
    spec = copy.deepcopy(MINIMAL)
    spec["domain"]["devices"]["interfaces"] = [{"name": "net", "bridge": {}}]
    spec["networks"] = [{"name": "net", "pod": {}}]
    out = defaulted(vmi(spec))["spec"]
    assert out["networks"] == [{"name": "net", "pod": {}}]
    assert out["domain"]["devices"]["interfaces"] == [{"name": "net", "bridge": {}}]


def test_a_volume_without_a_disk_gets_one_and_lun_and_inputs_and_watchdog_get_buses_and_actions() -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "c"}})
    spec["domain"]["devices"]["disks"] = [{"name": "data", "lun": {}}]
    spec["domain"]["devices"]["inputs"] = [{"name": "tablet", "type": "tablet"}]
    spec["domain"]["devices"]["watchdog"] = {"name": "w", "i6300esb": {}}
    devices = defaulted(vmi(spec))["spec"]["domain"]["devices"]
    assert devices["disks"] == [{"name": "data", "lun": {"bus": "scsi"}}, {"name": "root", "disk": {"bus": "virtio"}}]
    assert devices["inputs"] == [{"name": "tablet", "type": "tablet", "bus": "usb"}]
    assert devices["watchdog"] == {"name": "w", "i6300esb": {"action": "reset"}}


def test_a_vm_gets_halted_unless_it_says_otherwise_and_its_template_is_defaulted() -> None:
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm"},
        "spec": {"template": {"spec": copy.deepcopy(MINIMAL)}},
    }
    out = defaulted(vm, defaults.vm_patch)
    assert out["spec"]["runStrategy"] == "Halted"
    assert out["spec"]["template"]["spec"]["domain"]["machine"] == {"type": "q35"}
    assert defaults.vm_patch(out) == []
    running = copy.deepcopy(vm)
    running["spec"]["running"] = True
    assert "runStrategy" not in defaulted(running, defaults.vm_patch)["spec"]


def test_a_replica_set_gets_one_replica_and_a_migration_the_vmi_name_label() -> None:
    rs = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": copy.deepcopy(MINIMAL)}},
    }
    assert defaulted(rs, defaults.vmirs_patch)["spec"]["replicas"] == 1
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m", "labels": {"x/y": "z"}},
        "spec": {"vmiName": "vmi-a"},
    }
    out = defaulted(migration, defaults.migration_patch)
    assert out["metadata"]["labels"] == {"x/y": "z", "kubevirt.io/vmi-name": "vmi-a"}
    assert defaults.migration_patch(out) == []


def test_an_object_that_does_not_parse_is_left_alone_for_validation_to_refuse() -> None:
    assert defaults.vmi_patch(vmi({"domain": {"devices": {"disks": "nope"}}})) == []
    assert defaults.vm_patch({"spec": 3}) == []


def _examples() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}#{i}", doc)
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc and doc.get("kind") in PATCHERS
    ]


@pytest.mark.parametrize(("name", "obj"), _examples(), ids=[n for n, _ in _examples()])
def test_every_example_defaults_to_a_parseable_object_and_only_once(name: str, obj: dict[str, Any]) -> None:
    patcher = PATCHERS[obj["kind"]]
    once = defaulted(obj, patcher)
    assert all(op["op"] in ("add", "replace") for op in patcher(obj)), "defaults only fill in"
    assert patcher(once) == []


SLOW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@SLOW
@given(from_model(kt.VirtualMachineInstanceSpec))
def test_defaulting_any_spec_is_idempotent_and_keeps_it_parseable(spec: kt.VirtualMachineInstanceSpec) -> None:
    obj = vmi(kt.to_wire(spec))
    once = defaulted(obj)
    kt.VirtualMachineInstance.model_validate(once)
    assert defaults.vmi_patch(once) == []


def test_a_vmi_name_too_long_for_a_label_gets_no_label_rather_than_a_broken_patch() -> None:
    long_name = "v" * 100
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m"},
        "spec": {"vmiName": long_name},
    }
    assert defaults.migration_patch(migration) == []
