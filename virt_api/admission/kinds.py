"""Validation of each kubevirt.io/v1 kind: parse with the shared models, then apply the kind's own rules.

Everything a rule needs from the cluster (the VMI a migration names, migrations in flight, other KubeVirt
resources) is passed in, so each function here is pure and answers with a :class:`Verdict`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jsonpatch
from pydantic import BaseModel, ValidationError

from kubevirt_types import (
    KubeVirt,
    LabelSelector,
    UninstallStrategy,
    VirtualMachine,
    VirtualMachineInstance,
    VirtualMachineInstanceMigration,
    VirtualMachineInstanceReplicaSet,
)
from virt_api.admission.vmispec import validate_vmi_spec
from virt_api.fielderrors import (
    FieldError,
    FieldPath,
    forbidden,
    from_validation_error,
    invalid,
    not_found,
    required,
)

M = TypeVar("M", bound=BaseModel)

SPEC = FieldPath("spec")
TEMPLATE_SPEC = SPEC / "template" / "spec"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
RUNNING_DEPRECATED = (
    "spec.running is deprecated; use spec.runStrategy instead (running: true is runStrategy: Always, "
    "running: false is runStrategy: Halted)"
)
VMI_IMMUTABLE = (
    "a VirtualMachineInstance cannot change after creation; change its VirtualMachine and restart it instead"
)


@dataclass
class Verdict:
    """What admission says: refused if there are errors; warnings are shown either way."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.errors


def _parse(model: type[M], obj: dict[str, Any]) -> M | Verdict:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        return Verdict(from_validation_error(exc))


def mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: for reading raw objects that may be malformed."""
    return value if isinstance(value, dict) else {}


def _first_change(old: Any, new: Any, base: FieldPath) -> FieldPath:
    """The field path of the first difference between two JSON values (for naming what changed)."""
    operations = jsonpatch.make_patch(old, new).patch
    if not operations:
        return base
    path = base
    for segment in str(operations[0]["path"]).split("/")[1:]:
        part = segment.replace("~1", "/").replace("~0", "~")
        path = path[int(part)] if part.isdigit() else path / part
    return path


# -- VirtualMachineInstance -----------------------------------------------------------------------------


def validate_vmi(obj: dict[str, Any], old: dict[str, Any] | None, *, trusted_user: bool = False) -> Verdict:
    """A VMI on create; on update only ``trusted_user`` (virt-api itself, forcing a stop) may change its
    ``terminationGracePeriodSeconds``, and nobody anything else in its spec."""
    parsed = _parse(VirtualMachineInstance, obj)
    if isinstance(parsed, Verdict):
        return parsed
    if old is not None:
        return Verdict(_vmi_update_errors(obj.get("spec"), old.get("spec"), trusted_user))
    return Verdict(validate_vmi_spec(parsed.spec, SPEC))


def _vmi_update_errors(new: Any, old: Any, trusted_user: bool) -> list[FieldError]:
    if new == old:
        return []
    if trusted_user and isinstance(new, dict) and isinstance(old, dict):
        grace = "terminationGracePeriodSeconds"
        rest_new = {k: v for k, v in new.items() if k != grace}
        rest_old = {k: v for k, v in old.items() if k != grace}
        if rest_new == rest_old and isinstance(new.get(grace), int) and new[grace] >= 0:
            return []
    return [forbidden(_first_change(old, new, SPEC), VMI_IMMUTABLE)]


# -- VirtualMachine -------------------------------------------------------------------------------------


def validate_vm(obj: dict[str, Any], old: dict[str, Any] | None = None) -> Verdict:
    warnings = [RUNNING_DEPRECATED] if mapping(obj.get("spec")).get("running") is not None else []
    parsed = _parse(VirtualMachine, obj)
    if isinstance(parsed, Verdict):
        parsed.warnings = warnings
        return parsed
    spec = parsed.spec
    errors: list[FieldError] = []
    if spec.template.spec is None:
        errors.append(required(TEMPLATE_SPEC, "the VMI this VM runs"))
    else:
        errors += validate_vmi_spec(spec.template.spec, TEMPLATE_SPEC)
    errors += _data_volume_templates(parsed)
    return Verdict(errors, warnings)


def _data_volume_templates(vm: VirtualMachine) -> list[FieldError]:
    errors: list[FieldError] = []
    template_spec = vm.spec.template.spec
    referenced = {v.data_volume.name for v in (template_spec.volumes if template_spec else None) or [] if v.data_volume}
    seen: set[str] = set()
    for i, template in enumerate(vm.spec.data_volume_templates or []):
        path = (SPEC / "dataVolumeTemplates")[i] / "metadata" / "name"
        name = template.metadata.name if template.metadata else None
        if not name:
            errors.append(required(path))
            continue
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            errors.append(invalid(path, name, "must be a DNS subdomain: lower-case letters, digits, '-' and '.'"))
        if name in seen:
            errors.append(invalid(path, name, "another data volume template has this name"))
        seen.add(name)
        if name not in referenced:
            errors.append(
                invalid(path, name, f"no volume of {TEMPLATE_SPEC / 'volumes'} uses this data volume (dataVolume.name)")
            )
    return errors


# -- VirtualMachineInstanceReplicaSet ---------------------------------------------------------------------


def validate_replica_set(obj: dict[str, Any], old: dict[str, Any] | None = None) -> Verdict:
    parsed = _parse(VirtualMachineInstanceReplicaSet, obj)
    if isinstance(parsed, Verdict):
        return parsed
    spec = parsed.spec
    errors: list[FieldError] = []
    if spec.template.spec is None:
        errors.append(required(TEMPLATE_SPEC, "the VMIs this replica set runs"))
    else:
        errors += validate_vmi_spec(spec.template.spec, TEMPLATE_SPEC)
    labels = (spec.template.metadata.labels if spec.template.metadata else None) or {}
    selector = spec.selector
    if not selector.match_labels and not selector.match_expressions:
        errors.append(required(SPEC / "selector", "an empty selector would select every VMI in the namespace"))
    elif not selector_matches(selector, labels):
        errors.append(
            invalid(SPEC / "selector", "", "does not match the template's labels (spec.template.metadata.labels)")
        )
    return Verdict(errors)


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Whether objects with ``labels`` are selected (Kubernetes' label selector semantics)."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions or []:
        values = expression.values or []
        present = expression.key in labels
        operator = expression.operator.value
        if operator == "In" and not (present and labels[expression.key] in values):
            return False
        if operator == "NotIn" and present and labels[expression.key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


# -- VirtualMachineInstanceMigration ----------------------------------------------------------------------


def validate_migration(
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    *,
    vmi: dict[str, Any] | None,
    in_flight: Sequence[str] = (),
) -> Verdict:
    """A migration request: its VMI must exist, run, be live-migratable and not be migrating already.

    ``vmi`` is the VMI it names (None if there is none); ``in_flight`` the names of other unfinished
    migrations of that VMI. On update, the spec is immutable.
    """
    parsed = _parse(VirtualMachineInstanceMigration, obj)
    if isinstance(parsed, Verdict):
        return parsed
    if old is not None:
        if obj.get("spec") != old.get("spec"):
            path = _first_change(old.get("spec"), obj.get("spec"), SPEC)
            return Verdict([forbidden(path, "a migration's spec cannot change; create a new migration instead")])
        return Verdict()
    path = SPEC / "vmiName"
    name = parsed.spec.vmi_name
    namespace = parsed.metadata.namespace or ""
    if vmi is None:
        return Verdict([not_found(path, name, f"no VirtualMachineInstance {name} in namespace {namespace}")])
    metadata = mapping(vmi.get("metadata"))
    status = mapping(vmi.get("status"))
    phase = status.get("phase") or "Pending"
    errors: list[FieldError] = []
    if metadata.get("deletionTimestamp"):
        errors.append(invalid(path, name, "the VMI is being deleted"))
    elif phase != "Running":
        errors.append(invalid(path, name, f"only a running VMI can migrate; this one is {phase}"))
    else:
        condition = _condition(status, "LiveMigratable")
        if condition is None or condition.get("status") != "True":
            why = "its LiveMigratable condition is not True"
            if condition is not None:
                details = ": ".join(str(condition[k]) for k in ("reason", "message") if condition.get(k))
                why += f" ({details})" if details else ""
            errors.append(invalid(path, name, f"the VMI is not live-migratable: {why}"))
    if in_flight:
        errors.append(invalid(path, name, f"the VMI is already migrating ({', '.join(sorted(in_flight))})"))
    return Verdict(errors)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


def migration_finished(migration: dict[str, Any]) -> bool:
    return mapping(migration.get("status")).get("phase") in ("Succeeded", "Failed")


# -- KubeVirt ---------------------------------------------------------------------------------------------


def validate_kubevirt(obj: dict[str, Any], old: dict[str, Any] | None, *, others: Sequence[str] = ()) -> Verdict:
    """The install resource; ``others`` are the namespace/names of the KubeVirt resources that exist already."""
    parsed = _parse(KubeVirt, obj)
    if isinstance(parsed, Verdict):
        return parsed
    if old is None and others:
        return Verdict(
            [
                forbidden(
                    FieldPath("metadata") / "name",
                    f"a cluster has at most one KubeVirt resource, and {', '.join(sorted(others))} exists",
                )
            ]
        )
    return Verdict()


def validate_kubevirt_delete(old: dict[str, Any], *, workloads: int) -> Verdict:
    """Deleting the install resource while VMIs exist is refused unless its uninstallStrategy allows it."""
    strategy = mapping(old.get("spec")).get("uninstallStrategy") or UninstallStrategy.BLOCK_UNINSTALL_IF_WORKLOADS_EXIST
    if strategy == UninstallStrategy.BLOCK_UNINSTALL_IF_WORKLOADS_EXIST and workloads > 0:
        return Verdict(
            [
                forbidden(
                    SPEC / "uninstallStrategy",
                    f"{workloads} VirtualMachineInstance(s) still exist; delete them first, or set "
                    "spec.uninstallStrategy: RemoveWorkloads",
                )
            ]
        )
    return Verdict()
