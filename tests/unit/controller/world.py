"""A small world for controller tests: a fake apiserver, a fake clock, and the real reconcile + executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from podvirt_common.kube import PERSISTENT_VOLUME_CLAIMS, PODS, VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES
from virt_controller import names
from virt_controller.actions import Plan
from virt_controller.executor import Result, execute
from virt_controller.vm import CrashLoopPolicy, SyncError, reconcile_vm
from virt_controller.vmi import VMIPolicy, reconcile_vmi

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
    vmi_policy: VMIPolicy = field(default_factory=VMIPolicy)
    sync_errors: dict[str, SyncError] = field(default_factory=dict)
    launched: set[str] = field(default_factory=set)
    #: Why the VMI's node is unresponsive, as virt_controller.nodes would say (None: it answers).
    node_problem: str | None = None

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

    # -- VMIs and their pods ---------------------------------------------------------------------

    def add_vmi(self, name: str = "testvm", **spec: Any) -> Obj:
        body: Obj = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}, **spec},
        }
        return self.api.put(VIRTUAL_MACHINE_INSTANCES, body)

    def pods(self, name: str = "testvm") -> list[Obj]:
        vmi = self.vmi(name)
        uid = vmi["metadata"]["uid"] if vmi else None
        return [p for p in self.api.all(PODS) if p["metadata"]["labels"].get(names.CREATED_BY_LABEL) == uid]

    def pod(self, name: str = "testvm") -> Obj:
        (pod,) = self.pods(name)
        return pod

    def claims(self) -> dict[str, Obj]:
        return {c["metadata"]["name"]: c for c in self.api.all(PERSISTENT_VOLUME_CLAIMS)}

    def plan_vmi(self, name: str = "testvm") -> Plan:
        vmi = self.vmi(name)
        assert vmi is not None
        return reconcile_vmi(
            vmi,
            self.pods(name),
            self.now,
            claims=self.claims(),
            launched=vmi["metadata"]["uid"] in self.launched,
            policy=self.vmi_policy,
            sync_error=self.sync_errors.get(f"vmi/{name}"),
            node_problem=self.node_problem,
        )

    def sync_vmi(self, name: str = "testvm") -> Result:
        result = execute(self.api, self.plan_vmi(name))
        for obj in result.created:
            if obj["kind"] == "Pod":
                self.launched.add(obj["metadata"]["labels"][names.CREATED_BY_LABEL])
        if result.error is not None:
            self.sync_errors[f"vmi/{name}"] = result.error
        else:
            self.sync_errors.pop(f"vmi/{name}", None)
        return result

    def settle_vmi(self, name: str = "testvm", rounds: int = 10) -> None:
        for _ in range(rounds):
            if self.vmi(name) is None or not self.plan_vmi(name).writes:
                return
            self.sync_vmi(name)
        raise AssertionError(f"VMI {name} did not settle in {rounds} rounds: {self.plan_vmi(name)}")

    # -- what the scheduler and the kubelet do to pods -------------------------------------------

    def _pod_obj(self, name: str) -> Obj:
        pod = self.pod(name)
        return self.api.objects[(PODS.plural, "default", pod["metadata"]["name"])]

    def bind(self, name: str = "testvm", node: str = "node-1") -> None:
        obj = self._pod_obj(name)
        obj["spec"]["nodeName"] = node
        obj.setdefault("status", {})["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        self.api._bump(obj)

    def unschedulable(self, name: str = "testvm", message: str = "0/2 nodes are available") -> None:
        obj = self._pod_obj(name)
        obj.setdefault("status", {})["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ]
        self.api._bump(obj)

    def container(self, name: str = "testvm", *, phase: str = "Pending", ready: bool = False, **state: Any) -> None:
        obj = self._pod_obj(name)
        status = obj.setdefault("status", {})
        status["phase"] = phase
        status["qosClass"] = "Burstable"
        status["containerStatuses"] = [{"name": "compute", "ready": ready, "state": state or {"running": {}}}]
        self.api._bump(obj)

    def kubelet_done(self, name: str = "testvm") -> None:
        """The kubelet confirms the deletion of a terminating pod."""
        pod = self.pod(name)
        assert pod["metadata"].get("deletionTimestamp")
        del self.api.objects[(PODS.plural, "default", pod["metadata"]["name"])]
