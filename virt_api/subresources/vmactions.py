"""VM start, stop, restart and migrate: what each request writes, decided from the VM and its VMI (pure).

These only touch podvirt's own objects, never a node:

- runStrategy ``Always``/``Halted`` (and the deprecated ``running``): start and stop rewrite the spec;
- ``Manual``/``RerunOnFailure``: start and stop become ``status.stateChangeRequests`` that
  virt-controller consumes (``{action: Start}``, ``{action: Stop, uid: <the VMI's UID>}``);
- restart is a stop request for the current VMI's UID followed by a start request;
- a grace period (stop ``gracePeriod``, restart ``gracePeriodSeconds``) is written to the running VMI's
  ``terminationGracePeriodSeconds`` first, so that the shutdown that follows honours it;
- migrate creates a VirtualMachineInstanceMigration (which the migration webhook then judges).

Every spec or status write carries a JSON-patch ``test`` of what it was decided from, so two concurrent
requests cannot both act on the same state: the loser's patch fails and it decides again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from kubevirt_types import RunStrategy, StateChangeAction, VirtualMachineInstancePhase
from virt_api.status import StatusError, conflict

VMS = "virtualmachines"
#: StartOptions' ``paused`` travels to virt-controller in the start request's data under this key.
START_PAUSED_KEY = "paused"
MIGRATION_NAME_PREFIX = "kubevirt-migrate-vm-"
FINAL_PHASES = (VirtualMachineInstancePhase.SUCCEEDED.value, VirtualMachineInstancePhase.FAILED.value)

Target = Literal["vm", "vm-status", "vmi"]


@dataclass(frozen=True)
class Write:
    """A JSON patch to the VM (``vm``), the VM's status subresource (``vm-status``) or the VMI (``vmi``)."""

    target: Target
    operations: list[dict[str, Any]]


def _section(obj: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = (obj or {}).get(key)
    return value if isinstance(value, dict) else {}


def run_strategy(vm: dict[str, Any]) -> RunStrategy:
    """The strategy in effect: ``spec.runStrategy``, else the deprecated ``running``, else Halted."""
    spec = _section(vm, "spec")
    raw = spec.get("runStrategy")
    if raw in {s.value for s in RunStrategy}:
        return RunStrategy(raw)
    running = spec.get("running")
    if isinstance(running, bool):
        return RunStrategy.ALWAYS if running else RunStrategy.HALTED
    return RunStrategy.HALTED


def vmi_active(vmi: dict[str, Any] | None) -> bool:
    """A VMI exists and has not finished (it may be starting, running or shutting down)."""
    return vmi is not None and _section(vmi, "status").get("phase") not in FINAL_PHASES


def _name(vm: dict[str, Any]) -> str:
    return str(_section(vm, "metadata").get("name", ""))


def _refuse(vm: dict[str, Any], why: str) -> StatusError:
    return conflict(VMS, _name(vm), why)


def _set_strategy(vm: dict[str, Any], target: RunStrategy) -> Write:
    spec = _section(vm, "spec")
    if isinstance(spec.get("running"), bool) and "runStrategy" not in spec:
        running = target == RunStrategy.ALWAYS
        return Write(
            "vm",
            [
                {"op": "test", "path": "/spec/running", "value": spec["running"]},
                {"op": "replace", "path": "/spec/running", "value": running},
            ],
        )
    if "runStrategy" in spec:
        return Write(
            "vm",
            [
                {"op": "test", "path": "/spec/runStrategy", "value": spec["runStrategy"]},
                {"op": "replace", "path": "/spec/runStrategy", "value": target.value},
            ],
        )
    return Write("vm", [{"op": "add", "path": "/spec/runStrategy", "value": target.value}])


def _state_change(vm: dict[str, Any], requests: list[dict[str, Any]]) -> Write:
    """Replace any pending requests with ``requests`` (as KubeVirt does), guarded by a test of the old list."""
    status = (vm or {}).get("status")
    if not isinstance(status, dict):
        return Write("vm-status", [{"op": "add", "path": "/status", "value": {"stateChangeRequests": requests}}])
    pending = status.get("stateChangeRequests")
    if pending is None:
        return Write("vm-status", [{"op": "add", "path": "/status/stateChangeRequests", "value": requests}])
    return Write(
        "vm-status",
        [
            {"op": "test", "path": "/status/stateChangeRequests", "value": copy.deepcopy(pending)},
            {"op": "replace", "path": "/status/stateChangeRequests", "value": requests},
        ],
    )


def _grace(vmi: dict[str, Any] | None, grace_period: int | None) -> list[Write]:
    if grace_period is None or not vmi_active(vmi):
        return []
    spec = _section(vmi, "spec")
    if spec.get("terminationGracePeriodSeconds") == grace_period:
        return []
    op = "replace" if "terminationGracePeriodSeconds" in spec else "add"
    return [Write("vmi", [{"op": op, "path": "/spec/terminationGracePeriodSeconds", "value": grace_period}])]


def _uid(vmi: dict[str, Any] | None) -> str:
    return str(_section(vmi, "metadata").get("uid", ""))


def plan_start(vm: dict[str, Any], vmi: dict[str, Any] | None, *, paused: bool = False) -> list[Write]:
    strategy = run_strategy(vm)
    if vmi_active(vmi):
        raise _refuse(vm, "VM is already running")
    if strategy in (RunStrategy.ALWAYS, RunStrategy.ONCE):
        raise _refuse(vm, f"runStrategy {strategy.value} does not support manual start requests")
    if strategy == RunStrategy.HALTED:
        writes = [_set_strategy(vm, RunStrategy.ALWAYS)]
        if paused:
            writes[0].operations.append({"op": "add", "path": "/spec/template/spec/startStrategy", "value": "Paused"})
        return writes
    if strategy == RunStrategy.RERUN_ON_FAILURE and _section(vmi, "status").get("phase") == "Failed":
        raise _refuse(vm, "runStrategy RerunOnFailure restarts a failed VM by itself; it cannot be started by request")
    request: dict[str, Any] = {"action": StateChangeAction.START.value}
    if paused:
        request["data"] = {START_PAUSED_KEY: "true"}
    return [_state_change(vm, [request])]


def plan_stop(vm: dict[str, Any], vmi: dict[str, Any] | None, *, grace_period: int | None = None) -> list[Write]:
    strategy = run_strategy(vm)
    if strategy == RunStrategy.HALTED:
        if grace_period is not None and vmi_active(vmi):
            return _grace(vmi, grace_period)  # forcing a VM that is already stopping
        raise _refuse(vm, "VM is not running")
    if strategy in (RunStrategy.ALWAYS, RunStrategy.ONCE):
        return [*_grace(vmi, grace_period), _set_strategy(vm, RunStrategy.HALTED)]
    if not vmi_active(vmi):
        raise _refuse(vm, "VM is not running")
    stop = {"action": StateChangeAction.STOP.value, "uid": _uid(vmi)}
    return [*_grace(vmi, grace_period), _state_change(vm, [stop])]


def plan_restart(vm: dict[str, Any], vmi: dict[str, Any] | None, *, grace_period: int | None = None) -> list[Write]:
    strategy = run_strategy(vm)
    if strategy in (RunStrategy.HALTED, RunStrategy.ONCE):
        raise _refuse(vm, f"runStrategy {strategy.value} does not support manual restart requests")
    if vmi is None:
        raise _refuse(vm, "VM is not running")
    requests = [
        {"action": StateChangeAction.STOP.value, "uid": _uid(vmi)},
        {"action": StateChangeAction.START.value},
    ]
    return [*_grace(vmi, grace_period), _state_change(vm, requests)]


def migration_for(
    vm: dict[str, Any], vmi: dict[str, Any] | None, *, added_node_selector: dict[str, str] | None = None
) -> dict[str, Any]:
    """The VirtualMachineInstanceMigration that migrates the VM's running VMI."""
    if vmi is None or _section(vmi, "status").get("phase") != VirtualMachineInstancePhase.RUNNING.value:
        raise _refuse(vm, "VM is not running")
    meta = _section(vm, "metadata")
    spec: dict[str, Any] = {"vmiName": meta.get("name")}
    if added_node_selector:
        spec["addedNodeSelector"] = dict(added_node_selector)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"generateName": MIGRATION_NAME_PREFIX, "namespace": meta.get("namespace")},
        "spec": spec,
    }
