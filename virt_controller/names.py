"""The names, labels, annotations and finalizers virt-controller puts on objects, and how it derives names.

Names of the objects the controller creates are derived from the owner's UID, never drawn at random:
a create that is repeated (after a crash, or with a cache that has not seen the first create yet)
asks for the same name and gets AlreadyExists instead of a second object.
"""

from __future__ import annotations

import hashlib

#: Label and value of every launcher pod (KubeVirt's).
APP_LABEL = "kubevirt.io"
LAUNCHER_APP = "virt-launcher"
#: Launcher pod label: UID of the VMI the pod runs (KubeVirt's).
CREATED_BY_LABEL = "kubevirt.io/created-by"
#: Launcher pod label: name of the VMI (KubeVirt's); only set when it fits a label value.
VM_NAME_LABEL = "vm.kubevirt.io/name"
#: VMI label the node handler selects on once the VMI is scheduled (KubeVirt's).
NODE_NAME_LABEL = "kubevirt.io/nodeName"
#: Launcher pod annotation naming the libvirt domain (KubeVirt's).
DOMAIN_ANNOTATION = "kubevirt.io/domain"
#: VMI annotation: generation of the VM the VMI was created from (KubeVirt's).
VM_GENERATION_ANNOTATION = "kubevirt.io/vm-generation"
#: VMI annotation: digest of the VM template the VMI was created from (a template change => RestartRequired).
TEMPLATE_HASH_ANNOTATION = "podvirt.io/vm-template-hash"
#: Node annotation: when the node's virt-handler last said it is alive (KubeVirt's; RFC 3339).
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"
#: Reason of a VMI failed because its node stopped answering (KubeVirt's).
NODE_UNRESPONSIVE_REASON = "NodeUnresponsive"
#: Finalizer the VMI controller keeps on every VMI until its launcher pods are gone.
VMI_FINALIZER = "kubevirt.io/foregroundDeleteVirtualMachine"
#: Name of the pod volume that holds the sockets dir (the node handler finds it under this name).
SOCKETS_VOLUME = "sockets"

# Kubernetes' own alphabet for generated name suffixes: no vowels, no look-alike characters.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_MAX_NAME = 253
_MAX_LABEL_VALUE = 63


def suffix(seed: str, length: int = 5) -> str:
    """A random-looking but deterministic name suffix derived from ``seed``."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return "".join(chars)


def launcher_pod_name(vmi_name: str, vmi_uid: str) -> str:
    """``virt-launcher-<vmi>-<5 chars>``: one name per VMI, so its pod can never be created twice."""
    prefix = "virt-launcher-"
    room = _MAX_NAME - len(prefix) - 6
    return f"{prefix}{vmi_name[:room].rstrip('-.')}-{suffix(vmi_uid)}"


def replica_vmi_name(replica_set_name: str, replica_set_uid: str, slot: int) -> str:
    """Name of the VMI in ``slot`` (0, 1, 2, ...) of a VMI replica set."""
    room = _MAX_NAME - 6
    return f"{replica_set_name[:room].rstrip('-.')}-{suffix(f'{replica_set_uid}/{slot}')}"


def fits_label_value(value: str) -> bool:
    return len(value) <= _MAX_LABEL_VALUE
