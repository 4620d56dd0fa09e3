"""Pod status as a kubelet reports it, computed by pure functions from what the agent knows.

The agent keeps one :class:`ContainerRecord` per container; :func:`pod_status` turns those (and a
few pod-level facts) into the ``status`` the API shows: phase, conditions, container statuses.
The rules follow the kubelet's: a container waiting without a previous run keeps the pod Pending;
a stopped container under ``restartPolicy: Always`` keeps it Running; all stopped with exit code 0
makes it Succeeded; a failure under ``Never`` makes it Failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Conditions this agent owns; others (PodScheduled, DisruptionTarget, readiness gates) are left alone.
OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: dt.datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: dt.datetime
    started_at: dt.datetime | None = None
    message: str = ""
    signal: int | None = None
    container_id: str = ""


ContainerState = Waiting | Running | Terminated


def exit_reason(exit_code: int) -> str:
    """The reason a container runtime gives a container that exited on its own."""
    return "Completed" if exit_code == 0 else "Error"


@dataclass
class ContainerRecord:
    """What the agent knows of one container; mutable, owned by the pod's worker."""

    name: str
    image: str
    state: ContainerState
    last_state: Terminated | None = None
    restart_count: int = 0
    container_id: str = ""
    # Probe results of the current run; True when the container has no such probe.
    startup_passed: bool = True
    readiness_passed: bool = True

    @property
    def ready(self) -> bool:
        return isinstance(self.state, Running) and self.startup_passed and self.readiness_passed

    @property
    def started(self) -> bool:
        return isinstance(self.state, Running) and self.startup_passed

    def finished_ok(self) -> bool:
        return isinstance(self.state, Terminated) and self.state.exit_code == 0


@dataclass
class PodFacts:
    """Pod-level facts beside the containers: where it runs and what the agent has done so far."""

    restart_policy: str
    host_ip: str
    pod_ip: str | None = None
    start_time: dt.datetime | None = None
    sandbox_ready: bool = False
    init_complete: bool = False
    # Set when the agent decides the phase itself (a pod it lost, or stopped on shutdown).
    forced_phase: str | None = None
    reason: str | None = None
    message: str | None = None
    readiness_gates: tuple[str, ...] = ()
    init_containers: list[ContainerRecord] = field(default_factory=list)
    containers: list[ContainerRecord] = field(default_factory=list)


def pod_phase(facts: PodFacts) -> str:
    if facts.forced_phase is not None:
        return facts.forced_phase
    if not facts.init_complete:
        for rec in facts.init_containers:
            if facts.restart_policy == "Never" and isinstance(rec.state, Terminated) and rec.state.exit_code != 0:
                return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for rec in facts.containers:
        last: Terminated | None = None
        if isinstance(rec.state, Running):
            running += 1
            continue
        if isinstance(rec.state, Terminated):
            last = rec.state
        elif rec.last_state is not None:
            last = rec.last_state
        if last is None:
            waiting += 1
        else:
            stopped += 1
            succeeded += last.exit_code == 0
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if facts.restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if facts.restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state_json(state: ContainerState | None) -> dict[str, Any]:
    if state is None:
        return {}
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    term: dict[str, Any] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "finishedAt": rfc3339(state.finished_at),
    }
    # The API requires startedAt on a terminated state; a container that never started reports its end.
    term["startedAt"] = rfc3339(state.started_at or state.finished_at)
    if state.message:
        term["message"] = state.message
    if state.signal is not None:
        term["signal"] = state.signal
    if state.container_id:
        term["containerID"] = state.container_id
    return {"terminated": term}


def container_status(rec: ContainerRecord) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": rec.name,
        "image": rec.image,
        "imageID": "",
        "ready": rec.ready,
        "restartCount": rec.restart_count,
        "started": rec.started,
        "state": _state_json(rec.state),
        "lastState": _state_json(rec.last_state),
    }
    if rec.container_id:
        status["containerID"] = rec.container_id
    return status


def _not_done(records: Sequence[ContainerRecord], done: Any) -> list[str]:
    return [r.name for r in records if not done(r)]


def conditions(facts: PodFacts, phase: str, gates: Mapping[str, str]) -> dict[str, tuple[str, str, str]]:
    """The owned conditions as {type: (status, reason, message)}; ``gates`` maps readiness gate types to status."""
    out: dict[str, tuple[str, str, str]] = {}
    out["PodReadyToStartContainers"] = ("True" if facts.sandbox_ready else "False", "", "")
    if phase == "Succeeded" or facts.init_complete:
        out["Initialized"] = ("True", "PodCompleted" if phase == "Succeeded" and facts.init_containers else "", "")
    else:
        pending = _not_done(facts.init_containers, ContainerRecord.finished_ok)
        out["Initialized"] = (
            "False",
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending)}]",
        )
    if phase == "Succeeded":
        ready = ("False", "PodCompleted", "")
    else:
        unready = _not_done(facts.containers, lambda r: r.ready)
        if unready or phase != "Running":
            names = unready or [r.name for r in facts.containers]
            ready = ("False", "ContainersNotReady", f"containers with unready status: [{' '.join(names)}]")
        else:
            ready = ("True", "", "")
    out["ContainersReady"] = ready
    missing_gates = [g for g in facts.readiness_gates if gates.get(g) != "True"]
    if ready[0] == "True" and missing_gates:
        out["Ready"] = (
            "False",
            "ReadinessGatesNotReady",
            f'the status of pod readiness gates is not "True", but {missing_gates}',
        )
    else:
        out["Ready"] = ready
    return out


def pod_status(facts: PodFacts, previous: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The full ``status`` this agent would write, keeping transition times of unchanged conditions."""
    phase = pod_phase(facts)
    prev_conditions = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    gates = {str(t): str(c.get("status")) for t, c in prev_conditions.items()}
    conds = []
    for ctype, (cstatus, reason, message) in conditions(facts, phase, gates).items():
        before = prev_conditions.get(ctype)
        changed = before is None or before.get("status") != cstatus
        cond: dict[str, Any] = {
            "type": ctype,
            "status": cstatus,
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(now) if changed or before is None else before.get("lastTransitionTime"),
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        conds.append(cond)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conds,
        "hostIP": facts.host_ip,
        "hostIPs": [{"ip": facts.host_ip}],
        "containerStatuses": [container_status(r) for r in facts.containers],
    }
    if facts.init_containers:
        status["initContainerStatuses"] = [container_status(r) for r in facts.init_containers]
    if facts.pod_ip:
        status["podIP"] = facts.pod_ip
        status["podIPs"] = [{"ip": facts.pod_ip}]
    if facts.start_time is not None:
        status["startTime"] = rfc3339(facts.start_time)
    status["reason"] = facts.reason
    status["message"] = facts.message
    return status


def status_patch(last_sent: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of ``status`` carrying only what changed since ``last_sent``.

    Conditions merge by type on the server, so only changed conditions are sent; other lists
    (container statuses) are replaced whole. A field that became None is sent as null (removed).
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key == "conditions":
            before = {c["type"]: c for c in last_sent.get("conditions") or []}
            changed = [c for c in value if before.get(c["type"]) != c]
            if changed:
                patch["conditions"] = changed
        elif value is None:
            if last_sent.get(key) is not None:
                patch[key] = None
        elif last_sent.get(key) != value:
            patch[key] = value
    return patch


def lost_pod_status(pod: Mapping[str, Any], node: str, host_ip: str, now: dt.datetime) -> dict[str, Any]:
    """The status patch for a pod bound here that this agent no longer runs (it restarted)."""
    spec = pod.get("spec", {})
    message = (
        f"the devcluster stand-in node agent on {node} restarted; it does not adopt the processes of a previous "
        "run, so this pod no longer runs"
    )
    gone = Terminated(
        137, "ContainerStatusUnknown", now, None, "The container could not be located when the pod was terminated"
    )
    facts = PodFacts(
        restart_policy=str(spec.get("restartPolicy", "Always")),
        host_ip=host_ip,
        pod_ip=(pod.get("status") or {}).get("podIP"),
        forced_phase="Failed",
        reason="NodeAgentRestarted",
        message=message,
        init_complete=True,
        init_containers=[
            ContainerRecord(c["name"], c.get("image", ""), gone) for c in spec.get("initContainers") or []
        ],
        containers=[ContainerRecord(c["name"], c.get("image", ""), gone) for c in spec.get("containers") or []],
    )
    previous = dict(pod.get("status") or {})
    start = previous.get("startTime")
    desired = pod_status(facts, previous, now)
    if start:
        desired["startTime"] = start
    return status_patch(previous, desired)
