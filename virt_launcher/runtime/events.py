"""Domain events: a bounded, sequence-numbered log the handler can poll, and a pusher to its notify socket."""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MAX_EVENTS = 1000


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class DomainEvent:
    seq: int
    time: float
    type: str
    reason: str
    state: str
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "seq": self.seq,
            "time": rfc3339(self.time),
            "type": self.type,
            "reason": self.reason,
            "state": self.state,
        }
        if self.message:
            body["message"] = self.message
        return body


class EventLog:
    """The last ``MAX_EVENTS`` events; readers ask for everything from a sequence number on."""

    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = MAX_EVENTS) -> None:
        self._events: collections.deque[DomainEvent] = collections.deque(maxlen=capacity)
        self._next = 1
        self._cond = threading.Condition()
        self._clock = clock
        self._listeners: list[Callable[[DomainEvent], None]] = []

    def subscribe(self, listener: Callable[[DomainEvent], None]) -> None:
        self._listeners.append(listener)

    def append(self, type_: str, reason: str, state: str, message: str | None = None) -> DomainEvent:
        with self._cond:
            event = DomainEvent(self._next, self._clock(), type_, reason, state, message)
            self._next += 1
            self._events.append(event)
            self._cond.notify_all()
        log.info("domain event %s (%s), state %s", type_, reason, state, extra={"event": event.to_dict()})
        for listener in self._listeners:
            listener(event)
        return event

    @property
    def next_seq(self) -> int:
        with self._cond:
            return self._next

    def since(self, seq: int, wait: float = 0.0) -> tuple[list[DomainEvent], int]:
        """Events with ``seq >= seq``, waiting up to ``wait`` seconds for the first one; and the next seq."""
        with self._cond:
            if wait > 0 and self._next <= seq:
                self._cond.wait_for(lambda: self._next > seq, timeout=wait)
            return [e for e in self._events if e.seq >= seq], self._next


class NotifyPusher:
    """Pushes events, in order, to the handler's notify socket; keeps retrying with backoff, bounded queue."""

    def __init__(self, path: Path, owner: dict[str, str], queue_limit: int = MAX_EVENTS) -> None:
        self.path = path
        self.owner = owner
        self._queue: collections.deque[DomainEvent] = collections.deque(maxlen=queue_limit)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def __call__(self, event: DomainEvent) -> None:
        with self._cond:
            self._queue.append(event)
            self._cond.notify()

    def close(self, flush_timeout: float = 2.0) -> None:
        """Stops after trying to deliver what is queued for at most ``flush_timeout`` seconds."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(flush_timeout)

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                batch = list(self._queue)
            try:
                self._post(batch)
            except OSError as exc:
                if self._closed:
                    return
                log.debug("notify socket %s unavailable (%s); retrying in %.1fs", self.path, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            sent = {e.seq for e in batch}
            with self._cond:
                while self._queue and self._queue[0].seq in sent:
                    self._queue.popleft()

    def _post(self, batch: list[DomainEvent]) -> None:
        payload = json.dumps({"vmi": self.owner, "events": [e.to_dict() for e in batch]}).encode()
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: launcher\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.path))
            sock.sendall(head + payload)
            status_line = sock.recv(1024).split(b"\r\n", 1)[0]
        parts = status_line.split(b" ")
        if len(parts) < 2 or not parts[1].startswith(b"2"):
            raise OSError(f"notify socket answered {status_line[:80]!r}")
