"""A VMI whose node stopped answering (no virt-handler heartbeat, not Ready, or gone) fails with reason
NodeUnresponsive, and its launcher pod is deleted without waiting for the node."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES, format_time
from virt_controller import names, nodes
from virt_controller.actions import Delete, MergePatch, Plan
from virt_controller.controller import Controller

from .fakeapi import FakeApi
from .test_runtime import controller_with
from .test_vmi_phases import running_ready, vmi_status
from .world import T0, World

pytestmark = pytest.mark.unit

TIMEOUT = 300.0


def node(heartbeat_age: float | None = 10, ready: str = "True", ready_for: float = 3600) -> dict[str, Any]:
    annotations = (
        {}
        if heartbeat_age is None
        else {names.HEARTBEAT_ANNOTATION: format_time(T0 - timedelta(seconds=heartbeat_age))}
    )
    condition = {"type": "Ready", "status": ready, "lastTransitionTime": format_time(T0 - timedelta(seconds=ready_for))}
    body = {
        "metadata": {
            "name": "node-1",
            "uid": "n1",
            "resourceVersion": "5",
            "annotations": annotations,
            "labels": {"x": "y"},
        },
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, condition], "capacity": {"cpu": "2"}},
    }
    return nodes.slim_node(body)


def test_a_node_with_a_fresh_heartbeat_and_ready_answers() -> None:
    assert nodes.unresponsive("node-1", node(), T0, TIMEOUT) is None
    assert nodes.recheck_after(node(heartbeat_age=100), T0, TIMEOUT) == pytest.approx(200)


def test_a_stale_heartbeat_makes_the_node_unresponsive_even_while_it_shows_ready() -> None:
    why = nodes.unresponsive("node-1", node(heartbeat_age=TIMEOUT + 1), T0, TIMEOUT)
    assert why is not None and "node-1" in why and "heartbeat" in why


def test_not_ready_counts_only_after_the_timeout() -> None:
    assert nodes.unresponsive("node-1", node(heartbeat_age=None, ready="Unknown", ready_for=60), T0, TIMEOUT) is None
    assert nodes.recheck_after(node(heartbeat_age=None, ready="Unknown", ready_for=60), T0, TIMEOUT) == pytest.approx(
        240
    )
    why = nodes.unresponsive("node-1", node(heartbeat_age=None, ready="False", ready_for=TIMEOUT), T0, TIMEOUT)
    assert why is not None and "Ready=False" in why


def test_a_node_without_a_handler_heartbeat_is_judged_by_readiness_alone() -> None:
    assert nodes.unresponsive("node-1", node(heartbeat_age=None), T0, TIMEOUT) is None
    assert nodes.recheck_after(node(heartbeat_age=None), T0, TIMEOUT) is None


def test_a_node_that_is_gone_is_unresponsive_at_once() -> None:
    assert nodes.unresponsive("node-1", None, T0, TIMEOUT) == "node node-1 is gone"


def test_the_vmi_on_an_unresponsive_node_fails_and_its_pod_is_deleted_without_grace() -> None:
    world = running_ready()
    pod = world.pod()
    world.node_problem = "node node-1 is gone"
    plan = world.plan_vmi()
    deletions = [a for a in plan.actions if isinstance(a, Delete)]
    assert [(d.name, d.uid, d.grace_period_seconds) for d in deletions] == [
        (pod["metadata"]["name"], pod["metadata"]["uid"], 0)
    ]
    world.settle_vmi()
    status = vmi_status(world)
    assert status["phase"] == "Failed" and status["reason"] == "NodeUnresponsive"
    assert not any(c["type"] == "Ready" for c in status.get("conditions", []))
    assert world.pods() == []
    assert "NodeUnresponsive" in world.api.event_reasons() and "ForcedDelete" in world.api.event_reasons()


def test_a_vmi_not_yet_on_a_node_is_not_failed_for_it() -> None:
    world = World(node_problem="node node-1 is gone")
    world.add_vmi()
    world.settle_vmi()
    assert vmi_status(world).get("phase") != "Failed"
    assert len(world.pods()) == 1


def running_vmi_in(api: FakeApi) -> dict[str, Any]:
    vmi = api.put(
        VIRTUAL_MACHINE_INSTANCES,
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": "a", "namespace": "default", "finalizers": [names.VMI_FINALIZER]},
            "spec": {"domain": {"devices": {}}},
        },
    )
    api.set_status(VIRTUAL_MACHINE_INSTANCES, "a", {"phase": "Running", "nodeName": "node-1"})
    return api.get(VIRTUAL_MACHINE_INSTANCES, "a", vmi["metadata"]["namespace"])


def launcher_pod_of(vmi: dict[str, Any]) -> dict[str, Any]:
    """Its launcher pod, running and ready on node-1 (as the node last reported it)."""
    return {
        "metadata": {
            "name": "virt-launcher-a-xxxxx",
            "namespace": "default",
            "uid": "p1",
            "resourceVersion": "1",
            "labels": {names.CREATED_BY_LABEL: vmi["metadata"]["uid"]},
        },
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running", "containerStatuses": [{"name": "compute", "ready": True}]},
    }


def watched(api: FakeApi) -> Controller:
    ctl = controller_with(api)
    vmi = running_vmi_in(api)
    ctl.observe("vmi", None, vmi)
    ctl.observe("pod", None, launcher_pod_of(vmi))
    return ctl


def status_write(plan: Plan | None) -> dict[str, Any] | None:
    assert plan is not None
    for action in plan.writes:
        if isinstance(action, MergePatch) and action.subresource == "status":
            return dict(action.patch["status"])
    return None


def test_the_controller_judges_a_vmi_by_its_node_in_view_and_looks_again_when_the_heartbeat_would_run_out() -> None:
    ctl = watched(FakeApi())
    fresh = node(heartbeat_age=100)
    ctl.observe("node", None, fresh)
    plan = ctl.plan("vmi/default/a")
    assert plan is not None and "phase" not in (status_write(plan) or {})
    assert plan.requeue_after == pytest.approx(200)

    stale = node(heartbeat_age=TIMEOUT + 5)
    ctl.observe("node", "MODIFIED", stale)
    plan = ctl.plan("vmi/default/a")
    assert plan is not None
    status = status_write(plan)
    assert status is not None and status["phase"] == "Failed" and status["reason"] == "NodeUnresponsive"
    assert [(d.name, d.grace_period_seconds) for d in plan.actions if isinstance(d, Delete)] == [
        ("virt-launcher-a-xxxxx", 0)
    ]


def test_a_deleted_node_fails_its_vmis_but_a_controller_that_sees_no_nodes_judges_nothing() -> None:
    ctl = watched(FakeApi())
    plan = ctl.plan("vmi/default/a")
    assert plan is not None and "phase" not in (status_write(plan) or {})  # no Node in view at all: cannot tell

    ctl.observe("node", None, {**node(), "metadata": {**node()["metadata"], "name": "node-2"}})
    ctl.observe("node", None, node())
    assert "phase" not in (status_write(ctl.plan("vmi/default/a")) or {})
    ctl.observe("node", "DELETED", node())
    plan = ctl.plan("vmi/default/a")
    assert plan is not None
    status = status_write(plan)
    assert status is not None and status["reason"] == "NodeUnresponsive"
    assert "node-1 is gone" in status.get("message", "") or "node-1 is gone" in str(plan.actions)
