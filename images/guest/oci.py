"""Writes a single-layer OCI image layout (plus a tar of it) holding the given files; stdlib only.

Usage: oci.py LAYOUT_DIR LAYOUT_TAR REF SRC=DEST [SRC=DEST ...]

Files are owned by 107:107 (the launcher's user) with mode 0444, and every timestamp is zero, so the
same inputs always give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAUNCHER_UID = 107
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"


def _tar_entry(name: str, *, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o555 if is_dir else 0o444
    info.uid = info.gid = LAUNCHER_UID
    info.mtime = 0
    info.size = size
    return info


def layer_tar(files: dict[str, Path]) -> bytes:
    """An uncompressed layer: parent directories first, then the files, in sorted order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(dest).parent) for dest in files} - {"."})
        for d in dirs:
            tar.addfile(_tar_entry(d, is_dir=True))
        for dest in sorted(files):
            src = files[dest]
            with src.open("rb") as fh:
                tar.addfile(_tar_entry(dest, is_dir=False, size=src.stat().st_size), fh)
    return buf.getvalue()


def _put_blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(layout: Path, ref: str, files: dict[str, Path]) -> str:
    """Writes the layout directory; returns the manifest digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    raw = layer_tar(files)
    layer = _put_blob(blobs, gzip.compress(raw, compresslevel=6, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
    }
    config_desc = _put_blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, **config_desc},
        "layers": [{"mediaType": MEDIA_LAYER, **layer}],
    }
    manifest_desc = _put_blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return str(manifest_desc["digest"])


def tar_layout(layout: Path, out: Path) -> None:
    """A deterministic tar of the layout directory (its contents at the archive root)."""
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            rel = path.relative_to(layout).as_posix()
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    layout, tar_out, ref = Path(argv[0]), Path(argv[1]), argv[2]
    files: dict[str, Path] = {}
    for spec in argv[3:]:
        src, _, dest = spec.partition("=")
        files[dest.lstrip("/")] = Path(src)
    digest = write_layout(layout, ref, files)
    tar_layout(layout, tar_out)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
