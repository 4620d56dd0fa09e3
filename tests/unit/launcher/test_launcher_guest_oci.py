"""images/guest/oci.py writes valid, reproducible OCI image layouts (what containerDisk images are made of)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType

OCI_SCRIPT = Path(__file__).resolve().parents[3] / "images/guest/oci.py"


def load_oci() -> ModuleType:
    spec = importlib.util.spec_from_file_location("guest_oci", OCI_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
    return data


def test_layout_holds_the_disk_under_disk_owned_by_the_launcher_user(tmp_path: Path) -> None:
    oci = load_oci()
    (tmp_path / "tiny.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 100)
    digest = oci.write_layout(tmp_path / "layout", "latest", {"disk/tiny.qcow2": tmp_path / "tiny.qcow2"})
    layout = tmp_path / "layout"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    manifest = json.loads(blob(layout, digest))
    layer_bytes = gzip.decompress(blob(layout, manifest["layers"][0]["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"disk", "disk/tiny.qcow2"}
    assert (members["disk/tiny.qcow2"].uid, members["disk/tiny.qcow2"].mode) == (107, 0o444)


def test_same_inputs_give_the_same_digest(tmp_path: Path) -> None:
    oci = load_oci()
    (tmp_path / "k").write_bytes(b"kernel")
    first = oci.write_layout(tmp_path / "a", "latest", {"boot/vmlinuz": tmp_path / "k"})
    second = oci.write_layout(tmp_path / "b", "latest", {"boot/vmlinuz": tmp_path / "k"})
    assert first == second
