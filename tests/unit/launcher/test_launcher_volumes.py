"""The preparation step on real files: volume sources, path checks (hostDisk!), image safety, seeds, ISOs."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from kubevirt_types import VirtualMachineInstance
from virt_launcher.errors import InvalidSpecError, LauncherError, UnsupportedFieldError, VolumeError
from virt_launcher.layout import PodLayout
from virt_launcher.prepare.images import probe
from virt_launcher.prepare.network import attachments
from virt_launcher.prepare.run import prepare
from virt_launcher.prepare.volumes import VolumeResolver


@pytest.fixture
def layout(tmp_path: Path) -> PodLayout:
    pod = PodLayout(tmp_path / "s", tmp_path / "p", tmp_path / "v")
    for d in (pod.sockets_dir, pod.private_dir, pod.volumes_dir):
        d.mkdir()
    return pod


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_vmi(volumes: list[dict[str, Any]], **spec: Any) -> VirtualMachineInstance:
    disks = [{"name": v["name"]} for v in volumes]
    return VirtualMachineInstance.model_validate(
        {
            "metadata": {"name": "vm1", "namespace": "ns", "uid": "uid-1"},
            "spec": {"domain": {"memory": {"guest": "64Mi"}, "devices": {"disks": disks}}, "volumes": volumes, **spec},
        }
    )


def resolve(layout: PodLayout, volume: dict[str, Any], **spec: Any) -> Any:
    return VolumeResolver(make_vmi([volume], **spec), layout).resolve_all()[volume["name"]]


def iso_files(path: Path) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    files = {}
    for root, _dirs, names in iso.walk(rr_path="/"):
        for name in names:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"{root.rstrip('/')}/{name}")
            files[f"{root.rstrip('/')}/{name}".lstrip("/")] = buf.getvalue()
    label = iso.pvd.volume_identifier.decode().strip()
    iso.close()
    files["<label>"] = label.encode()
    return files


def atomic_writer_mount(directory: Path, data: dict[str, str]) -> None:
    """How the kubelet lays out configMap/secret volumes: keys are symlinks through ..data."""
    stamp = directory / "..2024_01_01_00_00_00.000"
    stamp.mkdir(parents=True)
    for key, value in data.items():
        (stamp / key).write_text(value)
    (directory / "..data").symlink_to(stamp.name)
    for key in data:
        (directory / key).symlink_to(f"..data/{key}")


# --- containerDisk ------------------------------------------------------------------------------------------


def test_container_disk_gets_a_qcow2_overlay_over_the_read_only_image(layout: PodLayout) -> None:
    disk_dir = layout.volumes_dir / "root/disk"
    disk_dir.mkdir(parents=True)
    qemu_img("create", "-q", "-f", "qcow2", str(disk_dir / "os.qcow2"), "64M")
    source = resolve(layout, {"name": "root", "containerDisk": {"image": "img"}})
    assert (source.format, source.backing.format, source.backing.readonly) == ("qcow2", "qcow2", True)
    info = json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", source.path], capture_output=True, check=True).stdout
    )
    assert info["virtual-size"] == 64 << 20
    assert info["full-backing-filename"] == str(disk_dir / "os.qcow2")


def test_container_disk_needs_exactly_one_image_or_a_path_inside_it(layout: PodLayout) -> None:
    disk_dir = layout.volumes_dir / "root/disk"
    disk_dir.mkdir(parents=True)
    for name in ("a.img", "b.img"):
        (disk_dir / name).write_bytes(b"\0" * 4096)
    with pytest.raises(VolumeError, match="2 files"):
        resolve(layout, {"name": "root", "containerDisk": {"image": "img"}})
    assert resolve(layout, {"name": "root", "containerDisk": {"image": "img", "path": "/disk/b.img"}}).backing.path == (
        str(disk_dir / "b.img")
    )
    (layout.volumes_dir / "root/escape").symlink_to("/etc/passwd")
    with pytest.raises(VolumeError, match="outside"):
        resolve(layout, {"name": "root", "containerDisk": {"image": "img", "path": "escape"}})
    with pytest.raises(InvalidSpecError):
        resolve(layout, {"name": "root", "containerDisk": {"image": "img", "path": "../../etc/passwd"}})


def test_qcow2_images_that_point_at_other_files_are_refused(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(tmp_path / "base.qcow2"), str(tmp_path / "top"))
    with pytest.raises(VolumeError, match="backing file"):
        probe(tmp_path / "top", "f")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data'}", str(tmp_path / "ext"), "1M")
    with pytest.raises(VolumeError, match="external data file"):
        probe(tmp_path / "ext", "f")
    (tmp_path / "disk.vmdk").write_bytes(b"KDMV" + b"\0" * 508)
    with pytest.raises(VolumeError, match="vmdk"):
        probe(tmp_path / "disk.vmdk", "f")
    assert probe(tmp_path / "base.qcow2", "f") == ("qcow2", 1 << 20)


# --- emptyDisk, claims, hostDisk ----------------------------------------------------------------------------


def test_empty_disk_is_a_sparse_qcow2_of_the_capacity(layout: PodLayout) -> None:
    source = resolve(layout, {"name": "scratch", "emptyDisk": {"capacity": "2Gi"}})
    assert probe(Path(source.path), "f") == ("qcow2", 2 << 30)
    assert os.stat(source.path).st_size < 1 << 20


def test_filesystem_claim_uses_its_disk_img(layout: PodLayout) -> None:
    claim = layout.volumes_dir / "data"
    claim.mkdir()
    (claim / "disk.img").write_bytes(b"\0" * 8192)
    source = resolve(layout, {"name": "data", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}})
    assert (source.kind, source.path, source.format, source.readonly) == ("file", str(claim / "disk.img"), "raw", True)
    (claim / "disk.img").unlink()
    (claim / "disk.img").symlink_to("/etc/hostname")
    with pytest.raises(VolumeError):
        resolve(layout, {"name": "data", "persistentVolumeClaim": {"claimName": "c"}})


def test_host_disk_or_create_makes_a_sparse_raw_file_in_its_mount(layout: PodLayout) -> None:
    mount = layout.volumes_dir / "hd"
    mount.mkdir()
    volume = {"name": "hd", "hostDisk": {"path": "/var/vms/hd.img", "type": "DiskOrCreate", "capacity": "1Gi"}}
    source = resolve(layout, volume)
    assert source.path == str(mount / "hd.img")
    assert os.stat(source.path).st_size == 1 << 30
    assert os.stat(source.path).st_blocks == 0
    assert resolve(layout, volume).path == source.path, "an existing image is used as it is"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("relative/hd.img", InvalidSpecError),
        ("/var/vms/../../etc/shadow", InvalidSpecError),
        ("/var//vms/hd.img", InvalidSpecError),
        ("/var/vms/", InvalidSpecError),
    ],
)
def test_host_disk_paths_must_be_plain_absolute_file_paths(layout: PodLayout, path: str, error: type) -> None:
    (layout.volumes_dir / "hd").mkdir()
    with pytest.raises(error):
        resolve(layout, {"name": "hd", "hostDisk": {"path": path, "type": "DiskOrCreate", "capacity": "1Mi"}})


def test_host_disk_never_follows_a_symlink_planted_in_its_directory(layout: PodLayout, tmp_path: Path) -> None:
    mount = layout.volumes_dir / "hd"
    mount.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (mount / "hd.img").symlink_to(victim)
    for kind in ("Disk", "DiskOrCreate"):
        with pytest.raises(VolumeError):
            resolve(layout, {"name": "hd", "hostDisk": {"path": "/x/hd.img", "type": kind, "capacity": "1Mi"}})
    assert victim.read_bytes() == b"precious"


def test_host_disk_mount_itself_must_not_be_a_symlink(layout: PodLayout, tmp_path: Path) -> None:
    (layout.volumes_dir / "hd").symlink_to(tmp_path)
    with pytest.raises(VolumeError, match="not a symlink"):
        resolve(layout, {"name": "hd", "hostDisk": {"path": "/x/hd.img", "type": "DiskOrCreate", "capacity": "1Mi"}})


def test_host_disk_of_type_disk_must_exist_and_create_needs_room(layout: PodLayout) -> None:
    (layout.volumes_dir / "hd").mkdir()
    with pytest.raises(VolumeError, match="does not exist"):
        resolve(layout, {"name": "hd", "hostDisk": {"path": "/x/hd.img", "type": "Disk"}})
    with pytest.raises(VolumeError, match="do not fit"):
        resolve(layout, {"name": "hd", "hostDisk": {"path": "/x/hd.img", "type": "DiskOrCreate", "capacity": "1Pi"}})


# --- seeds and config disks ---------------------------------------------------------------------------------


def test_nocloud_seed_holds_meta_data_user_data_and_network_config(layout: PodLayout) -> None:
    volume = {"name": "seed", "cloudInitNoCloud": {"userData": "#!/bin/sh\necho hi\n", "networkData": "version: 2\n"}}
    files = iso_files(Path(resolve(layout, volume, hostname="guest1").path))
    assert files["<label>"] == b"cidata"
    assert files["user-data"] == b"#!/bin/sh\necho hi\n"
    assert files["network-config"] == b"version: 2\n"
    assert b'local-hostname: "guest1"' in files["meta-data"] and b'instance-id: "uid-1"' in files["meta-data"]


def test_user_data_from_a_mounted_secret_and_base64(layout: PodLayout) -> None:
    atomic_writer_mount(layout.volumes_dir / "seed/userdata-secret", {"userdata": "#cloud-config\n"})
    source = resolve(layout, {"name": "seed", "cloudInitNoCloud": {"userDataSecretRef": {"name": "s"}}})
    assert iso_files(Path(source.path))["user-data"] == b"#cloud-config\n"
    with pytest.raises(InvalidSpecError, match="base64"):
        resolve(layout, {"name": "seed", "cloudInitNoCloud": {"userDataBase64": "!!!"}})


def test_config_drive_layout(layout: PodLayout) -> None:
    volume = {"name": "cd", "cloudInitConfigDrive": {"userData": "#cloud-config\n", "networkData": '{"links": []}'}}
    files = iso_files(Path(resolve(layout, volume).path))
    assert files["<label>"] == b"config-2"
    assert json.loads(files["openstack/latest/meta_data.json"]) == {"uuid": "uid-1", "hostname": "vm1", "name": "vm1"}
    assert files["openstack/latest/network_data.json"] == b'{"links": []}'


def test_config_map_disk_holds_the_keys_not_the_kubelet_machinery(layout: PodLayout) -> None:
    atomic_writer_mount(layout.volumes_dir / "cfg", {"app.conf": "a=1\n", "other": "b"})
    files = iso_files(Path(resolve(layout, {"name": "cfg", "configMap": {"name": "c", "volumeLabel": "CFG"}}).path))
    assert files == {"app.conf": b"a=1\n", "other": b"b", "<label>": b"CFG"}


def test_config_map_symlink_out_of_the_mount_is_refused(layout: PodLayout) -> None:
    mount = layout.volumes_dir / "cfg"
    mount.mkdir()
    (mount / "key").symlink_to("/etc/hostname")
    with pytest.raises(VolumeError, match="outside"):
        resolve(layout, {"name": "cfg", "configMap": {"name": "c"}})


def test_optional_missing_secret_is_an_empty_disk(layout: PodLayout) -> None:
    files = iso_files(Path(resolve(layout, {"name": "sec", "secret": {"secretName": "s", "optional": True}}).path))
    assert files == {"<label>": b"secret"}


# --- networks and the whole preparation --------------------------------------------------------------------


def test_pod_interface_uses_the_prepared_tap_or_falls_back_to_user_networking(tmp_path: Path) -> None:
    vm = VirtualMachineInstance.model_validate(
        {
            "spec": {
                "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": [{"name": "default", "pod": {}}],
            }
        }
    )
    assert attachments(vm, "auto", tmp_path)["default"].kind == "user"
    (tmp_path / "tap0").mkdir()
    (tmp_path / "tap0/tun_flags").write_text("0x1002")
    tun = tmp_path / "tun"
    tun.write_bytes(b"")  # stands in for /dev/net/tun
    assert attachments(vm, "auto", tmp_path, dev_tun=tun)["default"].tap == "tap0"
    assert attachments(vm, "user", tmp_path, dev_tun=tun)["default"].kind == "user"


def test_a_prepared_tap_the_launcher_cannot_attach_to_falls_back_loudly(tmp_path: Path) -> None:
    vm = VirtualMachineInstance.model_validate(
        {
            "spec": {
                "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": [{"name": "default", "pod": {}}],
            }
        }
    )
    (tmp_path / "tap0").mkdir()
    (tmp_path / "tap0/tun_flags").write_text("0x1002")
    warnings: list[str] = []
    missing = tmp_path / "no-tun"
    assert attachments(vm, "auto", tmp_path, warnings, missing)["default"].kind == "user"
    assert "using QEMU user networking" in warnings[0]
    with pytest.raises(UnsupportedFieldError):
        attachments(vm, "tap", tmp_path, dev_tun=missing)


def test_prepare_turns_a_kernel_boot_vmi_into_validated_xml(layout: PodLayout) -> None:
    boot = layout.volumes_dir / ".kernel-boot/boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz").write_bytes(b"kernel")
    vmi = {
        "metadata": {"name": "k", "namespace": "ns"},
        "spec": {
            "domain": {
                "memory": {"guest": "64Mi"},
                "devices": {},
                "firmware": {"kernelBoot": {"container": {"image": "k", "kernelPath": "/boot/vmlinuz"}}},
            },
            "startStrategy": "Paused",
        },
    }
    request = {"vmi": vmi, "socketsDir": str(layout.sockets_dir), "privateDir": str(layout.private_dir),
               "volumesDir": str(layout.volumes_dir), "domainType": "qemu"}  # fmt: skip
    result = prepare(request)
    assert (result["domainName"], result["startPaused"], result["terminationGracePeriodSeconds"]) == ("ns_k", True, 30)
    assert f"<kernel>{boot / 'vmlinuz'}</kernel>" in result["domainXML"]


def test_prepare_reports_model_errors_with_their_field(layout: PodLayout) -> None:
    request = {"vmi": {"spec": {"domain": {"devices": {}, "cpu": {"cores": 0}}}}, "socketsDir": "s",
               "privateDir": "p", "volumesDir": "v"}  # fmt: skip
    with pytest.raises(LauncherError) as exc:
        prepare(request)
    assert exc.value.field == "spec.domain.cpu.cores"
