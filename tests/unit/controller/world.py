"""A small world for controller tests: a fake apiserver, a fake clock, and the real reconcile + executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES
from virt_controller.actions import Plan
from virt_controller.executor import Result, execute
from virt_controller.vm import CrashLoopPolicy, SyncError, reconcile_vm

from .fakeapi import FakeApi

Obj = dict[str, Any]
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def vm_body(name: str = "testvm", *, strategy: str | None = "Always", running: bool | None = None, **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}},
            },
            **spec,
        },
    }
    if strategy is not None:
        body["spec"]["runStrategy"] = strategy
    if running is not None:
        body["spec"]["running"] = running
    return body


@dataclass
class World:
    api: FakeApi = field(default_factory=FakeApi)
    now: datetime = T0
    policy: CrashLoopPolicy = field(default_factory=CrashLoopPolicy)
    sync_errors: dict[str, SyncError] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api.clock = lambda: self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # -- VMs -------------------------------------------------------------------------------------

    def add_vm(self, body: Obj) -> Obj:
        return self.api.put(VIRTUAL_MACHINES, body)

    def vm(self, name: str = "testvm") -> Obj:
        return self.api.get(VIRTUAL_MACHINES, name, "default")

    def vmi(self, name: str = "testvm") -> Obj | None:
        return self.api.find(VIRTUAL_MACHINE_INSTANCES, name)

    def plan_vm(self, name: str = "testvm", *, vmi: Obj | str | None = "observed") -> Plan:
        observed_vmi = self.vmi(name) if vmi == "observed" else vmi
        assert not isinstance(observed_vmi, str)
        return reconcile_vm(
            self.vm(name), observed_vmi, self.now, policy=self.policy, sync_error=self.sync_errors.get(name)
        )

    def sync_vm(self, name: str = "testvm", *, vmi: Obj | str | None = "observed") -> Result:
        result = execute(self.api, self.plan_vm(name, vmi=vmi))
        if result.error is not None:
            self.sync_errors[name] = result.error
        else:
            self.sync_errors.pop(name, None)
        return result

    def settle_vm(self, name: str = "testvm", rounds: int = 10) -> None:
        """Reconcile until a round writes nothing (as a controller would on its own events)."""
        for _ in range(rounds):
            if not self.plan_vm(name).writes:
                return
            self.sync_vm(name)
        raise AssertionError(f"VM {name} did not settle in {rounds} rounds: {self.plan_vm(name)}")

    # -- what other components do to VMIs --------------------------------------------------------

    def vmi_phase(self, phase: str, name: str = "testvm", **status: Any) -> None:
        vmi = self.vmi(name)
        assert vmi is not None
        stamps = [*(vmi.get("status") or {}).get("phaseTransitionTimestamps", [])]
        stamps.append({"phase": phase, "phaseTransitionTimestamp": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")})
        self.api.set_status(
            VIRTUAL_MACHINE_INSTANCES, name, {"phase": phase, "phaseTransitionTimestamps": stamps, **status}
        )

    def finish_vmi_deletion(self, name: str = "testvm") -> None:
        """The VMI controller's part: launcher pod gone, finalizer removed."""
        vmi = self.vmi(name)
        assert vmi is not None and vmi["metadata"].get("deletionTimestamp"), "VMI is not being deleted"
        del self.api.objects[(VIRTUAL_MACHINE_INSTANCES.plural, "default", name)]

    def request(self, *requests: Obj, name: str = "testvm") -> None:
        """virt-api's part of start/stop/restart: append to status.stateChangeRequests."""
        vm = self.vm(name)
        queue = [*(vm.get("status") or {}).get("stateChangeRequests", []), *requests]
        self.api.set_status(VIRTUAL_MACHINES, name, {"stateChangeRequests": queue})
