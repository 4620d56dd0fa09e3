"""VMI status from the domain: right phase and conditions, never backwards, never Failed on a lost connection."""

from __future__ import annotations

from typing import Any

import pytest

from virt_handler.vmistatus import UNREACHABLE_GRACE, Domain, DomainState, Observation, status_patch

pytestmark = pytest.mark.unit
NOW = "2026-11-25T19:00:00Z"


def vmi(phase: str, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"status": {"phase": phase, "conditions": conditions or [], "phaseTransitionTimestamps": []}}


def seen(state: DomainState, **kw: Any) -> Observation:
    return Observation(now=NOW, domain=Domain(state, **kw))


def test_running_domain_makes_a_scheduled_vmi_running_and_ready() -> None:
    patch = status_patch(vmi("Scheduled"), seen(DomainState.RUNNING))
    assert patch is not None
    assert patch["phase"] == "Running"
    assert patch["phaseTransitionTimestamps"] == [{"phase": "Running", "phaseTransitionTimestamp": NOW}]
    assert [(c["type"], c["status"]) for c in patch["conditions"]] == [("Ready", "True")]


def test_nothing_changes_when_status_already_agrees() -> None:
    first = status_patch(vmi("Scheduled"), seen(DomainState.RUNNING))
    assert first is not None
    settled = {"status": {**vmi("Scheduled")["status"], **first}}
    assert status_patch(settled, seen(DomainState.RUNNING)) is None


def test_paused_domain_sets_paused_and_clears_ready() -> None:
    running = vmi("Running", [{"type": "Ready", "status": "True"}])
    patch = status_patch(running, seen(DomainState.PAUSED, reason="User"))
    assert patch is not None and "phase" not in patch
    by_type = {c["type"]: c for c in patch["conditions"]}
    assert by_type["Paused"]["status"] == "True"
    assert by_type["Ready"]["status"] == "False"


def test_unpause_drops_paused_and_restores_ready() -> None:
    paused = vmi(
        "Running", [{"type": "Paused", "status": "True"}, {"type": "Ready", "status": "False", "reason": "Paused"}]
    )
    patch = status_patch(paused, seen(DomainState.RUNNING))
    assert patch is not None
    assert {c["type"]: c["status"] for c in patch["conditions"]} == {"Ready": "True"}


def test_guest_power_off_is_success() -> None:
    patch = status_patch(vmi("Running"), seen(DomainState.SHUTOFF, reason="Shutdown", clean_shutdown=True))
    assert patch is not None and patch["phase"] == "Succeeded"


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        (Domain(DomainState.CRASHED, "Panicked"), "Panicked"),
        (Domain(DomainState.SHUTOFF, "Crashed"), "Crashed"),
        (Domain(DomainState.SHUTOFF, "Destroyed"), "Destroyed"),
    ],
)
def test_crash_or_kill_is_failure_with_reason(domain: Domain, reason: str) -> None:
    patch = status_patch(vmi("Running"), Observation(NOW, domain))
    assert patch is not None and patch["phase"] == "Failed" and patch["reason"] == reason


@pytest.mark.parametrize("final", ["Succeeded", "Failed"])
def test_final_phases_never_change(final: str) -> None:
    assert status_patch(vmi(final), seen(DomainState.RUNNING)) is None


def test_phase_never_moves_backwards() -> None:
    # A domain that is (again) shutting down must not drag a Running VMI back anywhere.
    assert status_patch(vmi("Running", [{"type": "Ready", "status": "True"}]), seen(DomainState.SHUTDOWN)) is None


def test_unreachable_launcher_never_fails_the_vmi() -> None:
    running = vmi("Running", [{"type": "Ready", "status": "True"}])
    brief = Observation(NOW, None, reachable=False, unreachable_for=UNREACHABLE_GRACE - 1)
    assert status_patch(running, brief) is None
    long = Observation(NOW, None, reachable=False, unreachable_for=UNREACHABLE_GRACE + 1)
    patch = status_patch(running, long)
    assert patch is not None and "phase" not in patch
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "LauncherUnreachableError")


def test_launcher_version_is_recorded_once() -> None:
    obs = Observation(NOW, Domain(DomainState.RUNNING), launcher_version="v0.1.0")
    patch = status_patch(vmi("Running", [{"type": "Ready", "status": "True"}]), obs)
    assert patch == {"launcherContainerImageVersion": "v0.1.0"}


def test_a_shut_off_domain_without_an_outcome_is_decided_only_when_unambiguous() -> None:
    def phase(reason: str) -> str | None:
        patch = status_patch(vmi("Running"), seen(DomainState.SHUTOFF, reason=reason, outcome_known=False))
        return None if patch is None else patch.get("phase")

    assert phase("Shutdown") == "Succeeded"
    assert phase("Crashed") == "Failed"
    assert phase("Destroyed") is None  # a kill in progress: wait for the launcher's outcome
