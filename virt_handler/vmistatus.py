"""VMI status from what the handler observed: pure, level-based, and never moving backwards.

Input is the VMI as the API has it and an :class:`Observation` of its launcher and domain; output
is the JSON merge patch for ``status`` (or None when nothing changes). Rules:

- The domain running → phase Running, Ready true; paused → Running with Paused true, Ready false.
- The domain shut off because the guest powered off → Succeeded; crashed, failed, or destroyed
  without a shutdown → Failed, with the reason.
- A launcher the handler cannot reach changes nothing but a ``Ready=False`` condition with
  reason ``LauncherUnreachableError`` after :data:`UNREACHABLE_GRACE` seconds; a running guest is never
  declared Failed because the handler lost its connection.
- Phases only move forward (Scheduled → Running → Succeeded/Failed); Succeeded and Failed are final.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

UNREACHABLE_GRACE = 60.0

PHASE_ORDER = {"": 0, "Pending": 1, "Scheduling": 2, "Scheduled": 3, "Running": 4, "Succeeded": 5, "Failed": 5}
FINAL_PHASES = frozenset({"Succeeded", "Failed"})


class DomainState(enum.StrEnum):
    """libvirt's domain states, as the launcher reports them."""

    NOSTATE = "NoState"
    RUNNING = "Running"
    BLOCKED = "Blocked"
    PAUSED = "Paused"
    SHUTDOWN = "Shutdown"  # shutting down
    SHUTOFF = "Shutoff"
    CRASHED = "Crashed"
    PMSUSPENDED = "PMSuspended"


@dataclass(frozen=True)
class Domain:
    state: DomainState
    reason: str = ""
    # For a shut-off domain: did the guest power itself off (or accept an ACPI shutdown)?
    clean_shutdown: bool = False
    # Whether the launcher has settled the outcome (``clean_shutdown`` is then authoritative); before
    # that, a shut-off domain's reason decides only when it is unambiguous.
    outcome_known: bool = True


@dataclass(frozen=True)
class Observation:
    """What the handler knows about one VMI's launcher at one moment."""

    now: str  # RFC 3339, for timestamps written into status
    domain: Domain | None  # None: the launcher answered but has no domain yet
    reachable: bool = True
    unreachable_for: float = 0.0
    launcher_version: str | None = None
    # status.interfaces as the handler knows them (the pod's address for masquerade interfaces).
    interfaces: tuple[dict[str, Any], ...] | None = None


def _condition(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == ctype), None)


def _set_condition(
    conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    current = _condition(conditions, ctype)
    if current and current.get("status") == status and current.get("reason", "") == reason:
        return conditions
    new = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": now}
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    return [c for c in conditions if c.get("type") != ctype] + [new]


def _drop_condition(conditions: list[dict[str, Any]], ctype: str) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") != ctype]


def target_phase(current: str, domain: Domain | None) -> tuple[str, str]:
    """(phase, reason) the domain implies, not yet checked against moving backwards."""
    if domain is None:
        return current, ""
    if domain.state in (DomainState.RUNNING, DomainState.BLOCKED, DomainState.PAUSED, DomainState.PMSUSPENDED):
        return "Running", ""
    if domain.state == DomainState.SHUTDOWN:
        return (current or "Running"), ""
    if domain.state == DomainState.SHUTOFF:
        if not domain.outcome_known:
            if domain.reason == "Shutdown":
                return "Succeeded", "GuestShutdown"
            if domain.reason in ("Crashed", "Failed"):
                return "Failed", domain.reason
            return current, ""  # destroyed or unknown: the launcher's outcome will tell
        if domain.clean_shutdown:
            return "Succeeded", domain.reason or "GuestShutdown"
        return "Failed", domain.reason or "DomainStopped"
    if domain.state == DomainState.CRASHED:
        return "Failed", domain.reason or "DomainCrashed"
    return current, ""


def status_patch(vmi: dict[str, Any], obs: Observation) -> dict[str, Any] | None:
    """The ``status`` merge patch that brings ``vmi`` in line with ``obs``, or None."""
    status = vmi.get("status") or {}
    phase = status.get("phase", "")
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    patch: dict[str, Any] = {}

    if phase in FINAL_PHASES:
        return None

    if not obs.reachable:
        if obs.unreachable_for >= UNREACHABLE_GRACE:
            msg = f"virt-handler has not reached the launcher for {obs.unreachable_for:.0f} s"
            new = _set_condition(conditions, "Ready", "False", "LauncherUnreachableError", msg, obs.now)
            if new is not conditions:
                patch["conditions"] = new
        return patch or None

    new_phase, reason = target_phase(phase, obs.domain)
    if PHASE_ORDER.get(new_phase, 0) < PHASE_ORDER.get(phase, 0):
        new_phase = phase
    if new_phase != phase:
        patch["phase"] = new_phase
        if reason:
            patch["reason"] = reason
        stamps = list(status.get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": new_phase, "phaseTransitionTimestamp": obs.now})
        patch["phaseTransitionTimestamps"] = stamps

    new_conditions = conditions
    domain = obs.domain
    if new_phase in FINAL_PHASES:
        new_conditions = _drop_condition(_drop_condition(new_conditions, "Paused"), "Ready")
    elif domain is not None and domain.state == DomainState.PAUSED:
        new_conditions = _set_condition(
            new_conditions, "Paused", "True", "PausedByUser", "VMI was paused by user", obs.now
        )
        new_conditions = _set_condition(new_conditions, "Ready", "False", "Paused", "the guest is paused", obs.now)
    elif domain is not None and domain.state in (DomainState.RUNNING, DomainState.BLOCKED):
        new_conditions = _drop_condition(new_conditions, "Paused")
        new_conditions = _set_condition(new_conditions, "Ready", "True", "", "", obs.now)
    if new_conditions != conditions:
        patch["conditions"] = new_conditions

    if (
        obs.interfaces is not None
        and new_phase == "Running"
        and list(obs.interfaces) != list(status.get("interfaces") or [])
    ):
        patch["interfaces"] = list(obs.interfaces)
    if obs.launcher_version and status.get("launcherContainerImageVersion") != obs.launcher_version:
        patch["launcherContainerImageVersion"] = obs.launcher_version
    return patch or None
