"""A work queue of object keys, like client-go's: each key is handled by one worker at a time, a key
added while it is being handled is handled again afterwards (once, however often it was added), keys
can be added for later, and failing keys back off exponentially.

The bookkeeping (:class:`KeyQueue`) is synchronous and takes the time as an argument, so it is tested
with a fake clock; :class:`WorkQueue` puts an asyncio face on it.

Expectations: after creating an object for a key, the key is not reconciled again until the cache
has seen the object (or a deadline passes), so a lagging cache cannot make it create a second one.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


def no_priority(key: str) -> int:
    return 0


@dataclass
class KeyQueue:
    """``priority(key)`` orders keys that are due: lower numbers first, first come first within one."""

    base_delay: float = 0.05
    max_delay: float = 60.0
    priority: Callable[[str], int] = no_priority
    _ready: dict[int, deque[str]] = field(default_factory=dict)
    _queued: set[str] = field(default_factory=set)
    _processing: set[str] = field(default_factory=set)
    _dirty: set[str] = field(default_factory=set)
    _later: list[tuple[float, str]] = field(default_factory=list)
    _failures: dict[str, int] = field(default_factory=dict)

    def add(self, key: str) -> None:
        """Handle ``key`` soon; if it is being handled now, once more afterwards."""
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            level = self.priority(key)
            if level not in self._ready:
                self._ready[level] = deque()
                self._ready = dict(sorted(self._ready.items()))
            self._ready[level].append(key)

    def add_after(self, key: str, delay: float, now: float) -> None:
        if delay <= 0:
            self.add(key)
        else:
            heapq.heappush(self._later, (now + delay, key))

    def add_rate_limited(self, key: str, now: float) -> float:
        """Add after the key's back-off (doubling with each failure since the last :meth:`forget`)."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = float(min(self.max_delay, self.base_delay * 2.0**failures))
        self.add_after(key, delay, now)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def pop(self, now: float) -> str | None:
        """The next key to handle now, marked as being handled; None if none is due."""
        while self._later and self._later[0][0] <= now:
            _, key = heapq.heappop(self._later)
            self.add(key)
        line = next((keys for keys in self._ready.values() if keys), None)
        if line is None:
            return None
        key = line.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        """The worker finished ``key``; if it was added meanwhile it goes back in line."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def next_due(self) -> float | None:
        return float(self._later[0][0]) if self._later else None

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._ready.values())

    @property
    def delayed(self) -> int:
        return len(self._later)


class WorkQueue:
    """:class:`KeyQueue` for asyncio workers; ``get`` waits until a key is due."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, priority: Callable[[str], int] = no_priority
    ) -> None:
        self.keys = KeyQueue(priority=priority)
        self.clock = clock
        self._wakeup = asyncio.Event()

    def add(self, key: str) -> None:
        self.keys.add(key)
        self._wakeup.set()

    def add_after(self, key: str, delay: float) -> None:
        self.keys.add_after(key, delay, self.clock())
        self._wakeup.set()

    def add_rate_limited(self, key: str) -> float:
        delay = self.keys.add_rate_limited(key, self.clock())
        self._wakeup.set()
        return delay

    def forget(self, key: str) -> None:
        self.keys.forget(key)

    def done(self, key: str) -> None:
        self.keys.done(key)
        self._wakeup.set()

    async def get(self) -> str:
        while True:
            key = self.keys.pop(self.clock())
            if key is not None:
                if len(self.keys):
                    self._wakeup.set()  # more is due: let another worker look
                return key
            self._wakeup.clear()
            due = self.keys.next_due()
            # A timer rather than asyncio.wait_for, which would start a task per wait (and kopf waits for
            # stray tasks when it stops).
            timer = None
            if due is not None:
                timer = asyncio.get_running_loop().call_later(max(0.0, due - self.clock()), self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()


@dataclass
class Expectations:
    """Objects created for a key and not yet seen in the cache."""

    timeout: float = 30.0
    _pending: dict[str, dict[str, float]] = field(default_factory=dict)
    _owner_of: dict[str, str] = field(default_factory=dict)

    def expect(self, owner: str, child: str, now: float) -> None:
        self._pending.setdefault(owner, {})[child] = now + self.timeout
        self._owner_of[child] = owner

    def observe(self, child: str) -> str | None:
        """``child`` appeared in the cache; returns the owner key whose expectation it met."""
        owner = self._owner_of.pop(child, None)
        if owner is None:
            return None
        children = self._pending.get(owner, {})
        children.pop(child, None)
        if not children:
            self._pending.pop(owner, None)
        return owner

    def wait_for(self, owner: str, now: float) -> float:
        """Seconds until ``owner`` may be reconciled (0: now); expired expectations are dropped."""
        children = self._pending.get(owner)
        if not children:
            return 0.0
        for child, deadline in list(children.items()):
            if deadline <= now:
                del children[child]
                self._owner_of.pop(child, None)
        if not children:
            self._pending.pop(owner, None)
            return 0.0
        return float(min(children.values())) - now

    def forget(self, owner: str) -> None:
        for child in self._pending.pop(owner, {}):
            self._owner_of.pop(child, None)
