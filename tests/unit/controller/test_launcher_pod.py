"""The launcher pod: KubeVirt's names and labels, the launcher's directories, one pod volume per VMI
volume, guest + overhead resources, the VMI's scheduling constraints, and the restricted security level."""

from __future__ import annotations

from typing import Any

import pytest

from virt_controller import main as controller_main
from virt_controller import names
from virt_controller.launcher_pod import LauncherSettings, PodSpecError, build_launcher_pod, referenced_claims
from virt_controller.overhead import cpu_request_millis, pod_resources

pytestmark = pytest.mark.unit

SETTINGS = LauncherSettings(
    image="example/launcher:1", sockets_dir="/s", private_dir="/p", volumes_dir="/v", node_selector={}
)


def vmi(name: str = "testvm", uid: str = "1234", **spec: Any) -> dict[str, Any]:
    spec.setdefault("domain", {"devices": {}, "memory": {"guest": "1Gi"}})
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": {"app": "web"}},
        "spec": spec,
    }


def compute(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "compute"
    return container


def mounts(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in compute(pod).get("volumeMounts", [])}


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


def test_identity_labels_and_owner() -> None:
    pod = build_launcher_pod(vmi(), SETTINGS)
    meta = pod["metadata"]
    assert meta["name"] == names.launcher_pod_name("testvm", "1234")
    assert meta["name"].startswith("virt-launcher-testvm-") and len(meta["name"]) == len("virt-launcher-testvm-") + 5
    assert meta["namespace"] == "ns"
    assert meta["labels"] == {
        "app": "web",
        "kubevirt.io": "virt-launcher",
        "kubevirt.io/created-by": "1234",
        "vm.kubevirt.io/name": "testvm",
    }
    assert meta["annotations"]["kubevirt.io/domain"] == "testvm"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "name": "testvm",
            "uid": "1234",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_the_name_is_derived_from_the_vmi_uid() -> None:
    assert names.launcher_pod_name("a", "uid-1") == names.launcher_pod_name("a", "uid-1")
    assert names.launcher_pod_name("a", "uid-1") != names.launcher_pod_name("a", "uid-2")
    assert len(names.launcher_pod_name("x" * 300, "u")) <= 253


def test_the_compute_container_runs_the_launcher_with_its_directories() -> None:
    pod = build_launcher_pod(vmi(), SETTINGS)
    container = compute(pod)
    assert container["image"] == "example/launcher:1"
    assert container["command"] == ["virt-launcher"]
    assert container["args"][:3] == ["--sockets-dir=/s", "--private-dir=/p", "--volumes-dir=/v"]
    assert volumes(pod)["sockets"] == {"name": "sockets", "emptyDir": {}}
    assert volumes(pod)["private"] == {"name": "private", "emptyDir": {}}
    assert mounts(pod)["/s"]["name"] == "sockets"
    assert mounts(pod)["/p"]["name"] == "private"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_emulation_is_passed_to_the_launcher_and_counted_in_memory() -> None:
    plain = build_launcher_pod(vmi(), SETTINGS)
    emulated = build_launcher_pod(vmi(), LauncherSettings(emulation=True))
    assert "--emulation=always" in compute(emulated)["args"]
    assert "--emulation=always" not in compute(plain)["args"]
    mib = lambda pod: int(compute(pod)["resources"]["requests"]["memory"].removesuffix("Mi"))  # noqa: E731
    assert mib(emulated) - mib(plain) == 64


def test_the_pod_passes_the_restricted_pod_security_level() -> None:
    pod = build_launcher_pod(vmi(), SETTINGS)
    pod_sc = pod["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 107
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = compute(pod)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    assert not any("hostPath" in v for v in pod["spec"]["volumes"])
    assert not pod["spec"].get("hostNetwork") and not pod["spec"].get("hostPID")


def test_memory_is_guest_plus_overhead_and_cpu_is_a_tenth_per_vcpu() -> None:
    # 1 GiB guest, 2 vCPUs, graphics on: 40 + 30 + 2 x 8 + 16 MiB, + 1 GiB / 512 = 2 MiB page tables.
    pod = build_launcher_pod(vmi(domain={"devices": {}, "cpu": {"cores": 2}, "memory": {"guest": "1Gi"}}), SETTINGS)
    assert compute(pod)["resources"] == {
        "requests": {"memory": f"{1024 + 104}Mi", "cpu": "200m", "devices.kubevirt.io/kvm": "1"},
        "limits": {"devices.kubevirt.io/kvm": "1"},
    }


@pytest.mark.parametrize(
    ("vcpus", "ratio", "millis"),
    [(1, 10, 100), (2, 10, 200), (1, 1, 1000), (4, 3, 1334), (1, 17, 59), (1, 100, 10), (1, 5000, 1)],
)
def test_the_cpu_request_is_vcpus_over_the_allocation_ratio_rounded_up(vcpus: int, ratio: int, millis: int) -> None:
    assert cpu_request_millis(vcpus, ratio) == millis


def test_the_allocation_ratio_sets_the_cpu_request_unless_the_vmi_asks_for_cpu() -> None:
    dense = LauncherSettings(cpu_allocation_ratio=50)
    assert compute(build_launcher_pod(vmi(), dense))["resources"]["requests"]["cpu"] == "20m"
    own = vmi(domain={"devices": {}, "memory": {"guest": "1Gi"}, "resources": {"requests": {"cpu": "250m"}}})
    assert compute(build_launcher_pod(own, dense))["resources"]["requests"]["cpu"] == "250m"
    with pytest.raises(ValueError, match="at least 1"):
        cpu_request_millis(1, 0)


def test_the_allocation_ratio_is_a_controller_flag() -> None:
    assert controller_main.build_config(controller_main.parse_args([])).launcher.cpu_allocation_ratio == 10
    args = controller_main.parse_args(["--cpu-allocation-ratio=25"])
    assert controller_main.build_config(args).launcher.cpu_allocation_ratio == 25
    for bad in ("0", "-1", "1.5"):
        with pytest.raises(SystemExit):
            controller_main.parse_args([f"--cpu-allocation-ratio={bad}"])


def test_devices_tun_for_the_pod_network_and_kvm_unless_emulated() -> None:
    on_pod_network = vmi(
        domain={"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}, "memory": {"guest": "64Mi"}},
        networks=[{"name": "default", "pod": {}}],
    )
    resources = compute(build_launcher_pod(on_pod_network, LauncherSettings(emulation=True)))["resources"]
    assert resources["limits"] == {"devices.kubevirt.io/tun": "1"}
    assert resources["requests"]["devices.kubevirt.io/tun"] == "1"
    assert "devices.kubevirt.io/kvm" not in resources["requests"]


def test_without_graphics_the_overhead_is_smaller() -> None:
    res = pod_resources({"domain": {"devices": {"autoattachGraphicsDevice": False}, "memory": {"guest": "1Gi"}}})
    assert res.overhead_bytes == (40 + 30 + 8 + 2) * 2**20
    assert res.vcpus == 1


def test_limits_get_the_overhead_too_and_explicit_requests_win() -> None:
    spec = {
        "domain": {
            "devices": {"autoattachGraphicsDevice": False},
            "memory": {"guest": "1Gi"},
            "resources": {"requests": {"memory": "512Mi", "cpu": "1"}, "limits": {"memory": "1Gi", "cpu": "2"}},
        }
    }
    res = pod_resources(spec)
    assert res.vcpus == 2  # from the CPU limit
    overhead = 40 + 30 + 2 * 8 + 2
    assert res.requests == {"memory": f"{512 + overhead}Mi", "cpu": "1"}
    assert res.limits == {"memory": f"{1024 + overhead}Mi", "cpu": "2"}


def test_overcommit_guest_overhead_leaves_the_overhead_out() -> None:
    spec = {"domain": {"devices": {}, "memory": {"guest": "1Gi"}, "resources": {"overcommitGuestOverhead": True}}}
    assert pod_resources(spec).requests["memory"] == "1024Mi"


def test_a_vmi_without_memory_is_refused_with_the_field_to_set() -> None:
    with pytest.raises(PodSpecError, match=r"spec\.domain\.memory\.guest"):
        build_launcher_pod(vmi(domain={"devices": {}}), SETTINGS)


def test_every_kind_of_vmi_volume_is_mounted_where_the_launcher_looks() -> None:
    spec_volumes = [
        {"name": "root", "containerDisk": {"image": "example/disk:1", "imagePullSecret": "regcred"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-claim"}},
        {"name": "blk", "persistentVolumeClaim": {"claimName": "blk-claim"}},
        {"name": "dv", "dataVolume": {"name": "dv-1"}},
        {"name": "eph", "ephemeral": {"persistentVolumeClaim": {"claimName": "base"}}},
        {"name": "cfg", "configMap": {"name": "app-config", "optional": True}},
        {"name": "sec", "secret": {"secretName": "app-secret"}},
        {"name": "sa", "serviceAccount": {"serviceAccountName": "robot"}},
        {"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "ud"}, "networkData": "x"}},
        {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
    ]
    claims = {"blk-claim": {"spec": {"volumeMode": "Block"}}, "data-claim": {"spec": {"volumeMode": "Filesystem"}}}
    kernel = {"kernelBoot": {"container": {"image": "example/kernel:1"}}}
    domain = {"devices": {}, "memory": {"guest": "1Gi"}, "firmware": kernel}
    pod = build_launcher_pod(vmi(domain=domain, volumes=spec_volumes), SETTINGS, claims)
    vols, mnts = volumes(pod), mounts(pod)
    assert vols["root"]["image"] == {"reference": "example/disk:1", "pullPolicy": "IfNotPresent"}
    assert mnts["/v/root"] == {"name": "root", "mountPath": "/v/root", "readOnly": True}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": "data-claim"}
    assert mnts["/v/data"]["name"] == "data"
    assert compute(pod)["volumeDevices"] == [{"name": "blk", "devicePath": "/v/blk"}]
    assert "/v/blk" not in mnts
    assert vols["dv"]["persistentVolumeClaim"] == {"claimName": "dv-1"}
    assert vols["eph"]["persistentVolumeClaim"] == {"claimName": "base", "readOnly": True}
    assert mnts["/v/eph"]["readOnly"] is True
    assert vols["cfg"]["configMap"] == {"name": "app-config", "optional": True}
    assert vols["sec"]["secret"] == {"secretName": "app-secret"}
    assert pod["spec"]["serviceAccountName"] == "robot"
    assert "serviceAccountToken" in vols["sa"]["projected"]["sources"][0]
    assert mnts["/v/ci/userdata-secret"]["name"] == "ci-userdata-secret"
    assert vols["ci-userdata-secret"]["secret"] == {"secretName": "ud"}
    assert mnts["/v/.kernel-boot"]["name"] == "kernel-boot"
    assert vols["kernel-boot"]["image"]["reference"] == "example/kernel:1"
    assert "scratch" not in vols  # made by the launcher in its private dir
    assert referenced_claims(pod_spec_of(spec_volumes)) == ["data-claim", "blk-claim", "dv-1", "base"]


def pod_spec_of(spec_volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"volumes": spec_volumes}


def test_a_host_disk_mounts_its_directory() -> None:
    spec_volumes = [
        {"name": "hd", "hostDisk": {"path": "/data/vm/disk.img", "type": "DiskOrCreate", "capacity": "1Gi"}}
    ]
    pod = build_launcher_pod(vmi(volumes=spec_volumes), SETTINGS)
    assert volumes(pod)["hd"]["hostPath"] == {"path": "/data/vm", "type": "DirectoryOrCreate"}
    assert mounts(pod)["/v/hd"]["name"] == "hd"


def test_a_vmi_volume_named_like_an_internal_one_gets_another_pod_volume_name() -> None:
    pod = build_launcher_pod(vmi(volumes=[{"name": "sockets", "configMap": {"name": "c"}}]), SETTINGS)
    assert volumes(pod)["sockets"] == {"name": "sockets", "emptyDir": {}}
    renamed = mounts(pod)["/v/sockets"]["name"]
    assert renamed != "sockets" and "configMap" in volumes(pod)[renamed]


def test_scheduling_constraints_come_from_the_vmi() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            }
        }
    }
    tolerations = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pod = build_launcher_pod(
        vmi(
            nodeSelector={"disk": "ssd"},
            affinity=affinity,
            tolerations=tolerations,
            priorityClassName="high",
            schedulerName="other",
            hostname="web-1",
            subdomain="web",
            terminationGracePeriodSeconds=120,
        ),
        LauncherSettings(node_selector={"kubevirt.io/schedulable": "true"}),
    )
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubevirt.io/schedulable": "true", "disk": "ssd"}
    assert spec["affinity"] == affinity
    assert spec["tolerations"] == tolerations
    assert spec["priorityClassName"] == "high"
    assert spec["schedulerName"] == "other"
    assert (spec["hostname"], spec["subdomain"]) == ("web-1", "web")
    assert spec["terminationGracePeriodSeconds"] == 135


def test_the_default_grace_period_is_kubevirts_30_s_plus_15_s_for_the_launcher() -> None:
    assert build_launcher_pod(vmi(), SETTINGS)["spec"]["terminationGracePeriodSeconds"] == 45


def test_interface_ports_become_container_ports() -> None:
    domain = {
        "devices": {"interfaces": [{"name": "default", "masquerade": {}, "ports": [{"name": "http", "port": 80}]}]},
        "memory": {"guest": "64Mi"},
    }
    pod = build_launcher_pod(vmi(domain=domain), SETTINGS)
    assert compute(pod)["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]


def test_the_launcher_contract_matches_virt_launcher_cli() -> None:
    """The arguments the pod passes are ones virt-launcher accepts."""
    cli = pytest.importorskip("virt_launcher.cli")
    args = compute(build_launcher_pod(vmi(), SETTINGS))["args"]
    parsed = cli.parse_args(args)
    assert (parsed.sockets_dir, parsed.private_dir, parsed.volumes_dir) == ("/s", "/p", "/v")
