"""The local OCI image store: references, layouts and archives, layers applied safely."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from devcluster.images import ImageStore, ImageStoreError, import_image, normalize_reference, write_oci_layout

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("ref", "normal"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("quay.io/containerdisks/fedora:41", "quay.io/containerdisks/fedora:41"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("kubevirt/cirros", "docker.io/kubevirt/cirros:latest"),
        ("registry.test/a/b@sha256:" + "a" * 64, "registry.test/a/b@sha256:" + "a" * 64),
    ],
)
def test_references_normalise_as_a_kubelet_pulls_them(ref: str, normal: str) -> None:
    assert normalize_reference(ref) == normal


def test_import_a_layout_directory_and_find_it_by_any_spelling(tmp_path: Path) -> None:
    digest = write_oci_layout(tmp_path / "layout", {"disk/disk.img": b"not really a disk"})
    image = import_image(tmp_path / "store", tmp_path / "layout", "registry.test/disks/tiny:1")
    assert image.digest == digest
    assert (image.rootfs / "disk" / "disk.img").read_bytes() == b"not really a disk"
    store = ImageStore(tmp_path / "store")
    assert store.lookup("registry.test/disks/tiny:1") == image
    assert store.lookup(f"registry.test/disks/tiny@{digest}") is not None
    assert store.lookup("registry.test/disks/tiny:2") is None


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_import_a_tar_of_a_layout(tmp_path: Path, mode: str) -> None:
    write_oci_layout(tmp_path / "layout", {"hello": b"hi"})
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, mode) as tar:
        tar.add(tmp_path / "layout", arcname=".")
    image = import_image(tmp_path / "store", archive, "hello")
    assert (image.rootfs / "hello").read_bytes() == b"hi"


def _layer(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tuple):
                tar.addfile(entry[0], io.BytesIO(entry[1]))
            else:
                tar.addfile(entry)
    return gzip.compress(buf.getvalue())


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _entry(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755
    return info


def _layout(directory: Path, layers: list[bytes]) -> Path:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "config": put(b"{}", "application/vnd.oci.image.config.v1+json"),
        "layers": [put(layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers],
    }
    desc = put(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return directory


def test_layers_apply_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    lower = _layer([_file("etc/a", b"a"), _file("etc/b", b"b"), _file("opt/old/x", b"x"), _file("keep", b"k")])
    upper = _layer([_file("etc/.wh.a", b""), _file("opt/old/.wh..wh..opq", b""), _file("opt/old/new", b"n")])
    image = import_image(tmp_path / "store", _layout(tmp_path / "l", [lower, upper]), "layered")
    root = image.rootfs
    assert not (root / "etc" / "a").exists() and (root / "etc" / "b").read_bytes() == b"b"
    assert sorted(p.name for p in (root / "opt" / "old").iterdir()) == ["new"]
    assert (root / "keep").exists()


def test_layers_never_write_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = _layer(
        [
            _entry("escape", tarfile.SYMTYPE, str(outside)),
            _entry("up", tarfile.SYMTYPE, "../../../../.."),
            _file("escape/pwned", b"!"),
            _file("up/" + str(outside).lstrip("/") + "/pwned2", b"!"),
            _file("../pwned3", b"!"),
            _file("/abs", b"ok", mode=0o4755),
        ]
    )
    image = import_image(tmp_path / "store", _layout(tmp_path / "l", [evil]), "evil")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "store" / "rootfs" / "pwned3").exists()
    # The symlink is followed as if the image root were /: the files land inside the image.
    assert (image.rootfs / str(outside).lstrip("/") / "pwned").read_bytes() == b"!"
    assert (image.rootfs / str(outside).lstrip("/") / "pwned2").read_bytes() == b"!"
    assert (image.rootfs / "abs").stat().st_mode & 0o7777 == 0o755  # setuid dropped


def test_a_corrupt_blob_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, {"f": b"data"})
    for blob in (layout / "blobs" / "sha256").iterdir():
        if blob.stat().st_size > 100:
            blob.write_bytes(blob.read_bytes() + b"tampered")
    with pytest.raises(ImageStoreError, match="digest"):
        import_image(tmp_path / "store", layout, "corrupt")


def test_not_a_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageStoreError, match="neither an OCI image layout"):
        import_image(tmp_path / "store", tmp_path / "empty", "x")
    with pytest.raises(ImageStoreError, match="does not exist"):
        import_image(tmp_path / "store", tmp_path / "missing", "x")


def test_a_docker_save_archive_imports(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as layer:
        info, data = _file("greeting", b"hello docker")
        layer.addfile(info, io.BytesIO(data))
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (
            ("layer1/layer.tar", raw.getvalue()),
            ("config.json", b"{}"),
            (
                "manifest.json",
                json.dumps([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": ["layer1/layer.tar"]}]).encode(),
            ),
        ):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    image = import_image(tmp_path / "store", archive, "x:1")
    assert (image.rootfs / "greeting").read_bytes() == b"hello docker"
