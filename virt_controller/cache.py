"""The controller's in-memory view of the cluster: the objects it watches, slimmed to what it reads,
with the lookups the reconciles need (pods of a VMI, VMIs of a namespace, claims of a namespace).

Fed from watch events (and from the apiserver's answers to the controller's own writes); an update
never replaces a newer version of an object with an older one.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from . import names, objects

Obj = dict[str, Any]
_DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _newer(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    if old is None or objects.uid(old) != objects.uid(new):
        return True
    before, after = objects.meta(old).get("resourceVersion"), objects.meta(new).get("resourceVersion")
    try:
        return int(str(after)) >= int(str(before))
    except (TypeError, ValueError):
        return True  # resourceVersions are opaque in principle: trust the latest event


def slim_meta(obj: Mapping[str, Any], keep_owners: bool = True) -> Obj:
    meta = {k: v for k, v in objects.meta(obj).items() if k != "managedFields"}
    if not keep_owners:
        meta.pop("ownerReferences", None)
    annotations = meta.get("annotations")
    if annotations and any(a in annotations for a in _DROP_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _DROP_ANNOTATIONS}
    return meta


def slim(obj: Mapping[str, Any]) -> Obj:
    """A VM, VMI or replica set without managedFields and kubectl's last-applied copy."""
    return {**obj, "metadata": slim_meta(obj)}


def slim_pod(pod: Mapping[str, Any]) -> Obj:
    """Of a launcher pod, the fields the VMI controller reads."""
    status = objects.status(pod)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": slim_meta(pod, keep_owners=False),
        "spec": {"nodeName": objects.spec(pod).get("nodeName")},
        "status": {
            k: status[k]
            for k in (
                "phase",
                "conditions",
                "containerStatuses",
                "initContainerStatuses",
                "qosClass",
                "reason",
                "message",
            )
            if k in status
        },
    }


def slim_claim(claim: Mapping[str, Any]) -> Obj:
    return {
        "metadata": {k: objects.meta(claim).get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
        "spec": {"volumeMode": objects.spec(claim).get("volumeMode")},
        "status": {"phase": objects.status(claim).get("phase")},
    }


class Store:
    """Objects of one kind by ``namespace/name``, with a per-namespace index.

    Deleted objects leave a tombstone (their UID) for a while, so that a late copy — the apiserver's
    answer to a write that raced with the deletion — cannot bring them back.
    """

    TOMBSTONES = 4096

    def __init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._by_namespace: dict[str, set[str]] = defaultdict(set)
        self._tombstones: OrderedDict[str, None] = OrderedDict()

    def upsert(self, obj: Obj) -> tuple[Obj | None, bool]:
        """Store ``obj`` unless an even newer version is there or it was deleted; returns (previous, stored)."""
        key = objects.key(obj)
        old = self._items.get(key)
        if objects.uid(obj) in self._tombstones or not _newer(old, obj):
            return old, False
        self._items[key] = obj
        self._by_namespace[objects.namespace(obj)].add(key)
        return old, True

    def remove(self, obj: Mapping[str, Any]) -> Obj | None:
        key = objects.key(obj)
        if objects.uid(obj):
            self._tombstones[objects.uid(obj)] = None
            while len(self._tombstones) > self.TOMBSTONES:
                self._tombstones.popitem(last=False)
        old = self._items.get(key)
        if old is not None and objects.uid(old) not in ("", objects.uid(obj)):
            return None  # a successor of the same name is already stored
        self._items.pop(key, None)
        keys = self._by_namespace.get(objects.namespace(obj))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_namespace[objects.namespace(obj)]
        return old

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def in_namespace(self, namespace: str) -> list[Obj]:
        return [self._items[k] for k in self._by_namespace.get(namespace, ())]

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)


class ClusterCache:
    """Everything the controller watches."""

    def __init__(self) -> None:
        self.vms = Store()
        self.vmis = Store()
        self.replica_sets = Store()
        self.pods = Store()
        self.claims = Store()
        self._vmi_by_uid: dict[str, str] = {}
        self._pods_by_vmi: dict[str, set[str]] = defaultdict(set)

    # -- VMIs ------------------------------------------------------------------------------------

    def upsert_vmi(self, vmi: Obj) -> tuple[Obj | None, bool]:
        previous, stored = self.vmis.upsert(vmi)
        if stored:
            self._vmi_by_uid[objects.uid(vmi)] = objects.key(vmi)
        return previous, stored

    def remove_vmi(self, vmi: Mapping[str, Any]) -> Obj | None:
        self._vmi_by_uid.pop(objects.uid(vmi), None)
        return self.vmis.remove(vmi)

    def vmi_key_by_uid(self, uid: str) -> str | None:
        return self._vmi_by_uid.get(uid)

    # -- pods ------------------------------------------------------------------------------------

    def upsert_pod(self, pod: Obj) -> tuple[Obj | None, bool]:
        previous, stored = self.pods.upsert(pod)
        if stored:
            owner = objects.labels(pod).get(names.CREATED_BY_LABEL)
            if owner:
                self._pods_by_vmi[owner].add(objects.key(pod))
        return previous, stored

    def remove_pod(self, pod: Mapping[str, Any]) -> Obj | None:
        old = self.pods.remove(pod)
        owner = objects.labels(pod).get(names.CREATED_BY_LABEL)
        if owner and owner in self._pods_by_vmi:
            self._pods_by_vmi[owner].discard(objects.key(pod))
            if not self._pods_by_vmi[owner]:
                del self._pods_by_vmi[owner]
        return old

    def pods_of(self, vmi_uid: str) -> list[Obj]:
        found = (self.pods.get(k) for k in self._pods_by_vmi.get(vmi_uid, ()))
        return [p for p in found if p is not None and objects.labels(p).get(names.CREATED_BY_LABEL) == vmi_uid]

    # -- claims ----------------------------------------------------------------------------------

    def claims_in(self, namespace: str) -> dict[str, Obj]:
        return {objects.name(c): c for c in self.claims.in_namespace(namespace)}
