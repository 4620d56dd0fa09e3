"""The kubelet's back-off numbers, on a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from devcluster.node.backoff import Backoff

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t, dt.UTC)


def test_restarts_go_at_once_then_wait_10s_doubling_to_five_minutes() -> None:
    clock = FakeClock()
    backoff = Backoff(clock)
    delays = []
    for _ in range(9):
        delays.append(backoff.next_delay())
        clock.t += 1
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_a_long_quiet_run_starts_the_back_off_over() -> None:
    clock = FakeClock()
    backoff = Backoff(clock)
    backoff.next_delay()
    assert backoff.next_delay() == 10
    clock.t += 601
    assert backoff.next_delay() == 0


def test_image_pulls_wait_from_the_first_failure() -> None:
    backoff = Backoff(FakeClock(), immediate_first=False)
    assert [backoff.next_delay() for _ in range(3)] == [10, 20, 40]
    backoff.reset()
    assert backoff.next_delay() == 10
