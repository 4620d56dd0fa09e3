"""The models accept KubeVirt's shapes, refuse what KubeVirt (or podvirt) does not support, and say which field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

import kubevirt_types as kt

pytestmark = pytest.mark.unit


def _vm(**spec: Any) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": {"domain": {"devices": {}}}}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "t"},
        "spec": {"template": template, **spec},
    }


def _vmi_spec(**fields: Any) -> dict[str, Any]:
    return {"domain": {"devices": {}}, **fields}


def _error_locations(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in error.errors()]


def test_an_unknown_field_is_refused_by_its_path() -> None:
    spec = _vmi_spec(domain={"devices": {"interfaces": [{"name": "default", "sriov": {}}]}, "chassis": {}})
    with pytest.raises(ValidationError) as caught:
        kt.VirtualMachineInstanceSpec.model_validate(spec)
    assert sorted(_error_locations(caught.value)) == ["domain.chassis", "domain.devices.interfaces.0.sriov"]


def test_running_and_run_strategy_are_exclusive() -> None:
    with pytest.raises(ValidationError, match=r"spec\.running and spec\.runStrategy are mutually exclusive"):
        kt.VirtualMachine.model_validate(_vm(running=True, runStrategy="Always"))
    assert kt.VirtualMachine.model_validate(_vm(running=False)).spec.running is False
    assert kt.VirtualMachine.model_validate(_vm(runStrategy="Manual")).spec.run_strategy is kt.RunStrategy.MANUAL


def test_a_disk_is_at_most_one_of_disk_cdrom_lun() -> None:
    with pytest.raises(ValidationError, match="at most one of disk, cdrom, lun may be set") as caught:
        kt.Disk.model_validate({"name": "a", "disk": {}, "lun": {}})
    assert caught.value.error_count() == 1
    assert kt.Disk.model_validate({"name": "a"}).disk is None  # KubeVirt defaults it to a virtio disk


@pytest.mark.parametrize(
    "volume",
    [{"name": "v"}, {"name": "v", "emptyDisk": {"capacity": "1Gi"}, "containerDisk": {"image": "x"}}],
)
def test_a_volume_has_exactly_one_source(volume: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"exactly one of containerDisk, cloudInitNoCloud, .* must be set"):
        kt.Volume.model_validate(volume)


def test_a_network_is_pod_or_multus() -> None:
    with pytest.raises(ValidationError, match="exactly one of pod, multus must be set"):
        kt.Network.model_validate({"name": "n"})
    assert kt.Network.model_validate({"name": "n", "multus": {"networkName": "ns/br"}}).multus is not None


def test_an_interface_has_at_most_one_binding() -> None:
    with pytest.raises(ValidationError, match="at most one of masquerade, bridge may be set"):
        kt.Interface.model_validate({"name": "default", "masquerade": {}, "bridge": {}})


def test_a_probe_has_exactly_one_action() -> None:
    with pytest.raises(ValidationError, match="exactly one of exec, httpGet, tcpSocket, guestAgentPing"):
        kt.Probe.model_validate({"periodSeconds": 5})
    probe = kt.Probe.model_validate({"exec": {"command": ["true"]}})
    assert probe.exec_ is not None
    assert kt.to_wire(probe) == {"exec": {"command": ["true"]}}


def test_clock_is_utc_or_timezone() -> None:
    with pytest.raises(ValidationError, match="set utc or timezone, not both"):
        kt.Clock.model_validate({"utc": {}, "timezone": "Europe/Berlin"})


@pytest.mark.parametrize("field", ["disks", "interfaces"])
def test_device_names_are_unique(field: str) -> None:
    item = {"name": "same", "masquerade": {}} if field == "interfaces" else {"name": "same"}
    with pytest.raises(ValidationError, match="duplicate name 'same'") as caught:
        kt.Devices.model_validate({field: [item, item]})
    assert _error_locations(caught.value) == [field]


def test_volume_and_network_names_are_unique() -> None:
    volume = {"name": "v", "emptyDisk": {"capacity": "1Gi"}}
    with pytest.raises(ValidationError, match="duplicate name 'v'"):
        kt.VirtualMachineInstanceSpec.model_validate(_vmi_spec(volumes=[volume, volume]))
    network = {"name": "n", "pod": {}}
    with pytest.raises(ValidationError, match="duplicate name 'n'"):
        kt.VirtualMachineInstanceSpec.model_validate(_vmi_spec(networks=[network, network]))


def test_enums_refuse_unsupported_values() -> None:
    with pytest.raises(ValidationError) as caught:
        kt.Disk.model_validate({"name": "a", "disk": {"bus": "usb"}})
    assert _error_locations(caught.value) == ["disk.bus"]
    with pytest.raises(ValidationError):
        kt.VirtualMachine.model_validate(_vm(runStrategy="Sometimes"))


def test_field_constraints_match_kubevirt() -> None:
    with pytest.raises(ValidationError):
        kt.CPU.model_validate({"cores": 0})
    with pytest.raises(ValidationError):
        kt.Interface.model_validate({"name": "i", "macAddress": "not-a-mac"})
    with pytest.raises(ValidationError):
        kt.Port.model_validate({"port": 70000})


def test_python_names_and_wire_names_both_work() -> None:
    by_python = kt.PersistentVolumeClaimSource(claim_name="root", read_only=True)
    by_wire = kt.PersistentVolumeClaimSource.model_validate({"claimName": "root", "readOnly": True})
    assert by_python == by_wire
    assert kt.to_wire(by_python) == {"claimName": "root", "readOnly": True}


def test_irregular_wire_names_follow_kubevirt() -> None:
    status = kt.VirtualMachineInstanceStatus.model_validate(
        {"guestOSInfo": {"id": "fedora"}, "currentCPUTopology": {"cores": 2}, "interfaces": [{"ipAddress": "10.0.0.5"}]}
    )
    assert status.guest_os_info is not None
    assert status.guest_os_info.id == "fedora"
    assert set(kt.to_wire(status)) == {"guestOSInfo", "currentCPUTopology", "interfaces"}
    assert kt.to_wire(kt.Disk(name="d", dedicated_io_thread=True)) == {"name": "d", "dedicatedIOThread": True}
    assert kt.to_wire(kt.PodNetwork(vm_network_cidr="10.1.0.0/24")) == {"vmNetworkCIDR": "10.1.0.0/24"}
    start_failure = kt.VirtualMachineStartFailure(last_failed_vmi_uid="u")
    assert kt.to_wire(start_failure) == {"lastFailedVMIUID": "u"}


def test_a_vmi_status_as_podvirt_writes_it() -> None:
    wire = {
        "phase": "Running",
        "nodeName": "node-1",
        "phaseTransitionTimestamps": [
            {"phase": "Pending", "phaseTransitionTimestamp": "2026-11-25T10:00:00Z"},
            {"phase": "Running", "phaseTransitionTimestamp": "2026-11-25T10:00:04Z"},
        ],
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-25T10:00:04Z"},
            {"type": "LiveMigratable", "status": "False", "reason": "InterfaceNotLiveMigratable"},
        ],
        "interfaces": [
            {"name": "default", "ipAddress": "10.244.1.7", "ipAddresses": ["10.244.1.7"], "mac": "02:00:00:00:00:01"}
        ],
        "activePods": {"5c3e-uid": "node-1"},
        "launcherContainerImageVersion": "podvirt/virt-launcher:0.1.0",
        "migrationState": {"sourceNode": "node-1", "targetNode": "node-2", "completed": False},
        "guestOSInfo": {"name": "Debian", "kernelRelease": "6.1.0-28-amd64"},
    }
    status = kt.VirtualMachineInstanceStatus.model_validate(wire)
    assert status.phase is kt.VirtualMachineInstancePhase.RUNNING
    ready = [c for c in status.conditions or [] if c.type is kt.VirtualMachineInstanceConditionType.READY]
    assert ready[0].status is kt.ConditionStatus.TRUE
    assert [t.phase_transition_timestamp.second for t in status.phase_transition_timestamps or []] == [0, 4]
    assert kt.to_wire(status) == wire


def test_a_vm_status_with_requests_and_start_failure() -> None:
    wire = {
        "printableStatus": "CrashLoopBackOff",
        "created": False,
        "ready": False,
        "stateChangeRequests": [{"action": "Stop", "uid": "old-vmi"}, {"action": "Start", "data": {"paused": "true"}}],
        "startFailure": {
            "consecutiveFailCount": 3,
            "lastFailedVMIUID": "u1",
            "retryAfterTimestamp": "2026-11-25T10:05:00Z",
        },
        "conditions": [{"type": "Failure", "status": "True", "message": "launcher exited"}],
    }
    status = kt.VirtualMachineStatus.model_validate(wire)
    assert status.printable_status is kt.VirtualMachinePrintableStatus.CRASH_LOOP_BACK_OFF
    assert [r.action for r in status.state_change_requests or []] == [
        kt.StateChangeAction.STOP,
        kt.StateChangeAction.START,
    ]
    assert status.start_failure is not None
    assert status.start_failure.consecutive_fail_count == 3
    assert kt.to_wire(status) == wire


def test_replica_set_migration_and_kubevirt_statuses() -> None:
    rs = kt.VirtualMachineInstanceReplicaSetStatus.model_validate(
        {"replicas": 3, "readyReplicas": 2, "labelSelector": "app=x"}
    )
    assert (rs.replicas, rs.ready_replicas, rs.label_selector) == (3, 2, "app=x")
    kv = kt.KubeVirtStatus.model_validate(
        {
            "phase": "Deployed",
            "observedKubeVirtVersion": "0.1.0",
            "conditions": [{"type": "Available", "status": "True"}],
        }
    )
    assert kv.phase is kt.KubeVirtPhase.DEPLOYED
    assert kv.observed_kube_virt_version == "0.1.0"
    assert kv.conditions is not None
    assert kv.conditions[0].type is kt.KubeVirtConditionType.AVAILABLE
    vmim = kt.VirtualMachineInstanceMigrationStatus.model_validate({"phase": "TargetReady"})
    assert vmim.phase is kt.MigrationPhase.TARGET_READY


def test_server_managed_metadata_is_kept() -> None:
    metadata = {
        "name": "vm",
        "namespace": "default",
        "uid": "1234",
        "resourceVersion": "42",
        "creationTimestamp": "2026-11-25T10:00:00Z",
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        "ownerReferences": [
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm", "uid": "u", "controller": True}
        ],
    }
    parsed = kt.ObjectMeta.model_validate(metadata)
    assert parsed.owner_references is not None
    assert parsed.owner_references[0].controller is True
    assert kt.to_wire(parsed) == metadata


def test_generated_kubevirt_yaml_with_null_creation_timestamp_is_accepted() -> None:
    document = _vm()
    document["spec"]["template"]["metadata"] = {"creationTimestamp": None, "labels": {"a": "b"}}
    vm = kt.VirtualMachine.model_validate(document)
    assert vm.spec.template.metadata is not None
    assert vm.spec.template.metadata.labels == {"a": "b"}


def test_resources_are_quantities() -> None:
    resources = kt.ResourceRequirements.model_validate({"requests": {"memory": "64Mi", "cpu": "250m"}})
    requests = resources.requests or {}
    assert requests["memory"].as_int() == 64 * 1024 * 1024
    assert requests["cpu"].as_milli() == 250
    assert requests["memory"] > kt.Quantity("64M")


def test_a_vm_can_be_built_in_python() -> None:
    vm = kt.VirtualMachine(
        metadata=kt.ObjectMeta(name="tiny"),
        spec=kt.VirtualMachineSpec(
            run_strategy=kt.RunStrategy.ALWAYS,
            template=kt.VirtualMachineInstanceTemplateSpec(
                spec=kt.VirtualMachineInstanceSpec(
                    domain=kt.DomainSpec(
                        memory=kt.Memory(guest=kt.Quantity("96Mi")),
                        devices=kt.Devices(disks=[kt.Disk(name="root", disk=kt.DiskTarget(bus=kt.DiskBus.VIRTIO))]),
                    ),
                    volumes=[kt.Volume(name="root", container_disk=kt.ContainerDiskSource(image="guest:1"))],
                )
            ),
        ),
    )
    assert kt.to_wire(vm) == {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "tiny"},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {
                        "memory": {"guest": "96Mi"},
                        "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                    },
                    "volumes": [{"name": "root", "containerDisk": {"image": "guest:1"}}],
                }
            },
        },
    }


def test_field_descriptions_can_be_left_out_without_changing_what_validates() -> None:
    """PODVIRT_FIELD_DOCS=0 (the launcher's preparation child) drops the descriptions pydantic reads from
    the source, and nothing else: the same objects validate and dump the same."""
    probe = (
        "import json, sys\n"
        "from kubevirt_types import VirtualMachineInstance as V\n"
        "vmi = V.model_validate(json.loads(sys.argv[1]))\n"
        "print(json.dumps([V.model_fields['spec'].description, vmi.model_dump(mode='json', by_alias=True)]))\n"
    )
    obj = {"metadata": {"name": "a"}, "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}
    results = []
    for docs in ("1", "0"):
        env = {**os.environ, "PODVIRT_FIELD_DOCS": docs}
        out = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(obj)], env=env, capture_output=True, text=True, check=True
        )
        results.append(json.loads(out.stdout))
    (described, dumped), (undescribed, dumped_without) = results
    assert described and undescribed is None
    assert dumped == dumped_without
