"""The launcher pod of a VMI: the one place that knows how a VMI becomes a Pod.

The pod, and what the launcher and the node handler may rely on:

- name ``virt-launcher-<vmi>-<5 chars from the VMI UID>``; labels ``kubevirt.io=virt-launcher``,
  ``kubevirt.io/created-by=<VMI UID>``, ``vm.kubevirt.io/name=<VMI>`` and the VMI's own labels;
  annotation ``kubevirt.io/domain=<VMI>``; controlled by the VMI (garbage-collected with it).
- one container, ``compute``, running ``virt-launcher --sockets-dir S --private-dir P --volumes-dir V``
  (``virt_launcher.cli``); without ``--vmi`` the launcher waits for the handler to send the VMI.
- ``S`` is the emptyDir volume named ``sockets`` (the handler finds it on the node as
  ``<kubelet>/pods/<pod UID>/volumes/kubernetes.io~empty-dir/sockets``); ``P`` is the emptyDir
  ``private``; each VMI volume is mounted at ``V/<volume name>`` (``virt_launcher.layout``):
  containerDisk as a Kubernetes image volume, persistentVolumeClaim / dataVolume / ephemeral as the
  claim (a block-mode claim as a device at that path), configMap and secret as themselves,
  serviceAccount as a projected token, hostDisk as the hostPath of its directory, the Secrets of a
  cloud-init ``userDataSecretRef`` / ``networkDataSecretRef`` at ``V/<volume>/userdata-secret`` and
  ``.../networkdata-secret``, and a kernelBoot container at ``V/.kernel-boot``.
  emptyDisk and inline cloud-init need no pod volume: the launcher makes them in ``P``.
- resources: :mod:`virt_controller.overhead`; node selector, affinity, tolerations, topology spread,
  scheduler, priority class, DNS, hostname and subdomain from the VMI;
  ``terminationGracePeriodSeconds`` = the VMI's (default 30) + 15 s for the launcher to tear down.
- security: the Pod Security "restricted" level — non-root UID/GID 107, fsGroup 107, no privilege
  escalation, every capability dropped, seccomp RuntimeDefault (hostDisk needs a hostPath volume,
  which that level refuses).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podvirt_common.kube import owner_reference

from . import names, objects
from .overhead import DEFAULT_CPU_ALLOCATION_RATIO, ResourceError, pod_resources

Obj = dict[str, Any]

DEFAULT_VMI_GRACE_SECONDS = 30
LAUNCHER_EXTRA_GRACE_SECONDS = 15
QEMU_UID = 107
PRIVATE_VOLUME = "private"
KERNEL_BOOT_ENTRY = ".kernel-boot"
_RESERVED_VOLUMES = {names.SOCKETS_VOLUME, PRIVATE_VOLUME, "kernel-boot"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class PodSpecError(ValueError):
    """The VMI cannot be turned into a launcher pod; the message names the field and what to change."""


@dataclass(frozen=True)
class LauncherSettings:
    """Cluster-wide choices for launcher pods (virt-controller's command-line options)."""

    image: str = "podvirt/virt-launcher:latest"
    command: tuple[str, ...] = ("virt-launcher",)
    sockets_dir: str = "/var/run/podvirt/sockets"
    private_dir: str = "/var/run/podvirt/private"
    volumes_dir: str = "/var/run/podvirt/volumes"
    emulation: bool = False
    #: vCPUs per core in the CPU request of a VMI that asks for none (see :mod:`overhead`).
    cpu_allocation_ratio: int = DEFAULT_CPU_ALLOCATION_RATIO
    node_selector: Mapping[str, str] = field(default_factory=dict)
    log_format: str = "json"


def _pod_volume_name(volume: str, part: str = "") -> str:
    """A pod volume name for a VMI volume (or a part of one): the same name when it is free and fits."""
    wanted = f"{volume}-{part}" if part else volume
    if _DNS_LABEL.match(wanted) and wanted not in _RESERVED_VOLUMES:
        return wanted
    return f"vol-{hashlib.sha256(wanted.encode()).hexdigest()[:16]}"


def _claim_volume(pod_name: str, claim: str, read_only: bool) -> Obj:
    return {
        "name": pod_name,
        "persistentVolumeClaim": {"claimName": claim, **({"readOnly": True} if read_only else {})},
    }


def _volumes(
    vmi_spec: Mapping[str, Any], settings: LauncherSettings, pvcs: Mapping[str, Mapping[str, Any]] | None
) -> tuple[list[Obj], list[Obj], list[Obj], list[Obj], str | None]:
    """Pod volumes, mounts, devices, image pull secrets, and the service account (if a volume asks for one)."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    devices: list[Obj] = []
    pull_secrets: list[Obj] = []
    service_account: str | None = None

    def mount(pod_volume: str, path: str, read_only: bool = False) -> None:
        mounts.append({"name": pod_volume, "mountPath": path, **({"readOnly": True} if read_only else {})})

    for index, volume in enumerate(vmi_spec.get("volumes") or []):
        vname = str(volume.get("name") or "")
        where = f"spec.volumes[{index}]"
        entry = posixpath.join(settings.volumes_dir, vname)
        pod_volume = _pod_volume_name(vname)
        if "containerDisk" in volume:
            disk = volume["containerDisk"] or {}
            if not disk.get("image"):
                raise PodSpecError(f"{where}.containerDisk.image is empty: name the image that holds the disk")
            volumes.append(
                {
                    "name": pod_volume,
                    "image": {"reference": disk["image"], "pullPolicy": disk.get("imagePullPolicy") or "IfNotPresent"},
                }
            )
            mount(pod_volume, entry, read_only=True)
            if disk.get("imagePullSecret"):
                pull_secrets.append({"name": disk["imagePullSecret"]})
        elif any(k in volume for k in ("persistentVolumeClaim", "dataVolume", "ephemeral")):
            if "persistentVolumeClaim" in volume:
                source = volume["persistentVolumeClaim"] or {}
                claim, read_only = source.get("claimName"), bool(source.get("readOnly"))
            elif "dataVolume" in volume:
                claim, read_only = (volume["dataVolume"] or {}).get("name"), False
            else:
                source = (volume["ephemeral"] or {}).get("persistentVolumeClaim") or {}
                claim, read_only = source.get("claimName"), True
            if not claim:
                raise PodSpecError(f"{where} names no claim")
            volumes.append(_claim_volume(pod_volume, str(claim), read_only))
            block = ((pvcs or {}).get(str(claim)) or {}).get("spec", {}).get("volumeMode") == "Block"
            if block:
                devices.append({"name": pod_volume, "devicePath": entry})
            else:
                mount(pod_volume, entry, read_only=read_only)
        elif "configMap" in volume:
            source = volume["configMap"] or {}
            volumes.append({"name": pod_volume, "configMap": _optional({"name": source.get("name")}, source)})
            mount(pod_volume, entry, read_only=True)
        elif "secret" in volume:
            source = volume["secret"] or {}
            volumes.append({"name": pod_volume, "secret": _optional({"secretName": source.get("secretName")}, source)})
            mount(pod_volume, entry, read_only=True)
        elif "serviceAccount" in volume:
            service_account = (volume["serviceAccount"] or {}).get("serviceAccountName")
            volumes.append({"name": pod_volume, "projected": {"sources": _service_account_sources()}})
            mount(pod_volume, entry, read_only=True)
        elif "hostDisk" in volume:
            source = volume["hostDisk"] or {}
            path = str(source.get("path") or "")
            if not path.startswith("/"):
                raise PodSpecError(f"{where}.hostDisk.path must be an absolute path on the node, not {path!r}")
            kind = "DirectoryOrCreate" if source.get("type") == "DiskOrCreate" else "Directory"
            volumes.append({"name": pod_volume, "hostPath": {"path": posixpath.dirname(path), "type": kind}})
            mount(pod_volume, entry)
        for key in ("cloudInitNoCloud", "cloudInitConfigDrive"):
            source = volume.get(key) or {}
            for ref_key, part in (
                ("userDataSecretRef", "userdata-secret"),
                ("networkDataSecretRef", "networkdata-secret"),
            ):
                ref = source.get(ref_key)
                if ref:
                    secret_volume = _pod_volume_name(vname, part)
                    volumes.append({"name": secret_volume, "secret": {"secretName": ref.get("name")}})
                    mount(secret_volume, posixpath.join(entry, part), read_only=True)

    kernel_boot = ((vmi_spec.get("domain") or {}).get("firmware") or {}).get("kernelBoot") or {}
    container = kernel_boot.get("container") or {}
    if container.get("image"):
        volumes.append(
            {
                "name": "kernel-boot",
                "image": {
                    "reference": container["image"],
                    "pullPolicy": container.get("imagePullPolicy") or "IfNotPresent",
                },
            }
        )
        mount("kernel-boot", posixpath.join(settings.volumes_dir, KERNEL_BOOT_ENTRY), read_only=True)
        if container.get("imagePullSecret"):
            pull_secrets.append({"name": container["imagePullSecret"]})
    return volumes, mounts, devices, pull_secrets, service_account


def _optional(body: Obj, source: Mapping[str, Any]) -> Obj:
    if source.get("optional") is not None:
        body["optional"] = bool(source["optional"])
    return body


def _service_account_sources() -> list[Obj]:
    return [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]


def _ports(vmi_spec: Mapping[str, Any]) -> list[Obj]:
    ports: list[Obj] = []
    for iface in ((vmi_spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []:
        for port in iface.get("ports") or []:
            entry: Obj = {"containerPort": port.get("port"), "protocol": port.get("protocol") or "TCP"}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
    return ports


def termination_grace_seconds(vmi: Mapping[str, Any]) -> int:
    grace = objects.spec(vmi).get("terminationGracePeriodSeconds")
    return int(grace if grace is not None else DEFAULT_VMI_GRACE_SECONDS) + LAUNCHER_EXTRA_GRACE_SECONDS


#: Devices the launcher needs, requested as the extended resources KubeVirt's device plugins serve.
TUN_RESOURCE = "devices.kubevirt.io/tun"
KVM_RESOURCE = "devices.kubevirt.io/kvm"


def _with_devices(requests: Obj, limits: Obj | None, spec: Mapping[str, Any], emulation: bool) -> Obj:
    """Pod resources plus one tun device when the VMI is on the pod network (the handler's tap), and
    KVM unless the guest runs under emulation."""
    devices: dict[str, str] = {}
    pod_networks = {n.get("name") for n in spec.get("networks") or [] if "pod" in n}
    interfaces = (spec.get("domain") or {}).get("devices", {}).get("interfaces") or []
    if any(i.get("name") in pod_networks for i in interfaces):
        devices[TUN_RESOURCE] = "1"
    if not emulation:
        devices[KVM_RESOURCE] = "1"
    if not devices:
        return {"requests": requests, **({"limits": limits} if limits else {})}
    # Extended resources cannot be overcommitted: request and limit are the same.
    return {"requests": {**requests, **devices}, "limits": {**(limits or {}), **devices}}


def build_launcher_pod(
    vmi: Mapping[str, Any],
    settings: LauncherSettings | None = None,
    pvcs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Obj:
    """The launcher pod for ``vmi``. ``pvcs`` (name -> claim) tells block-mode claims apart.
    Raises :class:`PodSpecError` naming the field when the VMI cannot run in a pod."""
    settings = settings or LauncherSettings()
    spec = objects.spec(vmi)
    vmi_name, vmi_uid = objects.name(vmi), objects.uid(vmi)
    try:
        resources = pod_resources(
            spec, emulation=settings.emulation, cpu_allocation_ratio=settings.cpu_allocation_ratio
        )
    except ResourceError as exc:
        raise PodSpecError(str(exc)) from None
    volumes, mounts, devices, pull_secrets, service_account = _volumes(spec, settings, pvcs)

    labels = {k: v for k, v in objects.labels(vmi).items() if k != names.NODE_NAME_LABEL}
    labels.update({names.APP_LABEL: names.LAUNCHER_APP, names.CREATED_BY_LABEL: vmi_uid})
    if names.fits_label_value(vmi_name):
        labels[names.VM_NAME_LABEL] = vmi_name

    args = [
        f"--sockets-dir={settings.sockets_dir}",
        f"--private-dir={settings.private_dir}",
        f"--volumes-dir={settings.volumes_dir}",
        f"--log-format={settings.log_format}",
    ]
    if settings.emulation:
        args.append("--emulation=always")
    container: Obj = {
        "name": "compute",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(settings.command),
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "PODVIRT_VMI_NAME", "value": vmi_name},
            {"name": "PODVIRT_VMI_UID", "value": vmi_uid},
        ],
        "resources": _with_devices(resources.requests, resources.limits, spec, settings.emulation),
        "volumeMounts": [
            {"name": names.SOCKETS_VOLUME, "mountPath": settings.sockets_dir},
            {"name": PRIVATE_VOLUME, "mountPath": settings.private_dir},
            *mounts,
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": QEMU_UID,
            "runAsGroup": QEMU_UID,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if devices:
        container["volumeDevices"] = devices
    ports = _ports(spec)
    if ports:
        container["ports"] = ports

    pod_spec: Obj = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(vmi),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": QEMU_UID,
            "runAsGroup": QEMU_UID,
            "fsGroup": QEMU_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": names.SOCKETS_VOLUME, "emptyDir": {}}, {"name": PRIVATE_VOLUME, "emptyDir": {}}, *volumes],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    hostname = spec.get("hostname") or vmi_name
    if _DNS_LABEL.match(hostname):
        pod_spec["hostname"] = hostname
    node_selector = {**settings.node_selector, **(spec.get("nodeSelector") or {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    for key in ("affinity", "tolerations", "topologySpreadConstraints", "schedulerName", "priorityClassName",
                "dnsPolicy", "dnsConfig", "subdomain"):  # fmt: skip
        if spec.get(key):
            pod_spec[key] = spec[key]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = list({s["name"]: s for s in pull_secrets}.values())

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.launcher_pod_name(vmi_name, vmi_uid),
            "namespace": objects.namespace(vmi),
            "labels": labels,
            "annotations": {
                names.DOMAIN_ANNOTATION: vmi_name,
                "kubectl.kubernetes.io/default-container": "compute",
            },
            "ownerReferences": [owner_reference(vmi)],
        },
        "spec": pod_spec,
    }


def referenced_claims(vmi_spec: Mapping[str, Any]) -> list[str]:
    """Names of the PersistentVolumeClaims a VMI's volumes use (dataVolumes use the claim of their name)."""
    claims: list[str] = []
    for volume in vmi_spec.get("volumes") or []:
        if volume.get("persistentVolumeClaim"):
            claims.append(str(volume["persistentVolumeClaim"].get("claimName")))
        elif volume.get("dataVolume"):
            claims.append(str(volume["dataVolume"].get("name")))
        elif (volume.get("ephemeral") or {}).get("persistentVolumeClaim"):
            claims.append(str(volume["ephemeral"]["persistentVolumeClaim"].get("claimName")))
    return claims
