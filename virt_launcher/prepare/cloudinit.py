"""cloud-init seeds: NoCloud (label cidata) and ConfigDrive (label config-2) ISOs from the VMI's CloudInitSource."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path, PurePosixPath

from kubevirt_types import CloudInitSource, VirtualMachineInstance
from virt_launcher.errors import InvalidSpecError, VolumeError
from virt_launcher.layout import NETWORKDATA_SECRET_ENTRY, USERDATA_SECRET_ENTRY

from .iso import write_iso
from .safepath import real_directory, regular_file_in, resolve_inside

MAX_SECRET_BYTES = 1 << 20


def _from_secret(mount: Path, keys: tuple[str, ...], field: str) -> str:
    real_directory(mount, field)
    for key in keys:
        if not (mount / key).exists():
            continue
        # Kubernetes' atomic writer makes keys symlinks into a hidden directory of the same mount.
        resolved = resolve_inside(mount, PurePosixPath(key), field)
        st = regular_file_in(resolved.parent, resolved.name, field)
        if st.st_size > MAX_SECRET_BYTES:
            raise VolumeError(f"{mount / key} is larger than {MAX_SECRET_BYTES} bytes", field=field)
        return resolved.read_text()
    raise VolumeError(f"the secret mounted at {mount} has no {' or '.join(keys)} key", field=field)


def _decode(value: str, field: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidSpecError("not valid base64 of UTF-8 text", field=field) from exc


def user_and_network_data(source: CloudInitSource, entry: Path, field: str) -> tuple[str, str | None]:
    if source.user_data is not None:
        user = source.user_data
    elif source.user_data_base64 is not None:
        user = _decode(source.user_data_base64, f"{field}.userDataBase64")
    elif source.user_data_secret_ref is not None:
        user = _from_secret(entry / USERDATA_SECRET_ENTRY, ("userdata", "userData"), f"{field}.userDataSecretRef")
    else:
        user = ""
    network: str | None = None
    if source.network_data is not None:
        network = source.network_data
    elif source.network_data_base64 is not None:
        network = _decode(source.network_data_base64, f"{field}.networkDataBase64")
    elif source.network_data_secret_ref is not None:
        mount = entry / NETWORKDATA_SECRET_ENTRY
        network = _from_secret(mount, ("networkdata", "networkData"), f"{field}.networkDataSecretRef")
    return user, network


def hostname(vmi: VirtualMachineInstance) -> str:
    return vmi.spec.hostname or vmi.metadata.name or "vmi"


def write_nocloud(path: Path, vmi: VirtualMachineInstance, source: CloudInitSource, entry: Path, field: str) -> None:
    user, network = user_and_network_data(source, entry, field)
    instance_id = vmi.metadata.uid or f"{vmi.metadata.namespace}.{vmi.metadata.name}"
    meta = f"instance-id: {json.dumps(instance_id)}\nlocal-hostname: {json.dumps(hostname(vmi))}\n"
    files = {"meta-data": meta.encode(), "user-data": user.encode()}
    if network is not None:
        files["network-config"] = network.encode()
    write_iso(path, "cidata", files, field)


def write_config_drive(
    path: Path, vmi: VirtualMachineInstance, source: CloudInitSource, entry: Path, field: str
) -> None:
    user, network = user_and_network_data(source, entry, field)
    instance_id = vmi.metadata.uid or f"{vmi.metadata.namespace}.{vmi.metadata.name}"
    meta = {"uuid": instance_id, "hostname": hostname(vmi), "name": vmi.metadata.name or "vmi"}
    files = {"openstack/latest/meta_data.json": json.dumps(meta).encode(), "openstack/latest/user_data": user.encode()}
    if network is not None:
        try:
            json.loads(network)
        except ValueError as exc:
            raise InvalidSpecError("ConfigDrive network data must be JSON (network_data.json)", field=field) from exc
        files["openstack/latest/network_data.json"] = network.encode()
    write_iso(path, "config-2", files, field)
