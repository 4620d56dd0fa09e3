"""Kubernetes Events recorded in the background, so that a reconcile never waits for one.

Reconciles hand their Events to :class:`EventRecorder`, a bounded queue drained by a few threads. When
the apiserver is slow and the queue is full, Events are dropped (and counted) rather than slowing the
controller down: an Event is a courtesy to people, never state anyone relies on.
"""

from __future__ import annotations

import logging
import queue
import threading

from prometheus_client import CollectorRegistry, Counter

from podvirt_common.kube import ApiError

from .actions import Event
from .executor import KubeWriter

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(
        self,
        kube: KubeWriter,
        *,
        component: str,
        registry: CollectorRegistry | None = None,
        threads: int = 2,
        capacity: int = 10000,
    ) -> None:
        self._kube = kube
        self._component = component
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=capacity)
        self.recorded = Counter("podvirt_controller_events_recorded", "Events recorded.", registry=registry)
        self.dropped = Counter("podvirt_controller_events_dropped", "Events dropped (queue full).", registry=registry)
        self._threads = [threading.Thread(target=self._drain, name=f"events-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def __call__(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped.inc()

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self._kube.create_event(
                    event.involved, event.reason, event.message, warning=event.warning, component=self._component
                )
                self.recorded.inc()
            except ApiError as exc:
                log.info("event %s not recorded: %s", event.reason, exc.message)
            except Exception:
                log.exception("event %s not recorded", event.reason)

    def close(self, timeout: float = 2.0) -> None:
        """Record what is queued (for up to ``timeout`` s), then stop."""
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
        for thread in self._threads:
            thread.join(timeout)
