"""The validating webhook: each rule refuses with the field path the apiserver would name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kubevirt_types as kt
from kubevirt_types.strategies import from_model
from virt_api.admission import defaults, kinds
from virt_api.fielderrors import invalid_status

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def base_spec() -> dict[str, Any]:
    return {
        "domain": {
            "resources": {"requests": {"memory": "64Mi"}},
            "devices": {
                "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                "interfaces": [{"name": "default", "masquerade": {}}],
            },
        },
        "networks": [{"name": "default", "pod": {}}],
        "volumes": [{"name": "root", "containerDisk": {"image": "example.com/disk:1"}}],
    }


def vmi(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": spec,
    }


def errors_of(spec: dict[str, Any]) -> list[str]:
    return [str(e) for e in kinds.validate_vmi(vmi(spec), None).errors]


def paths_of(spec: dict[str, Any]) -> list[str]:
    return [str(e.path) for e in kinds.validate_vmi(vmi(spec), None).errors]


def test_a_sound_spec_is_accepted() -> None:
    assert errors_of(base_spec()) == []


def test_a_disk_must_name_an_existing_volume() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"][0]["name"] = "missing"
    assert errors_of(spec) == [
        'spec.domain.devices.disks[0].name: Not found: "missing": no volume named missing in spec.volumes'
    ]


def test_names_are_unique_and_safe_in_file_paths() -> None:
    spec = base_spec()
    spec["volumes"].append(copy.deepcopy(spec["volumes"][0]))
    (duplicated,) = errors_of(spec)
    assert duplicated.startswith("spec.volumes: Invalid value: duplicate name 'root'")
    spec = base_spec()
    spec["domain"]["devices"]["disks"].append({"name": "../etc", "disk": {}})
    spec["volumes"].append({"name": "../etc", "emptyDisk": {"capacity": "1Gi"}})
    found = errors_of(spec)
    assert found[0].startswith('spec.volumes[1].name: Invalid value: "../etc": a volume name must be a DNS label')
    assert found[1].startswith('spec.domain.devices.disks[1].name: Invalid value: "../etc": a disk name must be')


def test_a_boot_order_number_is_used_once_across_disks_and_interfaces() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"][0]["bootOrder"] = 1
    spec["domain"]["devices"]["interfaces"][0]["bootOrder"] = 1
    assert errors_of(spec) == [
        "spec.domain.devices.interfaces[0].bootOrder: Invalid value: 1: "
        "boot order 1 is already used by spec.domain.devices.disks[0]"
    ]


def test_interfaces_and_networks_match_both_ways() -> None:
    spec = base_spec()
    spec["networks"][0]["name"] = "other"
    assert paths_of(spec) == ["spec.domain.devices.interfaces[0].name", "spec.networks[0].name"]


def test_only_one_pod_network_and_ports_only_with_masquerade() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["interfaces"] = [
        {"name": "a", "bridge": {}, "ports": [{"port": 22}]},
        {"name": "b", "masquerade": {}},
    ]
    spec["networks"] = [{"name": "a", "pod": {}}, {"name": "b", "pod": {}}]
    found = errors_of(spec)
    assert (
        "spec.domain.devices.interfaces[0].ports: Forbidden: ports are forwarded by the masquerade binding only"
        in found
    )
    assert "spec.networks[1].pod: Forbidden: a VMI has at most one pod network" in found


def test_a_multicast_or_repeated_mac_is_refused() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["interfaces"][0]["macAddress"] = "01:00:5e:00:00:01"
    assert paths_of(spec) == ["spec.domain.devices.interfaces[0].macAddress"]


def test_memory_must_be_given_and_fit_the_limit() -> None:
    spec = base_spec()
    spec["domain"]["resources"] = {}
    assert errors_of(spec) == [
        "spec.domain.resources.requests.memory: Required value: "
        "set spec.domain.resources.requests.memory or spec.domain.memory.guest"
    ]
    spec["domain"]["memory"] = {"guest": "2Gi"}
    spec["domain"]["resources"] = {"limits": {"memory": "1Gi"}}
    assert errors_of(spec) == ['spec.domain.memory.guest: Invalid value: "2Gi": must not exceed the memory limit 1Gi']
    spec["domain"]["memory"] = {"guest": "512"}
    assert paths_of(spec) == ["spec.domain.memory.guest"]


def test_requests_must_not_exceed_limits_and_vcpus_are_bounded() -> None:
    spec = base_spec()
    spec["domain"]["resources"] = {"requests": {"memory": "64Mi", "cpu": "4"}, "limits": {"cpu": "2"}}
    spec["domain"]["cpu"] = {"sockets": 16, "cores": 16, "threads": 2}
    assert paths_of(spec) == ["spec.domain.cpu", "spec.domain.resources.requests.cpu"]


def test_io_native_needs_cache_none() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"][0].update(io="native", cache="writeback")
    assert paths_of(spec) == ["spec.domain.devices.disks[0].io"]


def test_host_disk_paths_are_absolute_and_create_needs_a_size() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"].append({"name": "data", "disk": {}})
    spec["volumes"].append({"name": "data", "hostDisk": {"path": "/var/../etc/shadow", "type": "DiskOrCreate"}})
    assert paths_of(spec) == ["spec.volumes[1].hostDisk.path", "spec.volumes[1].hostDisk.capacity"]


def test_one_cloud_init_volume_of_each_kind_and_bounded_user_data() -> None:
    spec = base_spec()
    for name in ("ci1", "ci2"):
        spec["domain"]["devices"]["disks"].append({"name": name, "disk": {}})
        spec["volumes"].append({"name": name, "cloudInitNoCloud": {"userData": "x" * 20000}})
    assert paths_of(spec) == [
        "spec.volumes[1].cloudInitNoCloud.userData",
        "spec.volumes[2].cloudInitNoCloud.userData",
        "spec.volumes[2].cloudInitNoCloud",
    ]


def test_a_lun_needs_a_claim_and_a_cdrom_cannot_be_virtio() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"] = [{"name": "root", "lun": {}}, {"name": "cd", "cdrom": {"bus": "virtio"}}]
    spec["volumes"].append({"name": "cd", "containerDisk": {"image": "x"}})
    assert paths_of(spec) == ["spec.domain.devices.disks[0].lun", "spec.domain.devices.disks[1].cdrom.bus"]


def test_secure_boot_needs_smm_and_kernel_boot_needs_a_kernel() -> None:
    spec = base_spec()
    spec["domain"]["firmware"] = {
        "bootloader": {"efi": {}},
        "kernelBoot": {"container": {"image": "k"}},
        "uuid": "not-a-uuid",
    }
    spec["domain"]["features"] = {"smm": {"enabled": False}}
    assert paths_of(spec) == [
        "spec.domain.firmware.uuid",
        "spec.domain.firmware.bootloader.efi.secureBoot",
        "spec.domain.firmware.kernelBoot.container.kernelPath",
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s["domain"].update(cpu={"maxSockets": 4}), "spec.domain.cpu.maxSockets"),
        (lambda s: s["domain"].update(memory={"maxGuest": "1Gi", "guest": "64Mi"}), "spec.domain.memory.maxGuest"),
        (lambda s: s["domain"].update(features={"hyperv": {"relaxed": {}}}), "spec.domain.features.hyperv"),
        (
            lambda s: s["networks"].__setitem__(0, {"name": "default", "multus": {"networkName": "n"}}),
            "spec.networks[0].multus",
        ),
        (
            lambda s: s["domain"].update(firmware={"bootloader": {"efi": {"persistent": True}}}),
            "spec.domain.firmware.bootloader.efi.persistent",
        ),
    ],
)
def test_an_unimplemented_feature_is_refused_by_name(change: Any, field: str) -> None:
    spec = base_spec()
    change(spec)
    found = errors_of(spec)
    assert f"{field}: Forbidden: field {field} is not supported by podvirt" in "\n".join(found)


def test_a_field_podvirt_does_not_know_is_refused_by_name_when_it_gets_through() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["gpus"] = [{"name": "gpu", "deviceName": "nvidia.com/A100"}]
    assert errors_of(spec) == [
        "spec.domain.devices.gpus: Forbidden: field spec.domain.devices.gpus is not supported by podvirt "
        "(unknown to podvirt's kubevirt.io/v1 API)"
    ]


def test_a_wrong_enum_value_lists_the_supported_ones() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"][0]["disk"]["bus"] = "ide"
    (error,) = errors_of(spec)
    assert error.startswith('spec.domain.devices.disks[0].disk.bus: Unsupported value: "ide": supported values: ')


def test_a_vmi_spec_cannot_change_except_the_grace_period_by_virt_api() -> None:
    old = vmi(base_spec())
    new = copy.deepcopy(old)
    new["spec"]["domain"]["devices"]["disks"][0]["disk"]["bus"] = "sata"
    (error,) = kinds.validate_vmi(new, old).errors
    assert str(error.path) == "spec.domain.devices.disks[0].disk.bus"
    graced = copy.deepcopy(old)
    graced["spec"]["terminationGracePeriodSeconds"] = 0
    assert kinds.validate_vmi(graced, old, trusted_user=True).allowed
    assert not kinds.validate_vmi(graced, old, trusted_user=False).allowed
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"a": "b"}
    assert kinds.validate_vmi(relabelled, old).allowed


def vm(spec: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": "ns"},
        "spec": {"template": {"spec": spec}, **top},
    }


def test_vm_rules_use_the_template_path_and_running_is_a_warning() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"][0]["name"] = "x"
    verdict = kinds.validate_vm(vm(spec, running=True))
    assert [str(e.path) for e in verdict.errors] == ["spec.template.spec.domain.devices.disks[0].name"]
    assert verdict.warnings and "spec.running is deprecated" in verdict.warnings[0]
    both = kinds.validate_vm(vm(base_spec(), running=True, runStrategy="Always"))
    assert [str(e.path) for e in both.errors] == ["spec"]
    assert "mutually exclusive" in str(both.errors[0])


def test_a_vm_needs_a_template_spec_and_referenced_data_volume_templates() -> None:
    no_spec = vm(base_spec())
    del no_spec["spec"]["template"]["spec"]
    assert [str(e) for e in kinds.validate_vm(no_spec).errors] == [
        "spec.template.spec: Required value: the VMI this VM runs"
    ]
    with_dv = vm(base_spec(), dataVolumeTemplates=[{"metadata": {"name": "unused"}, "spec": {"storage": {}}}])
    assert [str(e.path) for e in kinds.validate_vm(with_dv).errors] == ["spec.dataVolumeTemplates[0].metadata.name"]


def test_a_replica_set_selector_must_match_its_template() -> None:
    rs = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "template": {"metadata": {"labels": {"app": "a", "tier": "x"}}, "spec": base_spec()},
        },
    }
    assert kinds.validate_replica_set(rs).allowed
    rs["spec"]["template"]["metadata"]["labels"] = {"app": "b"}
    assert [str(e.path) for e in kinds.validate_replica_set(rs).errors] == ["spec.selector"]
    rs["spec"]["selector"] = {}
    (empty,) = kinds.validate_replica_set(rs).errors
    assert str(empty).startswith("spec.selector: Required value")


def migration(vmi_name: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"vmiName": vmi_name},
    }


def running_vmi(migratable: str = "True", phase: str = "Running") -> dict[str, Any]:
    obj = vmi(base_spec())
    obj["status"] = {
        "phase": phase,
        "conditions": [{"type": "LiveMigratable", "status": migratable, "reason": "DisksNotLiveMigratable"}],
    }
    return obj


def test_a_migration_needs_a_running_live_migratable_vmi_not_already_migrating() -> None:
    assert kinds.validate_migration(migration(), None, vmi=running_vmi()).allowed
    (missing,) = kinds.validate_migration(migration(), None, vmi=None).errors
    assert str(missing) == 'spec.vmiName: Not found: "a": no VirtualMachineInstance a in namespace ns'
    (stopped,) = kinds.validate_migration(migration(), None, vmi=running_vmi(phase="Scheduling")).errors
    assert "only a running VMI can migrate; this one is Scheduling" in str(stopped)
    (pinned,) = kinds.validate_migration(migration(), None, vmi=running_vmi("False")).errors
    assert "not live-migratable" in str(pinned) and "DisksNotLiveMigratable" in str(pinned)
    (busy,) = kinds.validate_migration(migration(), None, vmi=running_vmi(), in_flight=["m0"]).errors
    assert "already migrating (m0)" in str(busy)
    changed = migration("b")
    assert [str(e.path) for e in kinds.validate_migration(changed, migration(), vmi=None).errors] == ["spec.vmiName"]


def test_one_kubevirt_per_cluster_and_no_uninstall_under_running_vms() -> None:
    kv = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kv", "namespace": "kubevirt"}}
    assert kinds.validate_kubevirt(kv, None).allowed
    (second,) = kinds.validate_kubevirt(kv, None, others=["kubevirt/kubevirt"]).errors
    assert str(second.path) == "metadata.name"
    assert not kinds.validate_kubevirt_delete(kv, workloads=2).allowed
    kv["spec"] = {"uninstallStrategy": "RemoveWorkloads"}
    assert kinds.validate_kubevirt_delete(kv, workloads=2).allowed


def test_the_status_reads_like_the_apiservers() -> None:
    spec = base_spec()
    spec["domain"]["devices"]["disks"][0]["name"] = "x"
    status = invalid_status("VirtualMachineInstance", "t", kinds.validate_vmi(vmi(spec), None).errors)
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        'VirtualMachineInstance.kubevirt.io "t" is invalid: '
        'spec.domain.devices.disks[0].name: Not found: "x": no volume named x in spec.volumes'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueNotFound",
            "message": 'Not found: "x": no volume named x in spec.volumes',
            "field": "spec.domain.devices.disks[0].name",
        }
    ]


def _examples() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}#{i}", doc)
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc and doc.get("kind") in ("VirtualMachine", "VirtualMachineInstance", "VirtualMachineInstanceReplicaSet")
    ]


@pytest.mark.parametrize(("name", "obj"), _examples(), ids=[n for n, _ in _examples()])
def test_every_example_is_accepted_once_defaulted(name: str, obj: dict[str, Any]) -> None:
    patcher = {"VirtualMachine": defaults.vm_patch, "VirtualMachineInstance": defaults.vmi_patch}.get(
        obj["kind"], defaults.vmirs_patch
    )
    validate = {"VirtualMachine": kinds.validate_vm, "VirtualMachineInstance": kinds.validate_vmi}.get(
        obj["kind"], kinds.validate_replica_set
    )
    verdict = validate(jsonpatch.apply_patch(obj, patcher(obj)), None)
    assert verdict.errors == []


SLOW = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@SLOW
@given(from_model(kt.VirtualMachineInstanceSpec))
def test_any_typed_spec_gets_a_verdict_never_an_exception(spec: kt.VirtualMachineInstanceSpec) -> None:
    obj = vmi(kt.to_wire(spec))
    verdict = kinds.validate_vmi(jsonpatch.apply_patch(obj, defaults.vmi_patch(obj)), None)
    json.dumps(invalid_status("VirtualMachineInstance", "t", verdict.errors))


@SLOW
@given(JSON, JSON)
def test_any_json_at_all_gets_a_verdict_never_an_exception(spec: Any, domain: Any) -> None:
    for obj in (vmi(spec), vmi({"domain": domain}), vm(spec), vm({"domain": domain})):
        for patcher in (defaults.vmi_patch, defaults.vm_patch, defaults.vmirs_patch, defaults.migration_patch):
            patcher(obj)
        kinds.validate_vmi(obj, None)
        kinds.validate_vm(obj)
        kinds.validate_replica_set(obj)
        kinds.validate_migration(obj, None, vmi=obj)
        kinds.validate_kubevirt(obj, None)
