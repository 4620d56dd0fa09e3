"""A de-duplicating work queue: a key queued many times is processed once, never by two workers at once."""

from __future__ import annotations

import collections
import threading
import time


class WorkQueue:
    def __init__(self) -> None:
        self._order: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._delayed: dict[str, float] = {}
        self._cond = threading.Condition()
        self._closed = False

    def add(self, key: str) -> None:
        with self._cond:
            if key in self._active:
                self._again.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._order.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` again in ``delay`` seconds (the earliest of several requests wins)."""
        due = time.monotonic() + delay
        with self._cond:
            self._delayed[key] = min(due, self._delayed.get(key, due))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to work on (mark it :meth:`done` afterwards), or None when closed or timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._order:
                    key = self._order.popleft()
                    self._queued.discard(key)
                    self._active.add(key)
                    return key
                if self._closed:
                    return None
                wait = self._next_due()
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._order.append(key)
                    self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _promote_due(self) -> None:
        now = time.monotonic()
        for key, due in list(self._delayed.items()):
            if due <= now:
                del self._delayed[key]
                if key in self._active:
                    self._again.add(key)
                elif key not in self._queued:
                    self._queued.add(key)
                    self._order.append(key)

    def _next_due(self) -> float | None:
        if not self._delayed:
            return None
        return max(0.0, min(self._delayed.values()) - time.monotonic())
