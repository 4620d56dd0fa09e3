"""The stand-in nodes' local image store: OCI image layouts imported by reference, unpacked once.

No machine here can pull images, so ``devcluster image import <layout-dir-or-archive> <reference>``
copies an OCI image layout (a directory with ``index.json`` and ``blobs/``, or a tar of one,
optionally gzipped; ``docker save`` archives work too) into the store, checking every blob's digest,
and unpacks its layers into a root filesystem. Pods use it through image volumes
(``volumes[].image.reference``), which the node agent bind-mounts read-only.

Layout of the store::

    <store>/blobs/sha256/<hex>        manifests, configs and layers, content-addressed
    <store>/rootfs/<manifest-hex>/    the unpacked layers of one manifest
    <store>/refs.json                 {"docker.io/library/busybox:latest": "sha256:<manifest>"}

Layers are applied as a container runtime would (whiteouts, opaque directories) but never write
outside the root they unpack into: every path is resolved inside that root, symlinks included.
Setuid/setgid bits and device nodes are dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_INDEX_TYPES = {MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST}
_REF_ANNOTATION = "org.opencontainers.image.ref.name"
_MAX_SYMLINK_HOPS = 40
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


class ImageStoreError(Exception):
    """An import or lookup failed; the message names the image or file and what to do."""


@dataclass(frozen=True)
class StoredImage:
    """An image in the store: its normalised reference, manifest digest and unpacked root."""

    reference: str
    digest: str
    rootfs: Path


def host_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", _GOARCH.get(machine, machine)


def normalize_reference(reference: str) -> str:
    """The fully qualified form a kubelet pulls: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    ref = reference.strip()
    if not ref or any(c.isspace() for c in ref):
        raise ImageStoreError(f"invalid image reference {reference!r}")
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if digest:
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise ImageStoreError(f"invalid digest in image reference {reference!r}")
        return f"{domain}/{path}{':' + tag if tag else ''}@{digest}"
    return f"{domain}/{path}:{tag or 'latest'}"


class ImageStore:
    """A directory of imported images; safe to use from several processes at once."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def _blobs(self) -> Path:
        return self.dir / "blobs" / "sha256"

    def _refs(self) -> dict[str, str]:
        try:
            data = json.loads((self.dir / "refs.json").read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in dict(data).items()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def lookup(self, reference: str) -> StoredImage | None:
        """The unpacked image for ``reference``, or None if it was never imported."""
        ref = normalize_reference(reference)
        digest = self._refs().get(ref)
        if digest is None and "@" in ref:
            digest = ref.split("@", 1)[1]
        if digest is None:
            return None
        rootfs = self.dir / "rootfs" / digest.removeprefix("sha256:")
        if not rootfs.is_dir():
            return None
        return StoredImage(ref, digest, rootfs)

    def references(self) -> dict[str, str]:
        return self._refs()

    def import_layout(self, source: Path, reference: str) -> StoredImage:
        ref = normalize_reference(reference)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        with tempfile.TemporaryDirectory(prefix=".import-", dir=self.dir) as tmp:
            layout = source if source.is_dir() else _unpack_archive(source, Path(tmp) / "layout")
            if (layout / "index.json").is_file():
                manifest, blob = _select_manifest(layout, ref)
                layers = [(_blob_path(layout, d["digest"]), d) for d in manifest.get("layers", [])]
                config_desc = manifest["config"]
                extra = [(_blob_path(layout, config_desc["digest"]), config_desc)]
            elif (layout / "manifest.json").is_file():
                manifest, blob, layers, extra = _docker_archive(layout, Path(tmp))
            else:
                raise ImageStoreError(
                    f"{source} is neither an OCI image layout (no index.json) nor a docker-save archive"
                )
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            with self._locked():
                self._blobs.mkdir(parents=True, exist_ok=True)
                self._put_blob(digest, blob)
                for path, desc in [*extra, *layers]:
                    self._copy_blob(path, desc)
                rootfs = self.dir / "rootfs" / digest.removeprefix("sha256:")
                if not rootfs.is_dir():
                    staging = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=self.dir))
                    try:
                        for _, desc in layers:
                            with _open_layer(self._blobs / desc["digest"].removeprefix("sha256:"), desc) as fh:
                                apply_layer(staging, fh)
                        staging.chmod(0o755)
                        rootfs.parent.mkdir(exist_ok=True)
                        staging.rename(rootfs)
                    except BaseException:
                        shutil.rmtree(staging, ignore_errors=True)
                        raise
                refs = self._refs()
                refs[ref] = digest
                tmp_refs = self.dir / "refs.json.tmp"
                tmp_refs.write_text(json.dumps(refs, indent=2, sort_keys=True) + "\n")
                tmp_refs.replace(self.dir / "refs.json")
        return StoredImage(ref, digest, rootfs)

    def _put_blob(self, digest: str, data: bytes) -> None:
        path = self._blobs / digest.removeprefix("sha256:")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    def _copy_blob(self, source: Path, desc: dict[str, Any]) -> None:
        digest = str(desc["digest"])
        target = self._blobs / digest.removeprefix("sha256:")
        if target.exists():
            return
        tmp = target.with_suffix(".tmp")
        sha = hashlib.sha256()
        with source.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                sha.update(chunk)
                dst.write(chunk)
        if f"sha256:{sha.hexdigest()}" != digest:
            tmp.unlink()
            raise ImageStoreError(f"blob {source} does not match its digest {digest}; the layout is corrupt")
        tmp.replace(target)


def import_image(store_dir: Path, source: Path, reference: str) -> StoredImage:
    """Import an OCI image layout (directory or tar archive) into the store under ``reference``."""
    if not source.exists():
        raise ImageStoreError(f"{source} does not exist")
    return ImageStore(store_dir).import_layout(source, reference)


def _blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ImageStoreError(f"unsupported or malformed digest {digest!r} in {layout}")
    path = layout / "blobs" / "sha256" / hexpart
    if not path.is_file():
        raise ImageStoreError(f"{layout} lacks blob {digest}")
    return path


def _read_blob(layout: Path, desc: dict[str, Any]) -> bytes:
    data = _blob_path(layout, str(desc["digest"])).read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != desc["digest"]:
        raise ImageStoreError(f"blob {desc['digest']} in {layout} does not match its digest")
    return data


def _select_manifest(layout: Path, ref: str) -> tuple[dict[str, Any], bytes]:
    """Pick the manifest for ``ref``: by ref-name annotation, else the only one, else by platform."""
    index = json.loads((layout / "index.json").read_text())
    descs: list[dict[str, Any]] = list(index.get("manifests", []))
    if not descs:
        raise ImageStoreError(f"{layout}/index.json lists no manifests")
    tag = ref.rsplit(":", 1)[-1] if "@" not in ref else ""
    named = [d for d in descs if d.get("annotations", {}).get(_REF_ANNOTATION) in (ref, tag)]
    if len(named) == 1:
        descs = named
    os_name, arch = host_platform()
    for _ in range(4):  # an index may nest indexes
        if len(descs) > 1:
            matching = [
                d
                for d in descs
                if d.get("platform", {}).get("os") == os_name and d.get("platform", {}).get("architecture") == arch
            ]
            if not matching:
                raise ImageStoreError(f"{layout} holds several manifests and none for {os_name}/{arch}")
            descs = matching[:1]
        desc = descs[0]
        blob = _read_blob(layout, desc)
        doc = json.loads(blob)
        media = desc.get("mediaType") or doc.get("mediaType")
        if media in _INDEX_TYPES or "manifests" in doc:
            descs = list(doc.get("manifests", []))
            continue
        return doc, blob
    raise ImageStoreError(f"{layout}: image indexes nest too deeply")


def _docker_archive(
    layout: Path, tmp: Path
) -> tuple[dict[str, Any], bytes, list[tuple[Path, dict[str, Any]]], list[tuple[Path, dict[str, Any]]]]:
    """Turn a ``docker save`` archive (manifest.json + layer tars) into an OCI manifest and blobs."""
    entries = json.loads((layout / "manifest.json").read_text())
    if len(entries) != 1:
        raise ImageStoreError(f"{layout}/manifest.json describes {len(entries)} images; import one at a time")
    entry = entries[0]

    def described(rel: str, media: str) -> tuple[Path, dict[str, Any]]:
        path = _inside(layout, rel)
        sha = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        return path, {"mediaType": media, "digest": f"sha256:{sha.hexdigest()}", "size": path.stat().st_size}

    config = described(entry["Config"], "application/vnd.oci.image.config.v1+json")
    layers = [described(rel, "application/vnd.oci.image.layer.v1.tar") for rel in entry["Layers"]]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": config[1],
        "layers": [d for _, d in layers],
    }
    blob = json.dumps(manifest, sort_keys=True).encode()
    return manifest, blob, layers, [config]


def _inside(root: Path, rel: str) -> Path:
    clean = _clean_name(rel)
    if clean is None:
        raise ImageStoreError(f"path {rel!r} escapes {root}")
    return root / clean


def _unpack_archive(archive: Path, dest: Path) -> Path:
    """Unpack a (gzipped) tar of an image layout: regular files and directories only, no escapes."""
    dest.mkdir(parents=True)
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115
    except (tarfile.TarError, OSError) as exc:
        raise ImageStoreError(f"{archive} is not a directory or a readable tar archive: {exc}") from exc
    with tar:
        for member in tar:
            name = _clean_name(member.name)
            if name is None:
                continue
            target = dest / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    return dest


@contextlib.contextmanager
def _open_layer(path: Path, desc: dict[str, Any]) -> Iterator[tarfile.TarFile]:
    media = str(desc.get("mediaType", ""))
    if "zstd" in media:
        raise ImageStoreError(f"layer {desc['digest']} is zstd-compressed, which the devcluster store cannot unpack")
    with path.open("rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        fileobj: IO[bytes] = raw
        if magic == b"\x1f\x8b":
            fileobj = cast(IO[bytes], gzip.GzipFile(fileobj=raw))
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            yield tar


def _clean_name(name: str) -> str | None:
    """A tar member name as a relative path, or None for the root itself or a name that climbs out."""
    parts = [p for p in PurePosixPath("/" + name).parts[1:] if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def resolve_in_root(root: Path, relative: str, *, follow_last: bool = True) -> Path:
    """Resolve ``relative`` as if ``root`` were ``/``: symlinks (absolute or not) never leave ``root``."""
    todo = [p for p in relative.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if (todo or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise ImageStoreError(f"too many symlinks resolving {relative!r} in an image layer")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return root.joinpath(*done)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path)


def apply_layer(root: Path, tar: tarfile.TarFile) -> None:
    """Apply one layer to ``root`` as overlay semantics require, without writing outside ``root``."""
    added: set[Path] = set()
    deferred_dirs: list[tuple[Path, tarfile.TarInfo]] = []
    for member in tar:
        name = _clean_name(member.name)
        if name is None:
            continue
        parent_rel, _, base = name.rpartition("/")
        parent = resolve_in_root(root, parent_rel)
        if base == ".wh..wh..opq":
            if parent.is_dir():
                for child in parent.iterdir():
                    if child not in added:
                        _remove(child)
            continue
        if base.startswith(".wh."):
            victim = parent / base[4:]
            if victim not in added:
                _remove(victim)
            continue
        parent.mkdir(parents=True, exist_ok=True)
        target = parent / base
        added.add(target)
        if member.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                _remove(target)
            target.mkdir(exist_ok=True)
            deferred_dirs.append((target, member))
            continue
        if target.is_symlink() or target.exists():
            _remove(target)
        if member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            link_name = _clean_name(member.linkname)
            if link_name is None:
                continue
            source = resolve_in_root(root, link_name, follow_last=False)
            if source.is_file() and not source.is_symlink():
                os.link(source, target)
            continue
        elif member.isfile():
            src = tar.extractfile(member)
            assert src is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif member.isfifo():
            os.mkfifo(target)
        else:
            continue  # device nodes have no place in a read-only volume
        _set_attributes(target, member)
    for path, member in reversed(deferred_dirs):
        _set_attributes(path, member)


def _set_attributes(path: Path, member: tarfile.TarInfo) -> None:
    with contextlib.suppress(OSError):
        os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, stat.S_IMODE(member.mode) & ~(stat.S_ISUID | stat.S_ISGID))
    with contextlib.suppress(OSError):
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def write_oci_layout(directory: Path, files: dict[str, bytes], ref_name: str = "latest", mode: int = 0o444) -> str:
    """Write a one-layer OCI image layout holding ``files`` ({path: content}); return its manifest digest.

    For tests and small fixtures: anything bigger is better built with real image tools.
    """
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes, media: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for d in sorted({str(PurePosixPath(p).parent) for p in files} - {"."}):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    os_name, arch = host_platform()
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = {"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": put(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [put(layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    desc = put(json.dumps(manifest).encode(), MEDIA_OCI_MANIFEST)
    desc["annotations"] = {_REF_ANNOTATION: ref_name}
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [desc]})
    )
    return str(desc["digest"])
