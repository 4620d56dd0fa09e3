"""The devcluster supervisor's restart loop, with real child processes (``sleep``) and no cluster."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devcluster import processes, supervisor
from devcluster.components import Component
from devcluster.config import ClusterConfig

pytestmark = pytest.mark.unit


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[supervisor.Supervisor]:
    s = supervisor.Supervisor(ClusterConfig(state_dir=tmp_path))
    yield s
    s.stopping.set()
    s.stop_all()


def add_child(sup: supervisor.Supervisor, name: str, argv: tuple[str, ...]) -> supervisor.Child:
    child = supervisor.Child(Component(name, argv, stop_timeout=2))
    sup.children.append(child)
    sup._start(child)
    return child


def run_watch(sup: supervisor.Supervisor) -> threading.Thread:
    thread = threading.Thread(target=sup.watch, daemon=True)
    thread.start()
    return thread


def test_a_child_that_exits_is_started_again(sup: supervisor.Supervisor) -> None:
    child = add_child(sup, "short", ("sleep", "0.1"))
    first = child.record
    run_watch(sup)
    wait_for(lambda: child.record != first and child.record is not None and child.record.alive(), 10, "a restart")
    assert child.restarts >= 1


def test_a_restart_request_replaces_the_process(sup: supervisor.Supervisor) -> None:
    child = add_child(sup, "long", ("sleep", "60"))
    first = child.record
    assert first is not None
    run_watch(sup)
    sup.request_restart("long")
    wait_for(lambda: child.record != first, 10, "the new process")
    assert not first.alive()
    assert child.record is not None and child.record.alive()


def test_a_child_that_cannot_be_started_does_not_end_the_supervisor(
    sup: supervisor.Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = add_child(sup, "flaky", ("sleep", "60"))
    first = child.record
    real_spawn = processes.spawn
    failures = []

    def spawn_failing_once(name: str, argv: tuple[str, ...] | list[str], log: Path) -> subprocess.Popen[bytes]:
        if not failures:
            failures.append(name)
            raise OSError("no such file (injected)")
        return real_spawn(name, argv, log)

    monkeypatch.setattr(processes, "spawn", spawn_failing_once)
    thread = run_watch(sup)
    sup.request_restart("flaky")
    wait_for(lambda: child.record != first and child.record is not None and child.record.alive(), 10, "a retry")
    assert failures == ["flaky"]
    assert thread.is_alive()


def test_a_killed_child_stays_down_until_started_again(sup: supervisor.Supervisor) -> None:
    child = add_child(sup, "node/n1", ("sleep", "60"))
    first = child.record
    assert first is not None
    run_watch(sup)
    sup.request("kill", "node/n1")
    wait_for(lambda: not first.group_alive(), 10, "the kill")
    time.sleep(1.5)  # longer than the first restart back-off: a crashed child would be back by now
    assert child.record == first and child.held

    sup.request("start", "node/n1")
    wait_for(lambda: child.record != first and child.record is not None and child.record.alive(), 10, "the start")
    assert not child.held
