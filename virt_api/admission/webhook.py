"""The admission webhooks: route an AdmissionRequest to the defaults or the rules of its kind.

The only cluster reads (the VMI a migration names, migrations in flight, existing KubeVirt resources,
whether VMIs exist) go through :class:`Lookups`, so the webhooks can be tested without a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from podvirt_common import logs
from virt_api.admission import defaults, kinds
from virt_api.admission.kinds import mapping
from virt_api.admission.review import AdmissionRequest, allowed, denied
from virt_api.fielderrors import invalid_status
from virt_api.status import StatusError, bad_request, status_object

log = logging.getLogger(__name__)

#: resource -> kind, for the kinds podvirt admits.
KINDS = {
    "virtualmachines": "VirtualMachine",
    "virtualmachineinstances": "VirtualMachineInstance",
    "virtualmachineinstancereplicasets": "VirtualMachineInstanceReplicaSet",
    "virtualmachineinstancemigrations": "VirtualMachineInstanceMigration",
    "kubevirts": "KubeVirt",
}

_PATCHERS: dict[str, Callable[[dict[str, Any]], defaults.Patch]] = {
    "virtualmachines": defaults.vm_patch,
    "virtualmachineinstances": defaults.vmi_patch,
    "virtualmachineinstancereplicasets": defaults.vmirs_patch,
    "virtualmachineinstancemigrations": defaults.migration_patch,
}


class Lookups(Protocol):
    """What validation needs to read from the cluster."""

    async def get_vmi(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_migrations(self, namespace: str, vmi_name: str) -> list[dict[str, Any]]: ...

    async def list_kubevirts(self) -> list[dict[str, Any]]: ...

    async def count_vmis(self) -> int: ...


def _check_kind(resource: str, request: AdmissionRequest) -> str:
    kind = KINDS.get(resource)
    if kind is None:
        raise StatusError(404, "NotFound", f"no admission webhook for {resource!r}; one of {', '.join(KINDS)}")
    if request.kind.group != "kubevirt.io" or request.kind.kind != kind:
        got = f"{request.kind.kind}.{request.kind.group}"
        raise bad_request(f"this webhook admits {kind}.kubevirt.io, not {got}: check the webhook's rules")
    return kind


def mutate(resource: str, request: AdmissionRequest) -> dict[str, Any]:
    """The defaults of a created (or, for VMs and replica sets, updated) object, as a JSON patch."""
    _check_kind(resource, request)
    patcher = _PATCHERS.get(resource)
    obj = without_status(request.object)
    if patcher is None or obj is None or request.operation not in ("CREATE", "UPDATE"):
        return allowed(request.uid)
    if resource in ("virtualmachineinstances", "virtualmachineinstancemigrations") and request.operation != "CREATE":
        return allowed(request.uid)  # their specs are immutable; defaults were applied at creation
    return allowed(request.uid, patch=patcher(obj))


def without_status(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object minus its status: admission judges what users write (status has its own subresource,
    written by podvirt's components), so a status never blocks or changes a spec."""
    if obj is None or "status" not in obj:
        return obj
    return {key: value for key, value in obj.items() if key != "status"}


class Validator:
    """The validating webhooks. ``trusted_users`` may shorten a running VMI's grace period (virt-api itself)."""

    def __init__(self, lookups: Lookups, trusted_users: frozenset[str] = frozenset()) -> None:
        self.lookups = lookups
        self.trusted_users = trusted_users

    async def validate(self, resource: str, request: AdmissionRequest) -> dict[str, Any]:
        kind = _check_kind(resource, request)
        try:
            verdict = await self._verdict(resource, request)
        except StatusError as exc:
            # A lookup failed: refuse rather than let an unchecked object in (failurePolicy Fail, in effect).
            return denied(request.uid, exc.to_status())
        if verdict.allowed:
            return allowed(request.uid, warnings=verdict.warnings)
        name = request.name or mapping(mapping(request.object).get("metadata")).get("name")
        logs.for_object(log, kind, request.namespace or None, name or "").info(
            "refused %s", request.operation.lower(), extra={"errors": [str(e) for e in verdict.errors]}
        )
        return denied(request.uid, invalid_status(kind, name, verdict.errors), verdict.warnings)

    async def _verdict(self, resource: str, request: AdmissionRequest) -> kinds.Verdict:
        new, old = without_status(request.object), without_status(request.old_object)
        if request.operation == "DELETE":
            if resource == "kubevirts" and old is not None:
                return kinds.validate_kubevirt_delete(old, workloads=await self.lookups.count_vmis())
            return kinds.Verdict()
        if new is None or request.operation not in ("CREATE", "UPDATE"):
            return kinds.Verdict()
        old = old if request.operation == "UPDATE" else None
        if resource == "virtualmachineinstances":
            trusted = request.user_info.username in self.trusted_users
            return kinds.validate_vmi(new, old, trusted_user=trusted)
        if resource == "virtualmachines":
            return kinds.validate_vm(new, old)
        if resource == "virtualmachineinstancereplicasets":
            return kinds.validate_replica_set(new, old)
        if resource == "virtualmachineinstancemigrations":
            return await self._migration(new, old, request.namespace)
        return await self._kubevirt(new, old)

    async def _migration(self, new: dict[str, Any], old: dict[str, Any] | None, namespace: str) -> kinds.Verdict:
        vmi_name = mapping(new.get("spec")).get("vmiName")
        if old is not None or not isinstance(vmi_name, str) or not vmi_name:
            return kinds.validate_migration(new, old, vmi=None)
        this = mapping(new.get("metadata")).get("name")
        vmi = await self.lookups.get_vmi(namespace, vmi_name)
        others = await self.lookups.list_migrations(namespace, vmi_name)
        in_flight = [
            str(mapping(m.get("metadata")).get("name"))
            for m in others
            if mapping(m.get("spec")).get("vmiName") == vmi_name
            and not kinds.migration_finished(m)
            and mapping(m.get("metadata")).get("name") != this
        ]
        return kinds.validate_migration(new, old, vmi=vmi, in_flight=in_flight)

    async def _kubevirt(self, new: dict[str, Any], old: dict[str, Any] | None) -> kinds.Verdict:
        if old is not None:
            return kinds.validate_kubevirt(new, old)
        meta = mapping(new.get("metadata"))
        others = [
            f"{mapping(kv.get('metadata')).get('namespace')}/{mapping(kv.get('metadata')).get('name')}"
            for kv in await self.lookups.list_kubevirts()
            if mapping(kv.get("metadata")).get("uid") != meta.get("uid")
        ]
        return kinds.validate_kubevirt(new, None, others=others)


def warm_up() -> None:
    """Run every kind through defaults and validation once, so that the models' lazily built validators
    exist before the first review arrives (building them costs tens of milliseconds)."""
    spec: dict[str, Any] = {
        "domain": {"devices": {"disks": [{"name": "root", "disk": {}}]}, "memory": {"guest": "64Mi"}},
        "volumes": [{"name": "root", "containerDisk": {"image": "warm-up"}}],
    }
    meta = {"name": "warm-up", "namespace": "warm-up"}
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": meta, "spec": spec}
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": meta,
        "spec": {"template": {"spec": spec}},
    }
    rs = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec},
        },
    }
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": meta,
        "spec": {"vmiName": "x"},
    }
    kinds.validate_vmi(vmi, None)
    kinds.validate_vm(vm)
    kinds.validate_replica_set(rs)
    kinds.validate_migration(migration, None, vmi=vmi)
    kinds.validate_kubevirt({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": meta}, None)
    for patcher, obj in (
        (defaults.vmi_patch, vmi),
        (defaults.vm_patch, vm),
        (defaults.vmirs_patch, rs),
        (defaults.migration_patch, migration),
    ):
        patcher(obj)


def error_review(uid: str, error: StatusError) -> dict[str, Any]:
    """A refusal carrying an error Status (e.g. a request for a kind this webhook does not admit)."""
    return denied(uid, status_object(error.code, error.reason, error.message))
