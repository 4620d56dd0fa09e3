"""Restart and image-pull back-off with the kubelet's numbers, on an injectable clock."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@dataclass
class Backoff:
    """The kubelet's back-off: the first retry is immediate, then 10 s doubling to 5 min.

    A container that ran ``reset_after`` seconds without failing starts over from the beginning,
    as the kubelet forgets back-off entries untouched for twice their maximum.
    """

    clock: Clock
    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0
    #: Container restarts retry at once the first time; image pulls wait ``initial`` already.
    immediate_first: bool = True
    _current: float = 0.0
    _last_failure: float | None = None

    def next_delay(self) -> float:
        """Record a failure now; return how long to wait before the next attempt."""
        now = self.clock.monotonic()
        if self._last_failure is None or now - self._last_failure > self.reset_after:
            self._current = 0.0 if self.immediate_first else self.initial
        else:
            self._current = self.initial if self._current == 0.0 else min(self._current * 2, self.maximum)
        self._last_failure = now
        return self._current

    def reset(self) -> None:
        self._current = 0.0
        self._last_failure = None
