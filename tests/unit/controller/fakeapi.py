"""An in-memory apiserver with the semantics the controller relies on, to run plans without a cluster:
names unique per namespace (AlreadyExists), resourceVersion and UID preconditions (Conflict),
finalizers holding deletion, the status subresource, merge and JSON patches, Events."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch

from podvirt_common.kube import (
    AlreadyExistsError,
    ConflictError,
    InvalidError,
    NotFoundError,
    Resource,
    format_time,
)

Obj = dict[str, Any]


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


class FakeApi:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.events: list[Obj] = []
        self.writes: list[tuple[str, str]] = []
        self.clock = clock
        self._uids = itertools.count(1)
        self._versions = itertools.count(1)
        self.fail_next: dict[str, Exception] = {}

    # -- helpers for tests ------------------------------------------------------------------------

    def put(self, resource: Resource, obj: Obj) -> Obj:
        """Store an object as if a user had created it."""
        return self.create(resource, obj, obj["metadata"].get("namespace"), record=False)

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        try:
            return copy.deepcopy(self.objects[(resource.plural, namespace or "", name)])
        except KeyError:
            raise NotFoundError(404, "NotFound", f"{resource.plural} {name} not found") from None

    def find(self, resource: Resource, name: str, namespace: str = "default") -> Obj | None:
        obj = self.objects.get((resource.plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, resource: Resource) -> list[Obj]:
        return [copy.deepcopy(o) for (plural, _, _), o in sorted(self.objects.items()) if plural == resource.plural]

    def set_status(self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str = "default") -> None:
        """Another component (handler, kubelet) writes status."""
        obj = self.objects[(resource.plural, namespace, name)]
        obj["status"] = _merge(obj.get("status") or {}, status)
        self._bump(obj)

    def _bump(self, obj: Obj) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def _check_failure(self, verb: str) -> None:
        exc = self.fail_next.pop(verb, None)
        if exc is not None:
            raise exc

    # -- the writer interface of podvirt_common.kube.Kube -----------------------------------------

    def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None, record: bool = True
    ) -> Obj:
        self._check_failure("create")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        ns = namespace or meta.get("namespace") or ""
        key = (resource.plural, ns, meta["name"])
        if key in self.objects:
            raise AlreadyExistsError(409, "AlreadyExists", f"{resource.plural} {meta['name']} already exists")
        meta.update(namespace=ns, uid=meta.get("uid") or f"uid-{next(self._uids)}")
        meta.setdefault("creationTimestamp", format_time(self.clock()))
        meta.setdefault("generation", 1)
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        self._bump(obj)
        self.objects[key] = obj
        if record:
            self.writes.append(("create", resource.plural))
        return copy.deepcopy(obj)

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        grace_period_seconds: int | None = None,
        propagation: str | None = None,
    ) -> bool:
        self._check_failure("delete")
        key = (resource.plural, namespace or "", name)
        obj = self.objects.get(key)
        if obj is None:
            return False
        self.writes.append(("delete", resource.plural))
        if uid is not None and obj["metadata"]["uid"] != uid:
            raise ConflictError(409, "Conflict", "Precondition failed: UID in precondition does not match")
        if resource.plural == "pods" and obj["spec"].get("nodeName") and grace_period_seconds != 0:
            # A bound pod stays until its kubelet confirms, at the latest after its grace period.
            if not obj["metadata"].get("deletionTimestamp"):
                grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
                if grace_period_seconds is not None:
                    grace = grace_period_seconds
                deadline = self.clock() + timedelta(seconds=grace)
                obj["metadata"].update(deletionTimestamp=format_time(deadline), deletionGracePeriodSeconds=grace)
                self._bump(obj)
        elif obj["metadata"].get("finalizers"):
            obj["metadata"].setdefault("deletionTimestamp", format_time(self.clock()))
            if grace_period_seconds is not None:
                obj["metadata"]["deletionGracePeriodSeconds"] = grace_period_seconds
            self._bump(obj)
        else:
            del self.objects[key]
        return True

    def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        self._check_failure("patch")
        obj = self._existing(resource, name, namespace)
        if resource_version is not None and obj["metadata"]["resourceVersion"] != resource_version:
            raise ConflictError(409, "Conflict", "the object has been modified")
        self.writes.append(("patch", f"{resource.plural}/{subresource}" if subresource else resource.plural))
        patch = dict(patch)
        if subresource == "status":
            obj["status"] = _merge(obj.get("status") or {}, patch.get("status") or {})
        else:
            patch.pop("status", None)
            patch["metadata"] = {k: v for k, v in (patch.get("metadata") or {}).items() if k != "resourceVersion"}
            updated = _merge(obj, patch)
            obj.clear()
            obj.update(updated)
        self._bump(obj)
        self._maybe_finish(resource, obj)
        return copy.deepcopy(obj)

    def json_patch(
        self,
        resource: Resource,
        name: str,
        operations: Sequence[Mapping[str, Any]],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        self._check_failure("patch")
        obj = self._existing(resource, name, namespace)
        try:
            updated = jsonpatch.apply_patch(obj, [dict(op) for op in operations])
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
            raise InvalidError(422, "Invalid", str(exc)) from None
        self.writes.append(("patch", resource.plural))
        obj.clear()
        obj.update(updated)
        self._bump(obj)
        self._maybe_finish(resource, obj)
        return copy.deepcopy(obj)

    def create_event(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False, component: str = ""
    ) -> Obj:
        event = {
            "involved": f"{involved.get('kind')}/{involved['metadata']['name']}",
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
        }
        self.events.append(event)
        return event

    def _existing(self, resource: Resource, name: str, namespace: str | None) -> Obj:
        obj = self.objects.get((resource.plural, namespace or "", name))
        if obj is None:
            raise NotFoundError(404, "NotFound", f"{resource.plural} {name} not found")
        return obj

    def _maybe_finish(self, resource: Resource, obj: Obj) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[(resource.plural, meta["namespace"], meta["name"])]

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events]
