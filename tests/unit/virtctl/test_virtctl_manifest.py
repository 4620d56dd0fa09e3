"""``create vm`` builds manifests that the shared models accept, with KubeVirt's defaults and flag syntax."""

from __future__ import annotations

import base64

import pytest
import yaml

from kubevirt_types import VirtualMachine
from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.manifest import VMFlags, build_vm, parse_params, to_yaml

pytestmark = pytest.mark.unit

USER_DATA = base64.b64encode(b"#cloud-config\npassword: fedora\n").decode()


def manifest(**flags: object) -> dict[str, object]:
    document = yaml.safe_load(to_yaml(build_vm(VMFlags(**flags))))  # type: ignore[arg-type]
    VirtualMachine.model_validate(document)  # the printed YAML is a valid VirtualMachine
    assert isinstance(document, dict)
    return document


def test_defaults_are_kubevirts() -> None:
    vm = manifest()
    assert vm["apiVersion"] == "kubevirt.io/v1"
    assert vm["kind"] == "VirtualMachine"
    assert vm["metadata"]["name"].startswith("vm-") and len(vm["metadata"]["name"]) == 8
    assert "namespace" not in vm["metadata"]
    assert vm["spec"]["runStrategy"] == "Always"
    template = vm["spec"]["template"]["spec"]
    assert template["domain"]["memory"] == {"guest": "512Mi"}
    assert template["terminationGracePeriodSeconds"] == 180
    assert "volumes" not in template


def test_random_names_differ() -> None:
    assert len({manifest()["metadata"]["name"] for _ in range(5)}) > 1


def test_containerdisk_image_keeps_its_tag_and_gets_a_disk() -> None:
    vm = manifest(name="myvm", containerdisks=["src:quay.io/containerdisks/fedora:40"])
    spec = vm["spec"]["template"]["spec"]
    assert spec["volumes"] == [
        {"name": "myvm-containerdisk-0", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}}
    ]
    assert spec["domain"]["devices"]["disks"] == [{"name": "myvm-containerdisk-0", "disk": {"bus": "virtio"}}]


def test_volume_names_boot_order_and_pvc() -> None:
    vm = manifest(
        name="myvm",
        containerdisks=["src:example.com/tools:1,name:tools"],
        pvcs=["src:root-disk,bootorder:1"],
    )
    disks = vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"]
    assert disks == [
        {"name": "tools", "disk": {"bus": "virtio"}},
        {"name": "root-disk", "disk": {"bus": "virtio"}, "bootOrder": 1},
    ]
    assert vm["spec"]["template"]["spec"]["volumes"][1] == {
        "name": "root-disk",
        "persistentVolumeClaim": {"claimName": "root-disk"},
    }


def test_cloud_init_goes_on_a_nocloud_disk_base64_encoded() -> None:
    network = base64.b64encode(b"version: 2\n").decode()
    vm = manifest(name="v", cloud_init_user_data=USER_DATA, cloud_init_network_data=network)
    volume = vm["spec"]["template"]["spec"]["volumes"][0]
    assert volume == {
        "name": "cloudinitdisk",
        "cloudInitNoCloud": {"userDataBase64": USER_DATA, "networkDataBase64": network},
    }


def test_namespace_only_when_given_and_other_fields() -> None:
    vm = manifest(name="v", namespace="prod", run_strategy="Manual", memory="2Gi", termination_grace_period=0)
    assert vm["metadata"] == {"name": "v", "namespace": "prod"}
    assert vm["spec"]["runStrategy"] == "Manual"
    assert vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] == "2Gi"
    assert vm["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 0


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        ({"run_strategy": "Sometimes"}, "--run-strategy: invalid runStrategy 'Sometimes'"),
        ({"memory": "lots"}, "--memory:"),
        ({"containerdisks": ["image:x"]}, "unknown parameter 'image'"),
        ({"containerdisks": ["name:x"]}, "src must be given"),
        ({"containerdisks": ["src:a,src:b"]}, "given twice"),
        ({"containerdisks": ["src:a,bootorder:0"]}, "bootorder must be greater than 0"),
        ({"containerdisks": ["src:a,bootorder:x"]}, "is not a number"),
        ({"containerdisks": ["src:a,bootorder:1", "src:b,bootorder:1"]}, "bootorder 1 was given"),
        ({"containerdisks": ["src:a,name:d"], "pvcs": ["src:d"]}, "already a volume named 'd'"),
        ({"pvcs": ["src:other/claim"]}, "another namespace"),
        ({"cloud_init_user_data": "#cloud-config"}, "must be base64-encoded"),
        ({"termination_grace_period": -1}, "must not be negative"),
    ],
)
def test_bad_flags_are_usage_errors_naming_the_flag(flags: dict[str, object], complaint: str) -> None:
    with pytest.raises(VirtctlError) as raised:
        build_vm(VMFlags(**flags))  # type: ignore[arg-type]
    assert raised.value.exit_code == ExitCode.USAGE
    assert complaint in raised.value.message


def test_params_split_on_the_first_colon_only() -> None:
    assert parse_params("f", "src:reg.io:5000/img:tag,name:x", ("src", "name")) == {
        "src": "reg.io:5000/img:tag",
        "name": "x",
    }
