"""Pod volumes on the node, in the kubelet's layout, and the bind mounts that put them in containers.

Every volume but hostPath and image lives under ``<root>/pods/<uid>/volumes/kubernetes.io~<kind>/
<name>``: emptyDir (a directory, or a tmpfs for ``medium: Memory``), and configMap, secret,
downwardAPI and projected volumes, written as the kubelet's atomic writer does (a timestamped
directory behind a ``..data`` symlink, so a refresh swaps all files at once). Projected
service-account tokens come from the TokenRequest API, bound to the pod, and are refreshed at 80%
of their lifetime. Image volumes are unpacked images from the local store, mounted read-only.
Mounts happen only inside each container's private mount namespace (see ``_exec.py``); the host
sees none of them except ``medium: Memory`` tmpfs mounts, which :meth:`PodVolumes.teardown` removes.

A hostPath at or under :data:`KUBELET_DIR` is this node's own directory (``--root``): on a real node
that path is the kubelet's, and every stand-in node keeps its own, so a DaemonSet that mounts the
kubelet's directory (virt-handler, to reach launcher sockets) sees the pods of its node.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from devcluster.images import ImageStore, ImageStoreError
from devcluster.node import env as envmod
from kubevirt_types.quantity import Quantity, QuantityError

PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected", "image")
UNSUPPORTED = (
    "persistentVolumeClaim",
    "ephemeral",
    "csi",
    "nfs",
    "iscsi",
    "rbd",
    "cephfs",
    "glusterfs",
    "fc",
    "flexVolume",
    "gitRepo",
)
DEFAULT_TOKEN_SECONDS = 3600
#: The kubelet's directory on a real node; hostPaths under it name this node's ``--root`` instead.
KUBELET_DIR = Path("/var/lib/kubelet")


class VolumeError(Exception):
    """A volume cannot be set up yet (FailedMount); the pod waits in ContainerCreating and retries."""


class ImageNotPresentError(Exception):
    """An image volume's reference is not in the local store (ErrImagePull / ImagePullBackOff)."""

    def __init__(self, reference: str, store: Path) -> None:
        super().__init__(
            f'image "{reference}" is not in the devcluster image store {store} (no registry is reachable here); '
            f"import it with `devcluster image import <oci-layout-or-archive> {reference}`"
        )
        self.reference = reference


class Fetcher(Protocol):
    """What volumes need from the API: the pod's ConfigMaps and Secrets, and bound tokens."""

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def token(
        self, namespace: str, service_account: str, audience: str | None, seconds: int, pod: Mapping[str, Any]
    ) -> tuple[str, dt.datetime]: ...


@dataclass
class Volume:
    name: str
    kind: str
    path: Path | None  # None for image volumes until resolved per container start
    spec: dict[str, Any]


def write_projection(directory: Path, files: Mapping[str, tuple[bytes, int]], gid: int | None = None) -> None:
    """Replace the contents of ``directory`` with ``files`` ({relative path: (data, mode)}) atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = "..{}".format(dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f"))
    fresh = directory / stamp
    fresh.mkdir(mode=0o755)
    tops: set[str] = set()
    for rel, (data, mode) in files.items():
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or parts[0].startswith(".."):
            raise VolumeError(f"invalid file path {rel!r} in a projected volume")
        target = fresh.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode & 0o777)
        if gid is not None:
            os.chown(target, -1, gid)
        tops.add(parts[0])
    link_tmp = directory / "..data_tmp"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(stamp)
    link_tmp.replace(directory / "..data")
    for entry in directory.iterdir():
        if entry.name in ("..data", stamp):
            continue
        if entry.name.startswith(".."):
            shutil.rmtree(entry, ignore_errors=True) if not entry.is_symlink() else entry.unlink()
        elif entry.name not in tops:
            entry.unlink()
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")


def _decoded(obj: Mapping[str, Any], kind: str) -> dict[str, bytes]:
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def _key_files(
    kind: str, obj: Mapping[str, Any] | None, source: Mapping[str, Any], default_mode: int, label: str
) -> dict[str, tuple[bytes, int]]:
    if obj is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f'{label}: {kind.lower()} "{source.get("name") or source.get("secretName")}" not found')
    data = _decoded(obj, kind)
    items = source.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = item["key"]
        if key not in data:
            if source.get("optional"):
                continue
            raise VolumeError(
                f"{label}: key {key!r} not found in {kind} {source.get('name') or source.get('secretName')}"
            )
        files[item["path"]] = (data[key], int(item.get("mode", default_mode)))
    return files


def _downward_files(
    pod: Mapping[str, Any], items: list[dict[str, Any]], default_mode: int, allocatable: Mapping[str, str]
) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        mode = int(item.get("mode", default_mode))
        if "fieldRef" in item:
            value = envmod.field_value(pod, str(item["fieldRef"]["fieldPath"]), None, "")
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            containers = {c["name"]: c for c in pod.get("spec", {}).get("containers", [])}
            value = envmod.resource_value(containers.get(ref.get("containerName", "")), ref, allocatable)
        else:
            continue
        files[item["path"]] = (value.encode(), mode)
    return files


class PodVolumes:
    """The volumes of one pod on this node."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        pod_dir: Path,
        fetcher: Fetcher,
        images: ImageStore,
        allocatable: Mapping[str, str],
        now: Any = None,
        node_root: Path | None = None,
    ) -> None:
        self.pod = pod
        self.pod_dir = pod_dir
        #: The node's directory, standing in for the kubelet's (``pod_dir`` is ``<root>/pods/<uid>``).
        self.node_root = node_root if node_root is not None else pod_dir.parent.parent
        self.fetcher = fetcher
        self.images = images
        self.allocatable = allocatable
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.volumes: dict[str, Volume] = {}
        self.token_expiry: dt.datetime | None = None
        self._tmpfs: list[Path] = []

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def _fs_group(self) -> int | None:
        group = (self.pod.get("spec", {}).get("securityContext") or {}).get("fsGroup")
        return int(group) if group is not None else None

    async def setup(self) -> None:
        """Create every volume (idempotent: a retry after a VolumeError rewrites what it must)."""
        for spec in self.pod.get("spec", {}).get("volumes") or []:
            name = str(spec["name"])
            kind = next((k for k in spec if k != "name"), "")
            if kind in UNSUPPORTED:
                raise VolumeError(f"volume {name}: {kind} volumes are not supported by the devcluster node agent")
            if kind == "hostPath":
                path = node_path(Path(str(spec["hostPath"]["path"])), self.node_root)
                self.volumes[name] = Volume(name, kind, _host_path(name, path, spec["hostPath"]), spec)
            elif kind == "image":
                self.volumes[name] = Volume(name, kind, None, spec)
            elif kind in PLUGIN_DIRS:
                path = self.pod_dir / "volumes" / PLUGIN_DIRS[kind] / name
                if kind == "emptyDir":
                    self._empty_dir(path, spec["emptyDir"] or {})
                else:
                    await self._write(kind, path, spec[kind] or {}, name)
                self.volumes[name] = Volume(name, kind, path, spec)
            else:
                raise VolumeError(f"volume {name}: unknown or unsupported volume type {kind!r}")

    def _empty_dir(self, path: Path, spec: Mapping[str, Any]) -> None:
        if path.is_dir():
            return
        path.mkdir(parents=True)
        if spec.get("medium") == "Memory":
            size = spec.get("sizeLimit")
            options = "mode=0777"
            if size is not None:
                try:
                    options += f",size={Quantity(size).as_int()}"
                except QuantityError as exc:
                    raise VolumeError(f"emptyDir sizeLimit: {exc}") from exc
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise VolumeError(f"mounting tmpfs for {path.name}: {result.stderr.strip()}")
            self._tmpfs.append(path)
        path.chmod(0o777)
        group = self._fs_group()
        if group is not None:
            os.chown(path, -1, group)
            path.chmod(0o777 | stat.S_ISGID)

    async def _write(self, kind: str, path: Path, spec: Mapping[str, Any], name: str) -> None:
        default_mode = int(spec.get("defaultMode", 0o644))
        label = f"volume {name}"
        files: dict[str, tuple[bytes, int]]
        if kind == "configMap":
            obj = await self.fetcher.configmap(self.namespace, str(spec.get("name", "")))
            files = _key_files("ConfigMap", obj, spec, default_mode, label)
        elif kind == "secret":
            obj = await self.fetcher.secret(self.namespace, str(spec.get("secretName", "")))
            files = _key_files("Secret", obj, spec, default_mode, label)
        elif kind == "downwardAPI":
            files = _downward_files(self.pod, spec.get("items") or [], default_mode, self.allocatable)
        else:
            files = await self._projected(spec, default_mode, label)
        write_projection(path, files, self._fs_group())

    async def _projected(self, spec: Mapping[str, Any], default_mode: int, label: str) -> dict[str, tuple[bytes, int]]:
        files: dict[str, tuple[bytes, int]] = {}
        for source in spec.get("sources") or []:
            if "configMap" in source:
                src = source["configMap"]
                obj = await self.fetcher.configmap(self.namespace, str(src.get("name", "")))
                files.update(_key_files("ConfigMap", obj, src, default_mode, label))
            elif "secret" in source:
                src = source["secret"]
                obj = await self.fetcher.secret(self.namespace, str(src.get("name", "")))
                files.update(_key_files("Secret", obj, src, default_mode, label))
            elif "downwardAPI" in source:
                files.update(
                    _downward_files(self.pod, source["downwardAPI"].get("items") or [], default_mode, self.allocatable)
                )
            elif "serviceAccountToken" in source:
                src = source["serviceAccountToken"]
                seconds = int(src.get("expirationSeconds", DEFAULT_TOKEN_SECONDS))
                sa = str(self.pod["spec"].get("serviceAccountName") or "default")
                token, expiry = await self.fetcher.token(self.namespace, sa, src.get("audience"), seconds, self.pod)
                now = self._now()
                refresh_at = now + (expiry - now) * 0.8
                if self.token_expiry is None or refresh_at < self.token_expiry:
                    self.token_expiry = refresh_at
                files[str(src["path"])] = (token.encode(), default_mode)
            else:
                kind = next(iter(source), "?")
                raise VolumeError(f"{label}: projected source {kind} is not supported by the devcluster node agent")
        return files

    async def refresh_tokens(self) -> None:
        """Rewrite every projected volume that holds a service-account token (new tokens, same paths)."""
        self.token_expiry = None
        for vol in self.volumes.values():
            sources = vol.spec.get("projected", {}).get("sources") or [] if vol.kind == "projected" else []
            if any("serviceAccountToken" in s for s in sources):
                assert vol.path is not None
                await self._write("projected", vol.path, vol.spec["projected"], vol.name)

    def mounts(self, container: Mapping[str, Any], env: Mapping[str, str]) -> list[dict[str, Any]]:
        """The bind mounts for ``container``; raises ImageNotPresentError for an image volume not in the store."""
        result = []
        for vm in container.get("volumeMounts") or []:
            vol = self.volumes.get(vm["name"])
            if vol is None:
                raise VolumeError(f"volumeMount {vm['name']} refers to no volume of the pod")
            source = vol.path
            if vol.kind == "image":
                reference = str(vol.spec["image"].get("reference", ""))
                try:
                    found = self.images.lookup(reference)
                except ImageStoreError as exc:
                    raise VolumeError(f"volume {vol.name}: {exc}") from exc
                if found is None:
                    raise ImageNotPresentError(reference, self.images.dir)
                source = found.rootfs
            assert source is not None
            sub_path = vm.get("subPath") or (envmod.expand(vm["subPathExpr"], env) if vm.get("subPathExpr") else None)
            result.append(
                {
                    "source": str(source),
                    "target": str(vm["mountPath"]),
                    "readonly": bool(vm.get("readOnly")) or vol.kind in READ_ONLY_KINDS,
                    "sub_path": sub_path,
                    "nosuid": vol.kind == "image",
                }
            )
        return result

    def teardown(self) -> None:
        """Unmount the tmpfs emptyDirs this pod mounted on the host."""
        for path in self._tmpfs:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        self._tmpfs.clear()


def node_path(path: Path, node_root: Path) -> Path:
    """Where a hostPath is on this machine: under ``node_root`` if it names the kubelet's directory."""
    normal = Path(os.path.normpath(path))
    if normal == KUBELET_DIR or KUBELET_DIR in normal.parents:
        return node_root / normal.relative_to(KUBELET_DIR)
    return path


def _host_path(name: str, path: Path, spec: Mapping[str, Any]) -> Path:
    kind = spec.get("type") or ""
    checks = {
        "Directory": path.is_dir,
        "File": path.is_file,
        "Socket": path.is_socket,
        "CharDevice": path.is_char_device,
        "BlockDevice": path.is_block_device,
    }
    if kind == "DirectoryOrCreate" and not path.exists():
        path.mkdir(mode=0o755, parents=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif kind in checks and not checks[kind]():
        raise VolumeError(f"volume {name}: hostPath type check failed: {path} is not a {kind}")
    return path
