"""The VMI controller creates one launcher pod, follows it through the phases, surfaces its problems,
and finalises a deleted VMI without ever waiting for anything but its pods."""

from __future__ import annotations

import pytest

from podvirt_common.kube import (
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    VIRTUAL_MACHINE_INSTANCES,
    AlreadyExistsError,
    ApiError,
)
from virt_controller import names
from virt_controller.actions import Create, Delete, JSONPatch
from virt_controller.executor import Outcome, execute
from virt_controller.printable import printable_status
from virt_controller.vmi import reconcile_vmi

from .world import World, vm_body

pytestmark = pytest.mark.unit


def vmi_status(world: World, name: str = "testvm") -> dict:
    return world.vmi(name).get("status") or {}


def vmi_condition(world: World, type_: str) -> dict | None:
    for cond in vmi_status(world).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return None


def started(world: World, **spec: object) -> World:
    world.add_vmi(**spec)
    world.settle_vmi()
    return world


def test_a_vmi_gets_its_finalizer_then_exactly_one_launcher_pod() -> None:
    world = World()
    world.add_vmi()
    plan = world.plan_vmi()
    assert isinstance(plan.writes[0], JSONPatch), "finalizer first"
    world.settle_vmi()
    assert world.vmi()["metadata"]["finalizers"] == [names.VMI_FINALIZER]
    pod = world.pod()
    uid = world.vmi()["metadata"]["uid"]
    assert pod["metadata"]["name"] == names.launcher_pod_name("testvm", uid)
    assert pod["metadata"]["labels"][names.CREATED_BY_LABEL] == uid
    assert world.api.event_reasons() == ["SuccessfulCreate"]
    # Reconciling again (the pod now seen) creates nothing more.
    world.settle_vmi()
    assert len(world.pods()) == 1


def test_a_pod_create_that_meets_an_existing_pod_is_a_stale_view_not_a_second_pod() -> None:
    world = started(World())
    vmi = world.vmi()
    plan = reconcile_vmi(vmi, [], world.now)  # a cache that has not seen the pod yet
    assert any(isinstance(a, Create) for a in plan.actions)
    assert execute(world.api, plan).outcome is Outcome.STALE
    assert len(world.api.all(PODS)) == 1


def test_a_pod_scheduled_and_started_quickly_takes_the_vmi_straight_to_scheduled() -> None:
    world = started(World())
    assert vmi_status(world) == {}, "no status write while the young pod is on its way"
    assert world.plan_vmi().requeue_after == pytest.approx(5)
    world.bind(node="node-2")
    world.container(phase="Running", ready=True)
    world.tick(1)
    writes_before = len(world.api.writes)
    world.settle_vmi()
    status = vmi_status(world)
    assert status["phase"] == "Scheduled"
    assert status["nodeName"] == "node-2"
    assert status["activePods"] == {world.pod()["metadata"]["uid"]: "node-2"}
    assert [p["phase"] for p in status["phaseTransitionTimestamps"]] == ["Pending", "Scheduled"]
    assert world.vmi()["metadata"]["labels"][names.NODE_NAME_LABEL] == "node-2"
    assert world.api.writes[writes_before:] == [
        ("patch", "virtualmachineinstances/status"),
        ("patch", "virtualmachineinstances"),
    ]


def test_a_pod_still_waiting_after_the_delay_shows_scheduling() -> None:
    world = started(World())
    world.tick(5)
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Scheduling"
    assert vmi_condition(world, "Ready")["status"] == "False"
    world.bind()
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    assert [p["phase"] for p in vmi_status(world)["phaseTransitionTimestamps"]] == [
        "Pending",
        "Scheduling",
        "Scheduled",
    ]


def test_without_a_delay_scheduling_is_written_with_the_pod() -> None:
    world = World()
    world.vmi_policy = type(world.vmi_policy)(scheduling_phase_delay=0)
    started(world)
    assert vmi_status(world)["phase"] == "Scheduling"


def test_an_unschedulable_pod_shows_at_once_on_the_vmi_and_the_vm() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.settle_vmi()
    world.unschedulable(message="0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Scheduling"
    cond = vmi_condition(world, "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert "node affinity" in cond["message"]
    world.settle_vm()
    assert world.vm()["status"]["printableStatus"] == "ErrorUnschedulable"


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_an_image_pull_problem_is_surfaced_and_cleared(reason: str) -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.settle_vmi()
    world.bind()
    world.container(waiting={"reason": reason, "message": 'pull "nope:1": not found'})
    world.settle_vmi()
    cond = vmi_condition(world, "Synchronized")
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert "nope:1" in cond["message"]
    assert world.api.event_reasons().count(reason) == 0  # the pod's events tell; the VMI says it in status
    world.settle_vm()
    assert world.vm()["status"]["printableStatus"] == reason
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    assert vmi_condition(world, "Synchronized") is None
    assert vmi_status(world)["phase"] == "Scheduled"


def test_a_missing_claim_holds_the_pod_back_until_the_claim_exists() -> None:
    world = World()
    world.add_vm(
        vm_body(
            template={
                "spec": {
                    "domain": {"devices": {}, "memory": {"guest": "64Mi"}},
                    "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "root-disk"}}],
                }
            }
        )
    )
    world.settle_vm()
    world.settle_vmi()
    assert world.pods() == []
    cond = vmi_condition(world, "Synchronized")
    assert (cond["reason"], cond["status"]) == ("FailedPvcNotFound", "False")
    assert "root-disk" in cond["message"]
    assert world.api.event_reasons().count("FailedPvcNotFound") == 1
    world.settle_vm()
    assert world.vm()["status"]["printableStatus"] == "ErrorPvcNotFound"
    world.api.put(PERSISTENT_VOLUME_CLAIMS, {"metadata": {"name": "root-disk", "namespace": "default"}, "spec": {}})
    world.settle_vmi()
    assert len(world.pods()) == 1
    assert vmi_condition(world, "Synchronized") is None


def test_a_failed_launcher_fails_the_vmi_with_its_exit() -> None:
    world = started(World())
    world.bind()
    world.container(phase="Failed", terminated={"exitCode": 3, "reason": "Error", "message": "qemu: no such disk\n"})
    world.settle_vmi()
    status = vmi_status(world)
    assert status["phase"] == "Failed"
    assert status["reason"] == "LauncherFailed"
    assert "LauncherFailed" in world.api.event_reasons()
    [event] = [e for e in world.api.events if e["reason"] == "LauncherFailed"]
    assert "exit code 3" in event["message"] and "no such disk" in event["message"]


def test_a_pod_that_vanishes_before_the_vmi_runs_fails_it() -> None:
    world = started(World())
    world.tick(6)
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Scheduling"
    world.api.delete(PODS, world.pod()["metadata"]["name"], "default")
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Failed"
    assert vmi_status(world)["reason"] == "LauncherPodGone"
    assert world.pods() == []


def test_a_pod_deleted_while_the_vmi_is_still_pending_fails_it_too() -> None:
    world = started(World())
    world.api.delete(PODS, world.pod()["metadata"]["name"], "default")
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Failed"


def running_ready() -> World:
    """A VMI whose handler says Running and whose launcher pod is ready."""
    world = started(World())
    world.bind()
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    world.vmi_phase("Running")
    world.settle_vmi()
    return world


def test_a_launcher_that_completes_after_the_vmi_ran_succeeds_it() -> None:
    world = running_ready()
    assert vmi_condition(world, "Ready")["status"] == "True"
    world.container(phase="Succeeded", terminated={"exitCode": 0})
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Succeeded"
    assert vmi_condition(world, "Ready") is None


def test_a_running_vmi_whose_launcher_fails_is_no_longer_ready() -> None:
    world = running_ready()
    assert vmi_condition(world, "Ready")["status"] == "True"
    world.container(phase="Failed", terminated={"exitCode": 1, "reason": "Error"})
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Failed"
    assert vmi_condition(world, "Ready") is None


def test_a_paused_vmi_is_not_ready_though_its_pod_is() -> None:
    world = running_ready()
    # The handler reports the pause (and Ready False); the controller must not turn Ready back on.
    paused = {"type": "Paused", "status": "True", "reason": "PausedByUser"}
    conditions = [*vmi_status(world).get("conditions", []), paused]
    world.api.set_status(VIRTUAL_MACHINE_INSTANCES, "testvm", {"conditions": conditions})
    world.settle_vmi()
    ready = vmi_condition(world, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Paused")
    assert vmi_condition(world, "Paused") == paused


def test_an_unready_launcher_makes_a_running_vmi_unready() -> None:
    world = running_ready()
    world.container(phase="Running", ready=False)
    world.settle_vmi()
    assert vmi_condition(world, "Ready")["reason"] == "PodNotReady"


def test_a_final_vmi_has_its_still_running_pod_deleted() -> None:
    world = started(World())
    world.bind()
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    world.vmi_phase("Running")
    world.vmi_phase("Succeeded")
    plan = world.plan_vmi()
    assert [type(a) for a in plan.writes] == [Delete]


# -- deletion ----------------------------------------------------------------------------------


def test_deleting_a_vmi_deletes_its_pod_gracefully_then_removes_the_finalizer() -> None:
    world = started(World(), terminationGracePeriodSeconds=60)
    world.bind()
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    world.api.delete(VIRTUAL_MACHINE_INSTANCES, "testvm", "default")
    world.settle_vmi()
    pod = world.pod()
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 75  # the VMI's 60 s + 15 s for the launcher
    assert world.vmi() is not None, "the finalizer holds the VMI while its pod shuts down"
    world.kubelet_done()
    world.settle_vmi()
    assert world.vmi() is None


def test_a_vmi_whose_pod_is_already_gone_is_finalised_at_once() -> None:
    world = started(World())
    world.api.delete(PODS, world.pod()["metadata"]["name"], "default")
    world.api.delete(VIRTUAL_MACHINE_INSTANCES, "testvm", "default")
    world.settle_vmi()
    assert world.vmi() is None


def test_a_pod_stuck_on_a_lost_node_is_force_deleted_after_its_grace_period() -> None:
    world = started(World())
    world.bind()
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    world.api.delete(VIRTUAL_MACHINE_INSTANCES, "testvm", "default")
    world.settle_vmi()
    grace = world.pod()["metadata"]["deletionGracePeriodSeconds"]
    plan = world.plan_vmi()
    assert plan.writes == []
    assert plan.requeue_after == pytest.approx(grace + 30)
    world.tick(grace + 30)
    world.settle_vmi()
    assert world.api.all(PODS) == []
    assert world.vmi() is None
    assert "ForcedDelete" in world.api.event_reasons()


def test_finalizing_keeps_other_finalizers() -> None:
    world = World()
    world.add_vmi()
    world.api.objects[("virtualmachineinstances", "default", "testvm")]["metadata"]["finalizers"] = ["example.com/x"]
    world.settle_vmi()
    assert world.vmi()["metadata"]["finalizers"] == ["example.com/x", names.VMI_FINALIZER]
    world.api.delete(PODS, world.pod()["metadata"]["name"], "default")
    world.api.delete(VIRTUAL_MACHINE_INSTANCES, "testvm", "default")
    world.settle_vmi()
    assert world.vmi()["metadata"]["finalizers"] == ["example.com/x"]


# -- errors ------------------------------------------------------------------------------------


def test_a_vmi_that_cannot_become_a_pod_says_why() -> None:
    world = World()
    world.add_vmi(domain={"devices": {}})
    world.settle_vmi()
    cond = vmi_condition(world, "Synchronized")
    assert cond["reason"] == "FailedCreate"
    assert "spec.domain.memory.guest" in cond["message"]
    assert world.pods() == []


def test_a_refused_pod_shows_as_synchronized_false_with_the_apiservers_message() -> None:
    world = World()
    world.add_vmi()
    refusal = ApiError(403, "Forbidden", 'pods "virt-launcher-testvm-x" is forbidden: violates PodSecurity')
    world.api.fail_next["create"] = refusal
    world.sync_vmi()
    world.api.fail_next["create"] = refusal
    world.sync_vmi()
    cond = vmi_condition(world, "Synchronized")
    assert cond["reason"] == "FailedCreate"
    assert "PodSecurity" in cond["message"]
    world.settle_vmi()
    assert len(world.pods()) == 1
    assert vmi_condition(world, "Synchronized") is None


def test_already_exists_for_a_pod_is_stale_not_failed() -> None:
    world = World()
    world.add_vmi()
    world.api.fail_next["create"] = AlreadyExistsError(409, "AlreadyExists", "exists")
    result = world.sync_vmi()
    assert result.outcome is Outcome.STALE
    assert result.completed == 1  # the finalizer went on; the create stopped the plan


# -- the whole path, counted -------------------------------------------------------------------


def test_vm_to_scheduled_vmi_takes_five_writes() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.settle_vmi()
    world.settle_vm()
    world.bind()
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    world.settle_vm()
    assert world.api.writes == [
        ("create", "virtualmachineinstances"),
        ("patch", "virtualmachines/status"),
        ("create", "pods"),
        ("patch", "virtualmachineinstances/status"),
        ("patch", "virtualmachineinstances"),
    ]
    assert world.vm()["status"]["printableStatus"] == "Starting"
    assert world.vmi()["status"]["phase"] == "Scheduled"


def test_printable_status_follows_the_vmi() -> None:
    vm = vm_body()
    vm["metadata"]["uid"] = "vm"
    now = World().now

    def vmi(phase: str, **status: object) -> dict:
        return {"metadata": {"uid": "u"}, "status": {"phase": phase, **status}}

    assert printable_status(vm, vmi("Running"), "Always", None, now) == "Running"
    paused = [{"type": "Paused", "status": "True"}]
    assert printable_status(vm, vmi("Running", conditions=paused), "Always", None, now) == "Paused"
    migrating = {"startTimestamp": "2030-01-01T00:00:00Z"}
    assert printable_status(vm, vmi("Running", migrationState=migrating), "Always", None, now) == "Migrating"
    assert printable_status(vm, vmi("Scheduled"), "Always", None, now) == "Starting"
    assert printable_status(vm, vmi("Unknown"), "Always", None, now) == "Unknown"
    assert printable_status(vm, vmi("Failed"), "Manual", None, now) == "Stopped"
    assert printable_status(vm, None, "Halted", None, now) == "Stopped"
    assert printable_status(vm, None, "Always", None, now) == "Starting"


def test_a_plan_that_changes_the_vmi_twice_does_not_trip_over_its_own_first_write() -> None:
    """Finalizer patch then status patch: the status write expects the version the first write made."""
    world = World()
    world.add_vmi(domain={"devices": {}})  # no memory: finalizer and a FailedCreate status in one plan
    plan = world.plan_vmi()
    assert [type(a).__name__ for a in plan.writes] == ["JSONPatch", "MergePatch"]
    assert execute(world.api, plan).outcome is Outcome.DONE
    assert [w for w in world.api.writes if w[0] == "patch"] == [
        ("patch", "virtualmachineinstances"),
        ("patch", "virtualmachineinstances/status"),
    ]


def test_a_pod_that_is_merely_bound_costs_no_write_of_its_own() -> None:
    world = started(World())
    world.tick(5)
    world.settle_vmi()
    assert vmi_status(world)["phase"] == "Scheduling"
    world.bind()
    assert world.plan_vmi().writes == []
    world.container(phase="Running", ready=True)
    world.settle_vmi()
    assert vmi_condition(world, "PodScheduled")["status"] == "True"


def test_a_refused_pod_is_told_once_as_a_warning_event() -> None:
    world = World()
    world.add_vmi()
    refusal = ApiError(403, "Forbidden", "exceeded quota")
    for _ in range(3):
        world.api.fail_next["create"] = refusal
        world.sync_vmi()
    assert world.api.event_reasons().count("FailedCreate") == 1


def test_a_scheduled_vmi_without_its_node_label_gets_it_a_controller_stopped_between_the_writes() -> None:
    # The status said Scheduled, then the controller died before the label patch: the handler, which
    # selects VMIs by that label, would never see this VMI.
    world = running_ready()
    stored = world.api.objects[(VIRTUAL_MACHINE_INSTANCES.plural, "default", "testvm")]
    del stored["metadata"]["labels"][names.NODE_NAME_LABEL]
    world.settle_vmi()
    assert world.vmi()["metadata"]["labels"][names.NODE_NAME_LABEL] == "node-1"
    assert vmi_status(world)["phase"] == "Running"
