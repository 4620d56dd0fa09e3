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
- The guest agent (:mod:`guestagent`), on a running domain: ``AgentConnected`` true while it answers,
  removed when it stops (as KubeVirt does) and when the VMI ends; ``guestOSInfo`` from its last answer
  (kept when it stops); ``status.interfaces`` gain the guest's interface name, MAC and, except for
  masquerade (reached at the pod's address, as in KubeVirt), its addresses, with ``infoSource``
  ``domain, guest-agent``; interfaces only the guest knows are listed with ``infoSource: guest-agent``.
  An agent not asked yet (a handler just started) changes none of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from virt_handler.guestagent import MAX_INTERFACES, AgentState, GuestInterface

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
    # The guest agent as last polled; None: not asked yet.
    agent: AgentState | None = None


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
    agent = obs.agent
    if new_phase in FINAL_PHASES or (agent is not None and not agent.connected):
        new_conditions = _drop_condition(new_conditions, "AgentConnected")
    elif agent is not None and new_phase == "Running":
        new_conditions = _set_condition(new_conditions, "AgentConnected", "True", "", "", obs.now)
    if new_conditions != conditions:
        patch["conditions"] = new_conditions

    if agent is not None and agent.info is not None and new_phase == "Running":
        os_info = agent.info.os_info()
        if os_info and os_info != status.get("guestOSInfo"):
            patch["guestOSInfo"] = os_info
    if obs.interfaces is not None and new_phase == "Running":
        current = list(status.get("interfaces") or [])
        if agent is None and any("guest-agent" in str(i.get("infoSource", "")) for i in current):
            pass  # the agent's part is not known yet, not gone
        else:
            guest = agent.info.interfaces if agent is not None and agent.connected and agent.info else ()
            wanted = with_guest_interfaces(vmi, obs.interfaces, guest)
            if wanted != current:
                patch["interfaces"] = wanted
    if obs.launcher_version and status.get("launcherContainerImageVersion") != obs.launcher_version:
        patch["launcherContainerImageVersion"] = obs.launcher_version
    return patch or None


def _bindings(vmi: dict[str, Any]) -> dict[str, str]:
    """Interface name → its binding (``masquerade``, ``bridge``, ...), from the VMI spec."""
    devices = ((vmi.get("spec") or {}).get("domain") or {}).get("devices") or {}
    out = {}
    for iface in devices.get("interfaces") or []:
        binding = next((b for b in ("masquerade", "bridge", "sriov", "passt", "binding") if b in iface), "")
        out[str(iface.get("name"))] = binding
    return out


def with_guest_interfaces(
    vmi: dict[str, Any], domain: tuple[dict[str, Any], ...], guest: tuple[GuestInterface, ...]
) -> list[dict[str, Any]]:
    """``status.interfaces``: the domain's entries, each joined with the guest interface it is (same MAC,
    or the only one left on both sides), then the guest's other interfaces; at most MAX_INTERFACES."""
    bindings = _bindings(vmi)
    unmatched = list(guest)
    pairs: list[tuple[dict[str, Any], GuestInterface | None]] = []
    for entry in domain:
        mac = str(entry.get("mac", "")).lower()
        found = next((g for g in unmatched if mac and g.mac == mac), None)
        if found is not None:
            unmatched.remove(found)
        pairs.append((entry, found))
    lone = [i for i, (_, g) in enumerate(pairs) if g is None]
    if len(lone) == 1 and len(unmatched) == 1 and not pairs[lone[0]][0].get("mac"):
        pairs[lone[0]] = (pairs[lone[0]][0], unmatched.pop())
    out = []
    for entry, found in pairs:
        joined = dict(entry)
        if found is not None:
            joined["interfaceName"] = found.name
            if found.mac and not joined.get("mac"):
                joined["mac"] = found.mac
            if bindings.get(str(entry.get("name"))) != "masquerade" and found.ips:
                joined["ipAddress"], joined["ipAddresses"] = found.ips[0], list(found.ips)
            joined["infoSource"] = "domain, guest-agent"
        out.append(joined)
    for extra in unmatched:
        only: dict[str, Any] = {"interfaceName": extra.name}
        if extra.ips:
            only["ipAddress"], only["ipAddresses"] = extra.ips[0], list(extra.ips)
        if extra.mac:
            only["mac"] = extra.mac
        only["infoSource"] = "guest-agent"
        out.append(only)
    return out[:MAX_INTERFACES]
