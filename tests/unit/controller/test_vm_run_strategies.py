"""The VM controller follows each run strategy, consumes start/stop requests exactly once, and backs off
from crash loops — checked by running the real reconcile and executor against a fake apiserver."""

from __future__ import annotations

import pytest

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES, AlreadyExistsError, ApiError, ConflictError
from virt_controller import names
from virt_controller.actions import Create, Delete
from virt_controller.executor import Outcome, execute

from .world import World, vm_body

pytestmark = pytest.mark.unit


def status(world: World, name: str = "testvm") -> dict:
    return world.vm(name).get("status") or {}


def condition(world: World, type_: str) -> dict | None:
    for cond in status(world).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return None


# -- Always ------------------------------------------------------------------------------------


def test_always_creates_the_vmi_from_the_template_once() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Always"))
    world.sync_vm()
    vmi = world.vmi()
    assert vmi is not None
    vm = world.vm()
    assert vmi["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "name": "testvm",
            "uid": vm["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert names.VMI_FINALIZER in vmi["metadata"]["finalizers"]
    assert vmi["metadata"]["labels"]["app"] == "testvm"
    assert vmi["metadata"]["annotations"][names.VM_GENERATION_ANNOTATION] == "1"
    assert vmi["spec"] == vm["spec"]["template"]["spec"]
    assert status(world)["printableStatus"] == "Starting"
    assert status(world)["created"] is True
    assert status(world)["runStrategy"] == "Always"
    assert world.api.event_reasons() == ["SuccessfulCreate"]
    # Nothing more to do: a second look writes nothing.
    assert world.plan_vm().writes == []


def test_one_reconcile_writes_the_vmi_and_the_vm_status_once_each() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Always"))
    world.settle_vm()
    assert world.api.writes == [("create", "virtualmachineinstances"), ("patch", "virtualmachines/status")]


def test_always_shows_running_and_ready_from_the_vmi() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Running", conditions=[{"type": "Ready", "status": "True"}])
    world.settle_vm()
    assert status(world)["printableStatus"] == "Running"
    assert status(world)["ready"] is True
    assert condition(world, "Ready")["status"] == "True"


def test_always_replaces_a_vmi_that_shut_down_cleanly_without_backoff() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    old_uid = world.vmi()["metadata"]["uid"]
    world.vmi_phase("Running")
    world.vmi_phase("Succeeded")
    world.sync_vm()
    assert world.vmi()["metadata"].get("deletionTimestamp")
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi()["metadata"]["uid"] != old_uid
    assert "startFailure" not in status(world)


def test_always_backs_off_exponentially_from_a_crash_loop_then_resets_after_a_stable_run() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    for failures, delay in ((1, 10), (2, 20), (3, 40)):
        world.vmi_phase("Scheduling")
        world.vmi_phase("Failed")
        world.sync_vm()
        failure = status(world)["startFailure"]
        assert failure["consecutiveFailCount"] == failures
        assert failure["lastFailedVMIUID"] == world.vmi()["metadata"]["uid"]
        world.finish_vmi_deletion()
        plan = world.plan_vm()
        assert not any(isinstance(a, Create) for a in plan.actions), "must not restart during back-off"
        assert plan.requeue_after == pytest.approx(delay)
        world.settle_vm()
        assert status(world)["printableStatus"] == "CrashLoopBackOff"
        assert world.vmi() is None
        world.tick(delay - 1)
        world.settle_vm()
        assert world.vmi() is None
        world.tick(1)
        world.settle_vm()
        assert world.vmi() is not None, f"restarted after {delay} s"
    assert world.api.event_reasons().count("CrashLoopBackOff") == 3

    # Runs, but not yet for long enough: the count stays and a look is booked for when it will be stable.
    world.vmi_phase("Running")
    plan = world.plan_vm()
    assert plan.requeue_after == pytest.approx(world.policy.stable_run)
    world.settle_vm()
    assert status(world)["startFailure"]["consecutiveFailCount"] == 3
    world.tick(world.policy.stable_run)
    world.settle_vm()
    assert "startFailure" not in status(world)


def test_a_failure_is_counted_once_per_vmi() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Failed")
    world.sync_vm()
    world.sync_vm()  # the same failed VMI seen again (still being deleted)
    assert status(world)["startFailure"]["consecutiveFailCount"] == 1


def test_the_failure_is_on_record_before_the_failed_vmi_is_deleted() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Failed")
    plan = world.plan_vm()
    kinds = [type(a).__name__ for a in plan.writes]
    assert kinds == ["MergePatch", "Delete"]


def test_a_vmi_that_fails_long_after_it_started_is_not_a_failed_start() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Running")
    world.tick(3600)
    world.vmi_phase("Failed")
    world.sync_vm()
    assert "startFailure" not in status(world)


def test_running_true_is_always_and_running_false_is_halted() -> None:
    world = World()
    world.add_vm(vm_body("on", strategy=None, running=True))
    world.add_vm(vm_body("off", strategy=None, running=False))
    world.settle_vm("on")
    world.settle_vm("off")
    assert world.vmi("on") is not None
    assert world.vmi("off") is None
    assert status(world, "off")["printableStatus"] == "Stopped"
    assert status(world, "on")["runStrategy"] == "Always"


# -- Halted ------------------------------------------------------------------------------------


def test_halted_deletes_the_vmi_and_reports_stopping_then_stopped() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Running")
    world.api.merge_patch(VIRTUAL_MACHINES, "testvm", {"spec": {"runStrategy": "Halted"}}, "default")
    world.settle_vm()
    assert world.vmi()["metadata"].get("deletionTimestamp")
    assert status(world)["printableStatus"] == "Stopping"
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi() is None
    assert status(world)["printableStatus"] == "Stopped"
    assert status(world)["created"] is False


def test_halted_leaves_a_start_request_for_virt_api_to_turn_into_always() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Halted"))
    world.request({"action": "Start"})
    world.settle_vm()
    assert world.vmi() is None
    assert status(world)["stateChangeRequests"] == [{"action": "Start"}]


# -- Manual ------------------------------------------------------------------------------------


def test_manual_starts_and_stops_only_on_request_and_consumes_each_request_once() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.settle_vm()
    assert world.vmi() is None
    assert status(world)["printableStatus"] == "Stopped"

    world.request({"action": "Start"})
    world.settle_vm()
    vmi = world.vmi()
    assert vmi is not None
    assert "stateChangeRequests" not in status(world)
    world.vmi_phase("Running")

    world.request({"action": "Stop", "uid": vmi["metadata"]["uid"]})
    world.settle_vm()
    # The stop stays queued until its VMI is gone.
    assert status(world)["stateChangeRequests"] == [{"action": "Stop", "uid": vmi["metadata"]["uid"]}]
    assert status(world)["printableStatus"] == "Stopping"
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi() is None
    assert "stateChangeRequests" not in status(world)
    assert [w for w in world.api.writes if w[1] == "virtualmachineinstances"] == [
        ("create", "virtualmachineinstances"),
        ("delete", "virtualmachineinstances"),
    ]


def test_manual_never_restarts_a_failed_vmi() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start"})
    world.settle_vm()
    world.vmi_phase("Failed")
    world.settle_vm()
    assert world.vmi()["status"]["phase"] == "Failed"
    assert not world.vmi()["metadata"].get("deletionTimestamp")
    assert status(world)["printableStatus"] == "Stopped"


def test_start_request_replaces_a_final_vmi() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start"})
    world.settle_vm()
    old = world.vmi()["metadata"]["uid"]
    world.vmi_phase("Succeeded")
    world.request({"action": "Start"})
    world.settle_vm()
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi()["metadata"]["uid"] != old
    assert "stateChangeRequests" not in status(world)


def test_start_paused_creates_a_paused_vmi() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start", "data": {"paused": "true"}})
    world.settle_vm()
    assert world.vmi()["spec"]["startStrategy"] == "Paused"


def test_restart_stops_exactly_the_current_vmi_then_starts_one_new_vmi() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Always"))
    world.settle_vm()
    old = world.vmi()["metadata"]["uid"]
    world.vmi_phase("Running")
    world.request({"action": "Stop", "uid": old}, {"action": "Start"})
    world.settle_vm()
    assert world.vmi()["metadata"]["uid"] == old
    assert world.vmi()["metadata"].get("deletionTimestamp")
    world.finish_vmi_deletion()
    world.settle_vm()
    new = world.vmi()
    assert new is not None and new["metadata"]["uid"] != old
    assert "stateChangeRequests" not in status(world)
    creates = [w for w in world.api.writes if w == ("create", "virtualmachineinstances")]
    assert len(creates) == 2


def test_a_stop_for_an_older_vmi_is_dropped_without_touching_the_current_one() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start"})
    world.settle_vm()
    world.request({"action": "Stop", "uid": "an-older-vmi"})
    world.settle_vm()
    assert not world.vmi()["metadata"].get("deletionTimestamp")
    assert "stateChangeRequests" not in status(world)


def test_a_start_request_whose_vmi_already_exists_is_consumed_without_a_second_create() -> None:
    """The controller died after creating the VMI and before consuming the request."""
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start"})
    world.api.fail_next["patch"] = ConflictError(409, "Conflict", "modified")
    result = world.sync_vm()
    assert result.outcome is Outcome.STALE
    assert status(world)["stateChangeRequests"] == [{"action": "Start"}]
    world.settle_vm()
    assert "stateChangeRequests" not in status(world)
    assert world.api.writes.count(("create", "virtualmachineinstances")) == 1


def test_a_create_that_finds_the_vmi_already_there_stops_the_plan_and_consumes_nothing() -> None:
    """The cache had not seen the VMI yet: AlreadyExists is a stale view, not an error."""
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start"})
    world.settle_vm()
    world.request({"action": "Start"})
    result = world.sync_vm(vmi=None)  # as seen through a lagging cache
    assert result.outcome is Outcome.STALE
    assert status(world)["stateChangeRequests"] == [{"action": "Start"}]
    assert "Failure" not in [c["type"] for c in status(world)["conditions"]]
    world.settle_vm()
    assert "stateChangeRequests" not in status(world)


def test_a_status_write_is_conditional_on_the_observed_resource_version() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Manual"))
    world.request({"action": "Start"})
    vm = world.vm()
    plan = world.plan_vm()
    status_write = plan.writes[-1]
    assert status_write.resource_version == vm["metadata"]["resourceVersion"]
    # virt-api appends a request meanwhile: the write must not clobber it.
    world.request({"action": "Stop"})
    assert execute(world.api, plan).outcome is Outcome.STALE
    assert status(world)["stateChangeRequests"] == [{"action": "Start"}, {"action": "Stop"}]


# -- RerunOnFailure ----------------------------------------------------------------------------


def test_rerun_on_failure_starts_once_and_replaces_only_a_failed_vmi() -> None:
    world = World()
    world.add_vm(vm_body(strategy="RerunOnFailure"))
    world.settle_vm()
    first = world.vmi()["metadata"]["uid"]
    world.vmi_phase("Failed")
    world.settle_vm()
    assert status(world)["stateChangeRequests"] == [{"action": "Start"}]
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi() is None
    assert status(world)["printableStatus"] == "CrashLoopBackOff"
    world.tick(10)
    world.settle_vm()
    second = world.vmi()
    assert second is not None and second["metadata"]["uid"] != first
    assert "stateChangeRequests" not in status(world)

    world.vmi_phase("Running")
    world.vmi_phase("Succeeded")
    world.settle_vm()
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi() is None
    assert status(world)["printableStatus"] == "Stopped"


def test_rerun_on_failure_stays_stopped_after_a_stop_request() -> None:
    world = World()
    world.add_vm(vm_body(strategy="RerunOnFailure"))
    world.settle_vm()
    world.vmi_phase("Running")
    world.request({"action": "Stop"})
    world.settle_vm()
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi() is None
    assert status(world)["printableStatus"] == "Stopped"
    world.request({"action": "Start"})
    world.settle_vm()
    assert world.vmi() is not None


# -- Once --------------------------------------------------------------------------------------


def test_once_runs_one_vmi_and_never_replaces_it() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Once"))
    world.settle_vm()
    world.vmi_phase("Running")
    world.vmi_phase("Failed")
    world.settle_vm()
    assert world.vmi()["status"]["phase"] == "Failed"
    assert not world.vmi()["metadata"].get("deletionTimestamp")
    world.api.delete(VIRTUAL_MACHINE_INSTANCES, "testvm", "default")
    world.finish_vmi_deletion()
    world.settle_vm()
    assert world.vmi() is None


# -- deletion, ownership, errors, restart-required --------------------------------------------


def test_a_deleted_vm_is_terminating_and_stops_its_vmi() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    # kubectl delete --cascade=foreground: the VM stays until its VMI is gone.
    meta = world.api.objects[("virtualmachines", "default", "testvm")]["metadata"]
    meta.update(deletionTimestamp="2030-01-01T12:00:00Z", finalizers=["foregroundDeletion"])
    plan = world.plan_vm()
    assert any(isinstance(a, Delete) for a in plan.actions)
    world.settle_vm()
    assert status(world)["printableStatus"] == "Terminating"


def test_a_vmi_of_the_same_name_without_a_controller_is_adopted() -> None:
    world = World()
    world.api.put(
        VIRTUAL_MACHINE_INSTANCES,
        {"metadata": {"name": "testvm", "namespace": "default"}, "spec": {"domain": {"devices": {}}}},
    )
    world.add_vm(vm_body())
    world.settle_vm()
    assert world.vmi()["metadata"]["ownerReferences"][0]["uid"] == world.vm()["metadata"]["uid"]
    assert "SuccessfulAdopt" in world.api.event_reasons()


def test_a_vmi_controlled_by_something_else_is_left_alone_and_reported() -> None:
    world = World()
    world.api.put(
        VIRTUAL_MACHINE_INSTANCES,
        {
            "metadata": {
                "name": "testvm",
                "namespace": "default",
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "other", "controller": True}],
            },
            "spec": {"domain": {"devices": {}}},
        },
    )
    world.add_vm(vm_body())
    world.settle_vm()
    assert condition(world, "Failure")["reason"] == "FailedCreate"
    assert world.api.writes == [("patch", "virtualmachines/status")]


def test_a_refused_create_shows_as_the_failure_condition_until_a_create_succeeds() -> None:
    world = World()
    world.add_vm(vm_body())
    forbidden = ApiError(403, "Forbidden", "virtualmachineinstances is forbidden: exceeded quota")
    world.api.fail_next["create"] = forbidden
    assert world.sync_vm().outcome is Outcome.FAILED
    # The next round shows the error first, then tries again (and fails again).
    world.api.fail_next["create"] = forbidden
    assert world.sync_vm().outcome is Outcome.FAILED
    failure = condition(world, "Failure")
    assert failure is not None and failure["reason"] == "FailedCreate"
    assert "exceeded quota" in failure["message"]
    assert status(world)["printableStatus"] == "Starting"
    # Once a create goes through, the condition goes away.
    world.settle_vm()
    assert world.vmi() is not None
    assert condition(world, "Failure") is None


def test_a_template_change_under_a_running_vmi_sets_restart_required_until_restarted() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Running")
    vm = world.vm()
    vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "128Mi"
    vm["metadata"]["generation"] = 2
    world.api.objects[("virtualmachines", "default", "testvm")] = vm
    world.settle_vm()
    assert condition(world, "RestartRequired")["status"] == "True"
    assert status(world)["observedGeneration"] == 1
    assert status(world)["desiredGeneration"] == 2
    world.request({"action": "Stop", "uid": world.vmi()["metadata"]["uid"]}, {"action": "Start"})
    world.settle_vm()
    world.finish_vmi_deletion()
    world.settle_vm()
    assert condition(world, "RestartRequired") is None
    assert world.vmi()["spec"]["domain"]["memory"]["guest"] == "128Mi"
    assert status(world)["observedGeneration"] == 2


def test_a_run_strategy_change_alone_does_not_require_a_restart() -> None:
    world = World()
    world.add_vm(vm_body())
    world.settle_vm()
    world.vmi_phase("Running")
    vm = world.vm()
    vm["spec"]["runStrategy"] = "Manual"
    vm["metadata"]["generation"] = 2
    world.api.objects[("virtualmachines", "default", "testvm")] = vm
    world.settle_vm()
    assert condition(world, "RestartRequired") is None
    assert world.vmi()["metadata"].get("deletionTimestamp") is None


def test_an_unreadable_vm_is_reported_not_acted_on() -> None:
    world = World()
    world.add_vm(vm_body(strategy="Always", running=True))
    world.settle_vm()
    assert world.vmi() is None
    failure = condition(world, "Failure")
    assert failure["reason"] == "InvalidSpec"
    assert "mutually exclusive" in failure["message"]


def test_already_exists_is_never_a_sync_error() -> None:
    world = World()
    world.add_vm(vm_body())
    world.api.fail_next["create"] = AlreadyExistsError(409, "AlreadyExists", "exists")
    result = world.sync_vm()
    assert result.outcome is Outcome.STALE
    assert result.error is None


def test_a_refused_vmi_is_told_once_as_a_warning_event() -> None:
    world = World()
    world.add_vm(vm_body())
    for _ in range(3):
        world.api.fail_next["create"] = ApiError(403, "Forbidden", "exceeded quota")
        world.sync_vm()
    assert world.api.event_reasons().count("FailedCreate") == 1
