"""The VMI replica set converges on spec.replicas: creates and deletes VMIs, adopts and releases them,
replaces final ones, reports replicas/readyReplicas/labelSelector, and never creates twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS, VIRTUAL_MACHINE_INSTANCES
from virt_controller import names
from virt_controller.executor import Outcome, execute
from virt_controller.replicaset import reconcile_replica_set, selector_matches, selector_string

from .world import World

pytestmark = pytest.mark.unit

RS = VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS
VMIS = VIRTUAL_MACHINE_INSTANCES


def rs_body(replicas: int | None = 3, selector: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": selector if selector is not None else {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}},
            },
            **spec,
        },
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


class RSWorld(World):
    def rs(self) -> dict[str, Any]:
        return self.api.get(RS, "web", "default")

    def vmis(self) -> list[dict[str, Any]]:
        return self.api.all(VMIS)

    def live_vmis(self) -> list[dict[str, Any]]:
        return [v for v in self.vmis() if not v["metadata"].get("deletionTimestamp")]

    def plan_rs(self, vmis: list[dict[str, Any]] | None = None):
        return reconcile_replica_set(self.rs(), self.vmis() if vmis is None else vmis, self.now)

    def settle_rs(self) -> None:
        for _ in range(10):
            plan = self.plan_rs()
            if not plan.writes:
                return
            execute(self.api, plan)
        raise AssertionError("replica set did not settle")

    def scale(self, replicas: int) -> None:
        self.api.objects[("virtualmachineinstancereplicasets", "default", "web")]["spec"]["replicas"] = replicas
        self.api._bump(self.api.objects[("virtualmachineinstancereplicasets", "default", "web")])


def test_creates_the_replicas_from_the_template_and_reports_them() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(3))
    world.settle_rs()
    vmis = world.vmis()
    assert len(vmis) == 3
    rs = world.rs()
    for vmi in vmis:
        assert vmi["metadata"]["labels"] == {"app": "web", "tier": "front"}
        assert vmi["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert names.VMI_FINALIZER in vmi["metadata"]["finalizers"]
        assert vmi["metadata"]["name"].startswith("web-")
    assert rs["status"]["replicas"] == 3
    assert rs["status"]["readyReplicas"] == 0
    assert rs["status"]["labelSelector"] == "app=web"
    assert world.api.event_reasons().count("SuccessfulCreate") == 3


def test_default_is_one_replica() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(None))
    world.settle_rs()
    assert len(world.vmis()) == 1


def test_a_stale_view_creates_nothing_twice() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(3))
    world.settle_rs()
    result = execute(world.api, world.plan_rs(vmis=[]))  # a cache that has seen none of them
    assert result.outcome is Outcome.STALE
    assert len(world.vmis()) == 3


def test_scaling_down_deletes_the_least_valuable_first() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(3))
    world.settle_rs()
    first, second, _third = sorted(world.vmis(), key=lambda v: v["metadata"]["name"])
    world.api.set_status(
        VMIS, first["metadata"]["name"], {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    )
    world.api.set_status(VMIS, second["metadata"]["name"], {"phase": "Running"})
    world.settle_rs()
    assert world.rs()["status"]["readyReplicas"] == 1
    world.scale(1)
    world.settle_rs()
    survivors = [v["metadata"]["name"] for v in world.live_vmis()]
    assert survivors == [first["metadata"]["name"]]
    assert world.rs()["status"]["replicas"] == 1


def test_scaling_up_again_skips_names_still_in_use() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(2))
    world.settle_rs()
    world.scale(0)
    world.settle_rs()
    assert len(world.vmis()) == 2 and world.live_vmis() == []  # held by their finalizers
    world.scale(2)
    world.settle_rs()
    assert len(world.live_vmis()) == 2
    assert len(world.vmis()) == 4


def test_final_vmis_are_deleted_and_replaced() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(2))
    world.settle_rs()
    victim = world.vmis()[0]["metadata"]["name"]
    world.api.set_status(VMIS, victim, {"phase": "Failed"})
    world.settle_rs()
    assert world.api.find(VMIS, victim)["metadata"].get("deletionTimestamp")
    assert len(world.live_vmis()) == 2


def test_orphans_matching_the_selector_are_adopted_and_count() -> None:
    world = RSWorld()
    world.api.put(
        VMIS,
        {
            "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"domain": {"devices": {}}},
        },
    )
    world.api.put(
        VMIS,
        {
            "metadata": {"name": "other", "namespace": "default", "labels": {"app": "db"}},
            "spec": {"domain": {"devices": {}}},
        },
    )
    world.api.put(RS, rs_body(2))
    world.settle_rs()
    stray = world.api.find(VMIS, "stray")
    assert stray["metadata"]["ownerReferences"][0]["uid"] == world.rs()["metadata"]["uid"]
    assert "ownerReferences" not in world.api.find(VMIS, "other")["metadata"]
    assert len([v for v in world.vmis() if v["metadata"].get("ownerReferences")]) == 2


def test_an_owned_vmi_whose_labels_stop_matching_is_released_and_replaced() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(1))
    world.settle_rs()
    (vmi,) = world.vmis()
    obj = world.api.objects[("virtualmachineinstances", "default", vmi["metadata"]["name"])]
    obj["metadata"]["labels"]["app"] = "debugging"
    world.api._bump(obj)
    world.settle_rs()
    released = world.api.find(VMIS, vmi["metadata"]["name"])
    assert not released["metadata"].get("ownerReferences")
    assert len(world.vmis()) == 2


def test_a_paused_replica_set_neither_creates_nor_deletes() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(2, paused=True))
    world.settle_rs()
    assert world.vmis() == []
    conditions = {c["type"]: c for c in world.rs()["status"]["conditions"]}
    assert conditions["ReplicaPaused"]["status"] == "True"


def test_a_selector_that_does_not_match_the_template_creates_nothing_and_says_so() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(2, selector={"matchLabels": {"app": "elsewhere"}}))
    world.settle_rs()
    assert world.vmis() == []
    (cond,) = world.rs()["status"]["conditions"]
    assert (cond["type"], cond["reason"]) == ("ReplicaFailure", "InvalidSelector")


def test_burst_limits_creates_per_round() -> None:
    world = RSWorld()
    world.api.put(RS, rs_body(10))
    plan = reconcile_replica_set(world.rs(), [], world.now + timedelta(0), burst=4)
    assert len(plan.writes) == 5  # four creates and the status


def test_selectors() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
            {"key": "team", "operator": "Exists"},
        ],
    }
    assert selector_matches(selector, {"app": "web", "tier": "edge", "team": "x", "zone": "a"})
    assert not selector_matches(selector, {"app": "web", "tier": "edge", "team": "x", "canary": "1"})
    assert not selector_matches(selector, {"app": "web", "tier": "back", "team": "x"})
    assert not selector_matches(selector, {"app": "web", "tier": "edge"})
    assert selector_string(selector) == "app=web,tier in (edge,front),!canary,zone notin (b),team"
