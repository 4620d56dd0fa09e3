"""Phase and conditions of an installation from its components' readiness (pure).

- **Available** only when every Deployment and DaemonSet is rolled out and fully ready.
- **Progressing** while a rollout is under way: a workload's new spec is not yet rolled out, or the
  version asked for has not yet been seen all ready (a first install, an upgrade).
- **Degraded** when a component has been not ready for longer than the grace period (named, with for
  how long and what its status says), or when a write was refused (see :func:`status.with_failure`).
- **phase** ``Deploying`` until the target version has been all ready once, then ``Deployed``: a
  component failing later does not undeploy the installation, it makes it unavailable (and degraded).
  ``observedKubeVirtVersion``/``Registry`` become the target at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from podvirt_common.kube import format_time

from . import status as st
from .installconfig import InstallConfig
from .plan import Event
from .readiness import WorkloadState

Obj = dict[str, Any]


@dataclass(frozen=True)
class Assessment:
    status: Obj
    events: list[Event]
    unready_since: dict[str, datetime]
    requeue_after: float | None


def assess(
    old_status: Mapping[str, Any] | None,
    config: InstallConfig,
    states: list[WorkloadState],
    unready_since: Mapping[str, datetime],
    degraded_after: float,
    operator_version: str,
    now: datetime,
) -> Assessment:
    old = old_status or {}
    unready = [s for s in states if not s.ready]
    all_ready = bool(states) and not unready
    target, registry = config.tag, config.registry
    seen_version, seen_registry = old.get("observedKubeVirtVersion"), old.get("observedKubeVirtRegistry")
    if all_ready:
        seen_version, seen_registry = target, registry
    deployed = seen_version == target and seen_registry == registry
    phase = st.DEPLOYED if deployed else st.DEPLOYING
    progressing = not deployed or any(not s.rolled_out for s in states)
    if not seen_version:
        reason, doing = st.DEPLOYMENT_IN_PROGRESS, f"deploying version {target} from {registry}"
    elif not deployed:
        reason = st.UPDATE_IN_PROGRESS
        doing = f"updating from version {seen_version} ({seen_registry}) to {target} ({registry})"
    else:
        reason, doing = st.UPDATE_IN_PROGRESS, f"rolling out a new configuration of version {target}"

    since = {s.name: unready_since.get(s.name, now) for s in unready}
    grace = timedelta(seconds=degraded_after)
    overdue = [s for s in unready if now - since[s.name] >= grace]
    pending = [since[s.name] + grace - now for s in unready if now - since[s.name] < grace]

    if all_ready:
        ok = "All components are ready."
        conds = [st.Condition(t, t == st.AVAILABLE, st.ALL_COMPONENTS_READY, ok) for t in st.CONDITION_TYPES]
    else:
        waiting = "; ".join(f"{s.name}: {s.detail}" for s in unready)
        if not states:
            why, message = st.COMPONENTS_NOT_READY, "the rendered components contain no Deployment or DaemonSet"
        elif progressing:
            why, message = reason, f"{doing}; waiting for {waiting}"
        else:
            why, message = st.COMPONENTS_NOT_READY, f"not ready: {waiting}"
        conds = [
            st.Condition(st.AVAILABLE, False, why, message),
            st.Condition(st.PROGRESSING, progressing, why, message),
        ]
        if overdue:
            # A fixed moment, not an age: the message must not change (and be written) on every pass.
            detail = "; ".join(f"{s.name} not ready since {format_time(since[s.name])} ({s.detail})" for s in overdue)
            conds.append(st.Condition(st.DEGRADED, True, st.COMPONENT_UNAVAILABLE, detail))
        else:
            conds.append(st.Condition(st.DEGRADED, False, why, message))

    status: Obj = {
        "phase": phase,
        "conditions": st.conditions(old.get("conditions"), conds, now),
        "targetKubeVirtVersion": target,
        "targetKubeVirtRegistry": registry,
    }
    if seen_version:
        status["observedKubeVirtVersion"] = seen_version
        status["observedKubeVirtRegistry"] = seen_registry
    if operator_version:
        status["operatorVersion"] = operator_version

    events = []
    if old.get("phase") != phase:
        events.append(Event(phase, f"{phase} version {target} from {registry}"))
    before = st.condition(old, st.DEGRADED)
    if overdue and (before.get("status"), before.get("reason")) != ("True", st.COMPONENT_UNAVAILABLE):
        events.append(Event(st.COMPONENT_UNAVAILABLE, conds[2].message, warning=True))
    if all_ready and st.condition(old, st.AVAILABLE).get("status") != "True":
        events.append(Event(st.ALL_COMPONENTS_READY, f"version {target} is available"))
    requeue = min(pending).total_seconds() if pending else None
    return Assessment(status, events, since, requeue)
