"""The operator's loop: observe, decide (:func:`reconcile.reconcile`), carry out (:class:`Executor`).

Watches only wake the loop: KubeVirt resources anywhere, and the components' Deployments and DaemonSets
in the operator's namespace. Every pass reconciles every KubeVirt resource from fresh reads (by exact
name), so a missed event costs at most one resync period. Bursts of events are coalesced.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from podvirt_common import logs
from podvirt_common.kube import (
    KUBEVIRTS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    ApiError,
    Kube,
    NotFoundError,
    Resource,
)

from . import status as st
from .executor import Executor
from .installconfig import PART_OF, PART_OF_LABEL
from .kinds import DAEMON_SETS, DEPLOYMENTS, Key
from .plan import FINALIZER, Applied, Observed
from .reconcile import Manifests, Settings, active, reconcile, wanted

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COALESCE_SECONDS = 0.3
MAX_BACKOFF = 60.0


class ObservationError(Exception):
    """A read the reconcile needs was refused (e.g. the operator lacks a permission)."""


class Operator:
    def __init__(
        self,
        kube: Kube,
        manifests: Manifests,
        settings: Settings,
        *,
        namespace: str,
        resync_period: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.manifests = manifests
        self.settings = settings
        self.namespace = namespace
        self.resync_period = resync_period
        self.clock = clock
        self.applied: dict[Key, Applied] = {}
        self.unready_since: dict[str, dict[str, datetime]] = {}
        self.failures: Counter[str] = Counter()
        self.wake = threading.Event()
        self.synced = threading.Event()
        self.executor = Executor(kube, self.applied)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        for resource, namespace, selector in (
            (KUBEVIRTS, None, None),
            (DEPLOYMENTS, self.namespace, f"{PART_OF_LABEL}={PART_OF}"),
            (DAEMON_SETS, self.namespace, f"{PART_OF_LABEL}={PART_OF}"),
        ):
            threading.Thread(
                target=self._watch,
                args=(resource, namespace, selector, stop),
                name=f"watch-{resource.plural}",
                daemon=True,
            ).start()
        while not stop.is_set():
            self.wake.clear()
            delay = self.pass_once()
            self.wake.wait(delay)  # main() sets wake too when it stops the loop
            stop.wait(COALESCE_SECONDS)  # let a burst of events arrive before looking

    def pass_once(self) -> float:
        """Reconcile every KubeVirt resource once; the seconds until the next pass is due."""
        try:
            kubevirts = self.kube.list_objects(KUBEVIRTS)
        except ApiError as exc:
            log.warning("cannot list KubeVirt resources: %s", exc.message)
            return 5.0
        self.synced.set()
        due = self.resync_period
        for kv in kubevirts:
            due = min(due, self.reconcile_one(kv, kubevirts))
        uids = {str((kv.get("metadata") or {}).get("uid")) for kv in kubevirts}
        for uid in set(self.unready_since) - uids:
            del self.unready_since[uid]
        return max(due, 0.1)

    def reconcile_one(self, kv: Obj, kubevirts: list[Obj]) -> float:
        meta = kv.get("metadata") or {}
        uid = str(meta.get("uid"))
        klog = logs.for_object(log, "KubeVirt", meta.get("namespace"), str(meta.get("name")))
        now = self.clock()
        try:
            observed = self.observe(kv, kubevirts)
        except ObservationError as exc:
            klog.warning("cannot observe the installation: %s", exc)
            self._report(kv, str(exc), now)
            return self._backoff(uid)
        plan = reconcile(observed, self.manifests, self.settings, now)
        outcome = self.executor.execute(kv, plan, now)
        self.unready_since[uid] = dict(plan.unready_since)
        if outcome.failure is not None:
            return self._backoff(uid)
        self.failures.pop(uid, None)
        if outcome.stale:
            return 0.5
        return plan.requeue_after if plan.requeue_after is not None else self.resync_period

    def observe(self, kv: Obj, kubevirts: list[Obj]) -> Observed:
        meta = kv.get("metadata") or {}
        live: dict[Key, Obj] = {}
        chosen = active(kubevirts)
        if (chosen or {}).get("metadata", {}).get("uid") == meta.get("uid"):
            for key in sorted(wanted(kv, self.manifests, self.settings)):
                found = self._get(key)
                if found is not None:
                    live[key] = found
        workloads: Mapping[str, tuple[int, int]] = {}
        if meta.get("deletionTimestamp") and FINALIZER in (meta.get("finalizers") or ()):
            workloads = self._count_workloads()
        return Observed(
            kv=kv,
            kubevirts=kubevirts,
            live=live,
            workloads=workloads,
            applied=dict(self.applied),
            unready_since=self.unready_since.get(str(meta.get("uid")), {}),
        )

    # -- reads ------------------------------------------------------------------------------------

    def _get(self, key: Key) -> Obj | None:
        try:
            return self.kube.get(key.resource, key.name, key.namespace or None)
        except NotFoundError:
            return None
        except ApiError as exc:
            raise ObservationError(f"reading {key}: {exc.message}") from None

    def _count_workloads(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, list[int]] = {}
        for index, resource in enumerate((VIRTUAL_MACHINES, VIRTUAL_MACHINE_INSTANCES)):
            try:
                items = self.kube.list_objects(resource)
            except ApiError as exc:
                raise ObservationError(f"listing {resource.plural}: {exc.message}") from None
            for item in items:
                namespace = str((item.get("metadata") or {}).get("namespace"))
                counts.setdefault(namespace, [0, 0])[index] += 1
        return {ns: (vms, vmis) for ns, (vms, vmis) in counts.items()}

    def _watch(self, resource: Resource, namespace: str | None, selector: str | None, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                for _type, _obj in self.kube.watch(resource, namespace, label_selector=selector, timeout_seconds=240):
                    self.wake.set()
                    if stop.is_set():
                        return
            except ApiError as exc:
                log.info("watch of %s ended: %s", resource.plural, exc.message)
                stop.wait(2.0)
            except Exception as exc:  # a dropped connection: watch again
                log.info("watch of %s failed: %s", resource.plural, exc)
                stop.wait(2.0)

    # -- failures ---------------------------------------------------------------------------------

    def _report(self, kv: Obj, message: str, now: datetime) -> None:
        status = st.with_failure(kv.get("status"), st.DEPLOYMENT_FAILED, message, now)
        if status == (kv.get("status") or {}):
            return
        meta = kv.get("metadata") or {}
        try:
            self.kube.merge_patch(
                KUBEVIRTS, str(meta.get("name")), {"status": status}, meta.get("namespace"), subresource="status"
            )
            self.kube.create_event(kv, st.DEPLOYMENT_FAILED, message, warning=True, component="virt-operator")
        except ApiError as exc:
            log.warning("cannot report on KubeVirt %s: %s", meta.get("name"), exc.message)

    def _backoff(self, uid: str) -> float:
        self.failures[uid] += 1
        return float(min(MAX_BACKOFF, 2 ** min(self.failures[uid], 6)))
