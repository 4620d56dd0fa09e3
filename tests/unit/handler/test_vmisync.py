"""One VMI's sync as the handler drives it, with a fake launcher, a fake apiserver and a fake clock: the
spec is handed over without holding the worker, and Running is stamped when the domain runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from virt_handler import vmisync
from virt_handler.launcher_client import DomainInfo, LauncherError, LauncherTarget, encode_capabilities
from virt_handler.vmistatus import Domain, DomainState
from virt_handler.vmisync import HANDOVER_RETRY, STARTUP_WINDOW, VMISync, next_look

pytestmark = pytest.mark.unit

STARTED = 1_800_000_000.0  # 2027-01-15T08:00:00Z
QEMU_START = 42.0  # seconds the launcher takes to prepare disks and start QEMU on a loaded node
KEY = "ns/vm"


class Clock:
    def __init__(self) -> None:
        self.now = STARTED

    def __call__(self) -> float:
        return self.now


class Launcher:
    """One launcher waiting for its spec; taking it moves the clock by :data:`QEMU_START` seconds, once
    ``release`` is set, and then runs the domain (or refuses with ``refusal``)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.release = threading.Event()
        self.syncs = 0
        self.capabilities: list[bytes] = []
        self.running = False
        self.refusal: LauncherError | None = None

    def client(self, target: LauncherTarget) -> Launcher:
        return self

    def domain(self) -> DomainInfo:
        if self.running:
            return DomainInfo("Running", Domain(DomainState.RUNNING, "Booted"), None, {})
        return DomainInfo("WaitingForSpec", None, None, {})

    def sync(self, vmi: dict[str, Any], qemu_capabilities: bytes = b"") -> DomainInfo:
        self.syncs += 1
        self.capabilities.append(qemu_capabilities)
        assert self.release.wait(5)
        self.clock.now += QEMU_START
        if self.refusal is not None:
            raise self.refusal
        self.running = True
        return self.domain()


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def merge_patch(self, resource: Any, name: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.patches.append(body["status"])
        return {}


class FakeDHCP:
    def forget(self, key: str) -> None:
        pass


class Woken:
    """The work queue: which keys were added, and a way to wait for one."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.event = threading.Event()

    def __call__(self, key: str) -> None:
        self.keys.append(key)
        self.event.set()


def scheduled_vmi() -> dict[str, Any]:
    return {
        "metadata": {"name": "vm", "namespace": "ns", "uid": "vmi-uid", "resourceVersion": "7"},
        "spec": {"domain": {"devices": {}}},  # no masquerade interface: no pod network to prepare
        "status": {
            "phase": "Scheduled",
            "phaseTransitionTimestamps": [{"phase": "Scheduled", "phaseTransitionTimestamp": "2027-01-15T07:59:58Z"}],
        },
    }


def running_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "virt-launcher-vm-abcde", "uid": "pod-uid", "ownerReferences": [{"uid": "vmi-uid"}]},
        "spec": {"nodeName": "n", "containers": [{"name": "compute", "securityContext": {"runAsUser": 107}}]},
        "status": {"phase": "Running", "podIP": "10.0.0.5"},
    }


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[VMISync, Launcher, FakeKube, Woken, Clock]:
    clock, kube, woken = Clock(), FakeKube(), Woken()
    launcher = Launcher(clock)
    monkeypatch.setattr(vmisync, "LauncherClient", launcher.client)
    sync = VMISync(kube, "n", Path("/nonexistent"), FakeDHCP(), woken, clock=clock)  # type: ignore[arg-type]
    monkeypatch.setattr(sync, "_watch_events", lambda *_: None)
    return sync, launcher, kube, woken, clock


def finish_handover(sync: VMISync, launcher: Launcher, woken: Woken) -> None:
    launcher.release.set()
    assert woken.event.wait(5), "the hand-over never woke the VMI's sync"
    handover = sync.memory[KEY].handover
    assert handover is not None
    handover.join(5)


def test_the_worker_does_not_wait_for_the_launcher_to_start_the_domain(
    world: tuple[VMISync, Launcher, FakeKube, Woken, Clock],
) -> None:
    sync, launcher, kube, woken, _ = world
    assert sync.sync(KEY, scheduled_vmi(), [running_pod()]) == 5.0  # returns while the launcher still works
    assert sync.sync(KEY, scheduled_vmi(), [running_pod()]) == 5.0
    assert launcher.syncs == 1, "one hand-over at a time"
    assert kube.patches == [], "nothing to say about a domain that is not there yet"
    assert woken.keys == []

    finish_handover(sync, launcher, woken)
    assert woken.keys == [KEY]


def test_the_nodes_qemu_capabilities_go_with_the_spec(
    world: tuple[VMISync, Launcher, FakeKube, Woken, Clock],
) -> None:
    sync, launcher, _, woken, _ = world
    sync.qemu_capabilities = encode_capabilities({"e" * 64 + ".xml": "<qemuCaps/>"})
    sync.sync(KEY, scheduled_vmi(), [running_pod()])
    finish_handover(sync, launcher, woken)
    assert [json.loads(c) for c in launcher.capabilities] == [{"e" * 64 + ".xml": "<qemuCaps/>"}]


def test_running_is_stamped_when_the_launcher_started_the_domain_not_when_the_sync_began(
    world: tuple[VMISync, Launcher, FakeKube, Woken, Clock],
) -> None:
    sync, launcher, kube, woken, _ = world
    sync.sync(KEY, scheduled_vmi(), [running_pod()])
    finish_handover(sync, launcher, woken)

    assert sync.sync(KEY, scheduled_vmi(), [running_pod()]) == 5.0
    (status,) = kube.patches
    assert status["phase"] == "Running"
    stamp = vmisync.rfc3339(STARTED + QEMU_START)
    assert status["phaseTransitionTimestamps"][-1] == {"phase": "Running", "phaseTransitionTimestamp": stamp}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == stamp


def test_a_refused_spec_is_handed_over_again_only_after_a_pause(
    world: tuple[VMISync, Launcher, FakeKube, Woken, Clock],
) -> None:
    sync, launcher, kube, woken, clock = world
    launcher.refusal = LauncherError("disk image missing", 422, "Invalid")
    sync.sync(KEY, scheduled_vmi(), [running_pod()])
    finish_handover(sync, launcher, woken)

    assert sync.sync(KEY, scheduled_vmi(), [running_pod()]) == pytest.approx(HANDOVER_RETRY)
    assert launcher.syncs == 1
    clock.now += HANDOVER_RETRY
    sync.sync(KEY, scheduled_vmi(), [running_pod()])
    handover = sync.memory[KEY].handover
    assert handover is not None
    handover.join(5)
    assert launcher.syncs == 2
    assert kube.patches == []


def test_a_starting_launcher_is_looked_at_again_at_most_a_second_late() -> None:
    waits = []
    waited = 0.0
    while waited < STARTUP_WINDOW:
        step = next_look(waited)
        waits.append(step)
        waited += step
    assert waits[0] <= 0.1 and max(waits) <= 1.0
    assert len(waits) < 80, "about one look a second while it starts, not ten"
    assert next_look(STARTUP_WINDOW) == 30.0 and next_look(3600) == 30.0  # then rarely
