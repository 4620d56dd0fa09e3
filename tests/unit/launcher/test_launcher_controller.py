"""The domain controller with a fake backend and a fake clock: outcomes, grace periods, refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from virt_launcher.errors import InvalidSpecError
from virt_launcher.runtime.backend import FakeBackend
from virt_launcher.runtime.controller import EXIT_FAILED, EXIT_SUCCEEDED, Controller, Phase, PreparedDomain
from virt_launcher.runtime.events import EventLog
from virt_launcher.runtime.protocol import ProtocolError

VMI: dict[str, Any] = {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"domain": {"devices": {}}}}


class FakeTimers:
    """Timers that fire only when the test says time has passed."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, seconds: float, action: Callable[[], None]) -> None:
        self.pending.append((seconds, action))

    def advance(self, seconds: float) -> None:
        due = [p for p in self.pending if p[0] <= seconds]
        self.pending = [p for p in self.pending if p[0] > seconds]
        for _, action in due:
            action()


def prepared(**overrides: Any) -> PreparedDomain:
    return PreparedDomain(**{"xml": "<domain/>", "name": "ns_a", "uuid": "u", "grace_seconds": 30, **overrides})


def make(backend: FakeBackend | None = None, **prep: Any) -> tuple[Controller, FakeBackend, FakeTimers]:
    backend = backend or FakeBackend()
    timers = FakeTimers()
    controller = Controller(backend, lambda vmi: prepared(**prep), EventLog(), timer=timers)
    return controller, backend, timers


def test_sync_starts_the_domain_once_and_repeats_are_no_ops() -> None:
    controller, backend, _ = make()
    assert controller.sync(VMI)["phase"] == "Running"
    assert controller.sync(VMI)["phase"] == "Running"
    assert backend.calls.count("define_and_start") == 1


def test_capabilities_sent_with_the_spec_reach_the_backend_before_the_domain_is_defined() -> None:
    controller, backend, _ = make()
    name = "f" * 64 + ".xml"
    controller.sync(VMI, {name: "<qemuCaps/>"})
    controller.sync(VMI, {name: "<qemuCaps/>"})  # a repeat after the start: nothing more to seed
    assert backend.calls[:2] == [f"seed_capabilities {name}", "define_and_start"]
    assert backend.calls.count(f"seed_capabilities {name}") == 1


def test_sync_with_another_spec_after_start_is_a_conflict() -> None:
    controller, _, _ = make()
    controller.sync(VMI)
    other = {**VMI, "spec": {"domain": {"devices": {}, "cpu": {"cores": 2}}}}
    with pytest.raises(ProtocolError) as exc:
        controller.sync(other)
    assert exc.value.status == 409


def test_a_rejected_spec_leaves_the_launcher_waiting_for_a_good_one() -> None:
    def reject(vmi: dict[str, Any]) -> PreparedDomain:
        raise InvalidSpecError("bad", field="spec.domain.cpu")

    controller = Controller(FakeBackend(), reject, EventLog())
    with pytest.raises(InvalidSpecError):
        controller.sync(VMI)
    assert controller.phase == Phase.WAITING


def test_start_paused_leaves_the_domain_paused() -> None:
    controller, backend, _ = make(start_paused=True)
    controller.sync(VMI)
    status = backend.status()
    assert status is not None and status.state == "Paused"


def test_guest_that_honours_acpi_shutdown_exits_succeeded_before_the_grace_period() -> None:
    controller, _, timers = make()
    controller.sync(VMI)
    controller.shutdown()
    assert controller.wait(0) == EXIT_SUCCEEDED
    timers.advance(30)  # the grace timer firing later changes nothing
    assert controller.exit_code == EXIT_SUCCEEDED


def test_guest_ignoring_acpi_is_destroyed_when_the_grace_period_ends_and_fails() -> None:
    controller, backend, timers = make(FakeBackend(guest_ignores_acpi=True), grace_seconds=7)
    controller.sync(VMI)
    controller.shutdown()
    timers.advance(6.9)
    assert not controller.finished
    timers.advance(7)
    assert controller.wait(0) == EXIT_FAILED
    assert backend.calls[-1] == "destroy"
    assert "grace period" in controller.info()["message"]


def test_explicit_grace_period_overrides_the_vmi_one() -> None:
    controller, _, timers = make(FakeBackend(guest_ignores_acpi=True), grace_seconds=300)
    controller.sync(VMI)
    controller.shutdown(grace=1)
    timers.advance(1)
    assert controller.exit_code == EXIT_FAILED


def test_zero_grace_destroys_at_once() -> None:
    controller, backend, _ = make(FakeBackend(guest_ignores_acpi=True))
    controller.sync(VMI)
    controller.shutdown(grace=0)
    assert controller.exit_code == EXIT_FAILED
    assert "shutdown" not in backend.calls


def test_kill_fails_the_vmi() -> None:
    controller, _, _ = make()
    controller.sync(VMI)
    assert controller.kill()["outcome"] == "Failed"


def test_qemu_crash_fails_the_vmi_and_guest_poweroff_succeeds() -> None:
    crashed, backend, _ = make()
    crashed.sync(VMI)
    backend.crash()
    assert crashed.exit_code == EXIT_FAILED
    powered_off, backend2, _ = make()
    powered_off.sync(VMI)
    backend2.guest_poweroff()
    assert powered_off.exit_code == EXIT_SUCCEEDED


def test_stop_before_any_spec_ends_cleanly_and_a_late_sync_does_not_start() -> None:
    controller, backend, _ = make()
    controller.shutdown()
    assert controller.exit_code == EXIT_SUCCEEDED
    with pytest.raises(ProtocolError):
        controller.sync(VMI)
    assert "define_and_start" not in backend.calls


def test_commands_need_a_running_domain() -> None:
    controller, _, _ = make()
    for command in (controller.pause, controller.unpause, controller.reset, controller.soft_reboot):
        with pytest.raises(ProtocolError) as exc:
            command()
        assert exc.value.status == 409


def test_pause_unpause_reset_reboot_are_recorded_as_events() -> None:
    controller, _, _ = make()
    controller.sync(VMI)
    controller.pause()
    with pytest.raises(ProtocolError):
        controller.pause()  # already paused: libvirt refuses, the client learns why
    controller.unpause()
    controller.reset()
    controller.soft_reboot()
    events, _ = controller.events.since(1)
    assert [e.type for e in events] == ["Defined", "Started", "Paused", "Resumed", "Rebooted", "Rebooted"]
