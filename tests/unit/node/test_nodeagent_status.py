"""Pod status as the stand-in node computes it: phases, conditions, container states, patches."""

from __future__ import annotations

import datetime as dt

import pytest

from devcluster.node.status import (
    ContainerRecord,
    PodFacts,
    Running,
    Terminated,
    Waiting,
    container_status,
    pod_phase,
    pod_status,
    status_patch,
)

pytestmark = pytest.mark.unit

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=7)


def rec(name: str, state: Waiting | Running | Terminated, last: Terminated | None = None) -> ContainerRecord:
    return ContainerRecord(name, "img", state, last_state=last)


def done(code: int) -> Terminated:
    return Terminated(code, "Completed" if code == 0 else "Error", T1, T0)


def facts(
    policy: str, *containers: ContainerRecord, init_complete: bool = True, inits: tuple[ContainerRecord, ...] = ()
) -> PodFacts:
    return PodFacts(
        restart_policy=policy,
        host_ip="10.244.0.1",
        pod_ip="10.244.0.9",
        start_time=T0,
        sandbox_ready=True,
        init_complete=init_complete,
        init_containers=list(inits),
        containers=list(containers),
    )


@pytest.mark.parametrize(
    ("policy", "states", "phase"),
    [
        ("Always", [Waiting("ContainerCreating")], "Pending"),
        ("Always", [Running(T0)], "Running"),
        ("Never", [Running(T0), done(1)], "Running"),
        ("Never", [done(0), done(0)], "Succeeded"),
        ("Never", [done(0), done(2)], "Failed"),
        ("OnFailure", [done(0)], "Succeeded"),
        ("OnFailure", [done(1)], "Running"),
        ("Always", [done(0)], "Running"),
        ("Never", [Running(T0), Waiting("ContainerCreating")], "Pending"),
    ],
)
def test_phase_follows_the_kubelet_rules(policy: str, states: list[Waiting | Running | Terminated], phase: str) -> None:
    containers = [rec(f"c{i}", s) for i, s in enumerate(states)]
    assert pod_phase(facts(policy, *containers)) == phase


def test_a_container_in_back_off_counts_by_its_last_run() -> None:
    crashing = rec("c", Waiting("CrashLoopBackOff"), last=done(1))
    assert pod_phase(facts("Always", crashing)) == "Running"


def test_pending_until_init_containers_finish_and_failed_when_one_fails_under_never() -> None:
    main = rec("main", Waiting("PodInitializing"))
    assert pod_phase(facts("Never", main, init_complete=False, inits=(rec("i", Running(T0)),))) == "Pending"
    assert pod_phase(facts("Never", main, init_complete=False, inits=(rec("i", done(1)),))) == "Failed"
    assert pod_phase(facts("Always", main, init_complete=False, inits=(rec("i", done(1)),))) == "Pending"


def test_a_forced_phase_wins() -> None:
    f = facts("Always", rec("c", Running(T0)))
    f.forced_phase = "Failed"
    assert pod_phase(f) == "Failed"


def test_container_status_shapes() -> None:
    running = ContainerRecord("c", "img", Running(T0), restart_count=2, container_id="devcluster://42")
    assert container_status(running) == {
        "name": "c",
        "image": "img",
        "imageID": "",
        "ready": True,
        "restartCount": 2,
        "started": True,
        "state": {"running": {"startedAt": "2030-01-02T03:04:05Z"}},
        "lastState": {},
        "containerID": "devcluster://42",
    }
    never_started = ContainerRecord("c", "img", Terminated(128, "StartError", T1, None, "exec: nope"))
    term = container_status(never_started)["state"]["terminated"]
    assert term == {
        "exitCode": 128,
        "reason": "StartError",
        "finishedAt": "2030-01-02T03:04:12Z",
        "startedAt": "2030-01-02T03:04:12Z",
        "message": "exec: nope",
    }


def conditions(status: dict[str, object]) -> dict[str, tuple[object, object]]:
    return {c["type"]: (c["status"], c.get("reason")) for c in status["conditions"]}  # type: ignore[index, attr-defined, union-attr]


def test_conditions_of_a_running_and_a_succeeded_pod() -> None:
    running = pod_status(facts("Always", rec("c", Running(T0))), {}, T0)
    assert conditions(running) == {
        "PodReadyToStartContainers": ("True", None),
        "Initialized": ("True", None),
        "ContainersReady": ("True", None),
        "Ready": ("True", None),
    }
    assert running["podIPs"] == [{"ip": "10.244.0.9"}] and running["startTime"] == "2030-01-02T03:04:05Z"
    succeeded = pod_status(facts("Never", rec("c", done(0))), {}, T0)
    assert conditions(succeeded)["Ready"] == ("False", "PodCompleted")
    pending = pod_status(
        facts("Never", rec("c", Waiting("PodInitializing")), init_complete=False, inits=(rec("i", Running(T0)),)),
        {},
        T0,
    )
    assert conditions(pending)["Initialized"] == ("False", "ContainersNotInitialized")


def test_readiness_gates_hold_ready_back() -> None:
    f = facts("Always", rec("c", Running(T0)))
    f.readiness_gates = ("example.com/gate",)
    status = pod_status(f, {}, T0)
    assert conditions(status)["ContainersReady"] == ("True", None)
    assert conditions(status)["Ready"] == ("False", "ReadinessGatesNotReady")
    gated = pod_status(f, {"conditions": [{"type": "example.com/gate", "status": "True"}]}, T0)
    assert conditions(gated)["Ready"] == ("True", None)


def test_transition_times_move_only_when_a_condition_flips() -> None:
    first = pod_status(facts("Always", rec("c", Running(T0))), {}, T0)
    again = pod_status(facts("Always", rec("c", Running(T0))), first, T1)
    assert again["conditions"] == first["conditions"]
    crashed = pod_status(facts("Always", rec("c", Waiting("CrashLoopBackOff"), last=done(1))), first, T1)
    times = {c["type"]: c["lastTransitionTime"] for c in crashed["conditions"]}
    assert times["Ready"] == "2030-01-02T03:04:12Z"
    assert times["Initialized"] == "2030-01-02T03:04:05Z"


def test_patches_carry_only_what_changed() -> None:
    first = pod_status(facts("Always", rec("c", Running(T0))), {}, T0)
    assert status_patch(first, first) == {}
    later = pod_status(facts("Always", rec("c", Waiting("CrashLoopBackOff"), last=done(1))), first, T1)
    patch = status_patch(first, later)
    assert set(patch) == {"containerStatuses", "conditions"}
    assert {c["type"] for c in patch["conditions"]} == {"ContainersReady", "Ready"}
    assert status_patch({"message": "old"}, {"message": None}) == {"message": None}
    assert status_patch({}, {"message": None}) == {}
