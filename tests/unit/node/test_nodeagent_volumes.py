"""Pod volumes in the kubelet's layout, written atomically, and the mounts containers get."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import os
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import pytest

from devcluster.images import ImageStore, import_image, write_oci_layout
from devcluster.node.volumes import ImageNotPresentError, PodVolumes, VolumeError, write_projection

pytestmark = pytest.mark.unit


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


EXPIRY = dt.datetime(2030, 1, 1, 1, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)


class FakeFetcher:
    def __init__(self) -> None:
        self.configmaps: dict[str, dict[str, Any]] = {
            "kube-root-ca.crt": {"data": {"ca.crt": "CA PEM"}},
            "cm": {"data": {"a": "1", "b": "2"}, "binaryData": {"bin": base64.b64encode(b"\x00\x01").decode()}},
        }
        self.secrets = {"sec": {"data": {"pw": base64.b64encode(b"hunter2").decode()}}}
        self.tokens: list[tuple[str, str, str | None, int]] = []

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.configmaps.get(name)

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    async def token(
        self, namespace: str, service_account: str, audience: str | None, seconds: int, pod: Mapping[str, Any]
    ) -> tuple[str, dt.datetime]:
        self.tokens.append((namespace, service_account, audience, seconds))
        return f"token-{len(self.tokens)}", EXPIRY


KUBE_API_ACCESS = {
    "name": "kube-api-access-x",
    "projected": {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ],
    },
}


def make_pod(*volumes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1", "labels": {"app": "x"}},
        "spec": {"serviceAccountName": "robot", "volumes": list(volumes), "containers": [{"name": "c"}]},
    }


def volumes_for(tmp_path: Path, *volumes: dict[str, Any]) -> tuple[PodVolumes, FakeFetcher]:
    fetcher = FakeFetcher()
    return PodVolumes(
        make_pod(*volumes), tmp_path / "pod", fetcher, ImageStore(tmp_path / "images"), {}, now=lambda: NOW
    ), fetcher


@sync
async def test_service_account_token_volume_in_the_kubelet_layout(tmp_path: Path) -> None:
    vols, fetcher = volumes_for(tmp_path, KUBE_API_ACCESS)
    await vols.setup()
    directory = tmp_path / "pod" / "volumes" / "kubernetes.io~projected" / "kube-api-access-x"
    assert (directory / "token").read_text() == "token-1"
    assert (directory / "ca.crt").read_text() == "CA PEM"
    assert (directory / "namespace").read_text() == "ns"
    assert (directory / "token").is_symlink() and os.readlink(directory / "..data").startswith("..")
    assert fetcher.tokens == [("ns", "robot", None, 3607)]
    assert vols.token_expiry == NOW + dt.timedelta(minutes=48)  # 80 % of the hour
    await vols.refresh_tokens()
    assert (directory / "token").read_text() == "token-2"
    assert len([p for p in directory.iterdir() if p.name.startswith("..") and p.is_dir() and not p.is_symlink()]) == 1


@sync
async def test_config_maps_secrets_and_downward_api(tmp_path: Path) -> None:
    vols, _ = volumes_for(
        tmp_path,
        {"name": "all", "configMap": {"name": "cm"}},
        {"name": "some", "configMap": {"name": "cm", "items": [{"key": "b", "path": "sub/b.txt", "mode": 0o600}]}},
        {"name": "pw", "secret": {"secretName": "sec", "defaultMode": 0o400}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "gone", "configMap": {"name": "absent", "optional": True}},
    )
    await vols.setup()
    base = tmp_path / "pod" / "volumes"
    assert sorted(
        p.name for p in (base / "kubernetes.io~configmap" / "all").iterdir() if not p.name.startswith("..")
    ) == ["a", "b", "bin"]
    assert (base / "kubernetes.io~configmap" / "all" / "bin").read_bytes() == b"\x00\x01"
    some = base / "kubernetes.io~configmap" / "some" / "sub" / "b.txt"
    assert some.read_text() == "2" and some.stat().st_mode & 0o777 == 0o600
    pw = base / "kubernetes.io~secret" / "pw" / "pw"
    assert pw.read_text() == "hunter2" and pw.stat().st_mode & 0o777 == 0o400
    assert (base / "kubernetes.io~downward-api" / "info" / "labels").read_text() == 'app="x"'


@sync
async def test_a_missing_config_map_fails_the_mount(tmp_path: Path) -> None:
    vols, _ = volumes_for(tmp_path, {"name": "v", "configMap": {"name": "absent"}})
    with pytest.raises(VolumeError, match='configmap "absent" not found'):
        await vols.setup()


@sync
async def test_unsupported_volumes_say_so(tmp_path: Path) -> None:
    vols, _ = volumes_for(tmp_path, {"name": "data", "persistentVolumeClaim": {"claimName": "c"}})
    with pytest.raises(VolumeError, match="persistentVolumeClaim volumes are not supported"):
        await vols.setup()


@sync
async def test_empty_dirs_and_host_paths(tmp_path: Path) -> None:
    host = tmp_path / "host"
    vols, _ = volumes_for(
        tmp_path,
        {"name": "scratch", "emptyDir": {}},
        {"name": "made", "hostPath": {"path": str(host / "made"), "type": "DirectoryOrCreate"}},
    )
    await vols.setup()
    scratch = tmp_path / "pod" / "volumes" / "kubernetes.io~empty-dir" / "scratch"
    assert scratch.is_dir() and scratch.stat().st_mode & 0o777 == 0o777
    assert (host / "made").is_dir()
    strict, _ = volumes_for(tmp_path, {"name": "f", "hostPath": {"path": str(host / "nope"), "type": "File"}})
    with pytest.raises(VolumeError, match="is not a File"):
        await strict.setup()


@sync
async def test_mounts_are_read_only_where_the_kubelet_makes_them_so(tmp_path: Path) -> None:
    vols, _ = volumes_for(tmp_path, {"name": "scratch", "emptyDir": {}}, KUBE_API_ACCESS)
    await vols.setup()
    container = {
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/data", "subPathExpr": "$(POD)"},
            {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
        ]
    }
    mounts = vols.mounts(container, {"POD": "p"})
    assert [(m["target"], m["readonly"], m["sub_path"]) for m in mounts] == [
        ("/data", False, "p"),
        ("/var/run/secrets/kubernetes.io/serviceaccount", True, None),
    ]
    with pytest.raises(VolumeError, match="refers to no volume"):
        vols.mounts({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, {})


@sync
async def test_image_volumes_come_from_the_store(tmp_path: Path) -> None:
    vols, _ = volumes_for(tmp_path, {"name": "img", "image": {"reference": "registry.test/files:1"}})
    await vols.setup()
    container = {"volumeMounts": [{"name": "img", "mountPath": "/img"}]}
    with pytest.raises(ImageNotPresentError, match="devcluster image import"):
        vols.mounts(container, {})
    write_oci_layout(tmp_path / "layout", {"f": b"x"})
    image = import_image(tmp_path / "images", tmp_path / "layout", "registry.test/files:1")
    [mount] = vols.mounts(container, {})
    assert mount == {"source": str(image.rootfs), "target": "/img", "readonly": True, "sub_path": None, "nosuid": True}


def test_write_projection_swaps_all_files_at_once(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    write_projection(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o644)})
    write_projection(target, {"a": (b"3", 0o644)})
    assert (target / "a").read_text() == "3"
    assert not (target / "dir").exists()
    with pytest.raises(VolumeError, match="invalid file path"):
        write_projection(target, {"../escape": (b"x", 0o644)})
