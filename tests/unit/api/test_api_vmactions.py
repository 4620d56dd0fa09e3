"""Start, stop, restart and migrate decide their writes from the VM's runStrategy and its VMI."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest
from api_fakes import vm, vmi

from virt_api.status import StatusError
from virt_api.subresources import vmactions
from virt_api.subresources.vmactions import plan_restart, plan_start, plan_stop

pytestmark = pytest.mark.unit


def applied(obj: dict[str, Any], writes: list[vmactions.Write], target: str = "vm") -> dict[str, Any]:
    for w in writes:
        if w.target == target or (target == "vm" and w.target == "vm-status"):
            obj = jsonpatch.apply_patch(obj, w.operations)
    return obj


def refused(call: Any, message: str) -> None:
    with pytest.raises(StatusError) as caught:
        call()
    assert caught.value.code == 409
    assert message in caught.value.message


def test_always_and_halted_flip_the_run_strategy() -> None:
    halted = vm(runStrategy="Halted")
    assert applied(halted, plan_start(halted, None))["spec"]["runStrategy"] == "Always"
    always = vm(runStrategy="Always")
    assert applied(always, plan_stop(always, vmi()))["spec"]["runStrategy"] == "Halted"
    assert applied(always, plan_stop(always, None))["spec"]["runStrategy"] == "Halted", "stops a crash-looping VM"


def test_the_deprecated_running_field_is_flipped_instead() -> None:
    running = vm(running=True)
    stopped = applied(running, plan_stop(running, vmi()))
    assert stopped["spec"]["running"] is False and "runStrategy" not in stopped["spec"]
    assert applied(stopped, plan_start(stopped, None))["spec"]["running"] is True


def test_manual_and_rerun_on_failure_queue_state_change_requests() -> None:
    manual = vm(runStrategy="Manual")
    started = applied(manual, plan_start(manual, None))
    assert started["status"]["stateChangeRequests"] == [{"action": "Start"}]
    running = vmi()
    running["metadata"]["uid"] = "vmi-uid-1"
    rerun = vm(runStrategy="RerunOnFailure")
    stopped = applied(rerun, plan_stop(rerun, running))
    assert stopped["status"]["stateChangeRequests"] == [{"action": "Stop", "uid": "vmi-uid-1"}]


def test_a_paused_start_says_so_to_the_controller_or_in_the_template() -> None:
    manual = vm(runStrategy="Manual")
    requests = applied(manual, plan_start(manual, None, paused=True))["status"]["stateChangeRequests"]
    assert requests == [{"action": "Start", "data": {"paused": "true"}}]
    halted = vm(runStrategy="Halted")
    assert (
        applied(halted, plan_start(halted, None, paused=True))["spec"]["template"]["spec"]["startStrategy"] == "Paused"
    )


def test_restart_asks_to_stop_this_vmi_then_start() -> None:
    running = vmi()
    running["metadata"]["uid"] = "vmi-uid-2"
    always = vm(runStrategy="Always", status={"stateChangeRequests": []})
    always["status"] = {"printableStatus": "Running"}
    out = applied(always, plan_restart(always, running))
    assert out["status"]["stateChangeRequests"] == [{"action": "Stop", "uid": "vmi-uid-2"}, {"action": "Start"}]
    assert out["status"]["printableStatus"] == "Running", "the rest of the status is kept"


def test_pending_requests_are_replaced_only_if_unchanged_since_read() -> None:
    manual = vm(runStrategy="Manual")
    manual["status"] = {"stateChangeRequests": [{"action": "Stop", "uid": "old"}]}
    writes = plan_start(manual, None)
    manual["status"]["stateChangeRequests"].append({"action": "Start"})  # someone else wrote meanwhile
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        applied(manual, writes)


def test_requests_that_make_no_sense_are_conflicts() -> None:
    refused(lambda: plan_start(vm(runStrategy="Halted"), vmi()), "VM is already running")
    refused(lambda: plan_start(vm(runStrategy="Always"), None), "does not support manual start requests")
    refused(lambda: plan_stop(vm(runStrategy="Halted"), None), "VM is not running")
    refused(lambda: plan_stop(vm(runStrategy="Manual"), vmi(phase="Succeeded")), "VM is not running")
    refused(lambda: plan_restart(vm(runStrategy="Halted"), None), "does not support manual restart requests")
    refused(lambda: plan_restart(vm(runStrategy="Manual"), None), "VM is not running")
    refused(lambda: vmactions.migration_for(vm(), vmi(phase="Scheduling")), "VM is not running")


def test_a_grace_period_goes_to_the_running_vmi_first() -> None:
    always = vm(runStrategy="Always")
    writes = plan_stop(always, vmi(), grace_period=0)
    assert [w.target for w in writes] == ["vmi", "vm"]
    assert applied(vmi(), writes, "vmi")["spec"]["terminationGracePeriodSeconds"] == 0
    # Forcing a VM that is already stopping (Halted, VMI still there) only shortens the grace period.
    assert [w.target for w in plan_stop(vm(runStrategy="Halted"), vmi(), grace_period=0)] == ["vmi"]


def test_migrate_creates_a_migration_of_the_vms_vmi() -> None:
    body = vmactions.migration_for(vm(), vmi(), added_node_selector={"zone": "b"})
    assert body["spec"] == {"vmiName": "vm", "addedNodeSelector": {"zone": "b"}}
    assert body["metadata"] == {"generateName": "kubevirt-migrate-vm-", "namespace": "ns"}
