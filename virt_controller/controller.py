"""The running controller: watch events in, keys through a work queue, pure reconciles, plans carried out.

Watch events (from the kopf handlers) update :class:`~virt_controller.cache.ClusterCache` and name the
keys whose answer may have changed: ``vm/<ns>/<name>``, ``vmi/<ns>/<name>``, ``rs/<ns>/<name>``.
Workers take keys from the queue — never the same key twice at once — read the cache, ask the pure
reconcile function of that kind for a plan and carry it out in a thread (the Kubernetes client blocks).
The apiserver's answers to the controller's own writes go into the cache at once, so the next look at
the key sees them even before their watch events arrive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from podvirt_common import logs
from podvirt_common.kube import Resource

from . import cache, names, nodes, objects
from .actions import Create, Plan
from .events import EventRecorder
from .executor import EventSink, KubeWriter, Outcome, Result, execute
from .launcher_pod import LauncherSettings
from .metrics import Metrics
from .replicaset import reconcile_replica_set
from .vm import CrashLoopPolicy, SyncError, reconcile_vm
from .vmi import VMIPolicy, reconcile_vmi
from .workqueue import Expectations, WorkQueue

log = logging.getLogger(__name__)
Obj = dict[str, Any]
KIND_NAMES = {"vm": "VirtualMachine", "vmi": "VirtualMachineInstance", "rs": "VirtualMachineInstanceReplicaSet"}


@dataclass(frozen=True)
class ControllerConfig:
    workers: int = 32
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    crash_loop: CrashLoopPolicy = field(default_factory=CrashLoopPolicy)
    vmi: VMIPolicy = field(default_factory=VMIPolicy)
    component: str = "virt-controller"
    #: Seconds without a handler heartbeat, or not Ready, after which a node's VMIs fail (see ``nodes``).
    node_unresponsive_timeout: float = nodes.DEFAULT_TIMEOUT


def _priority(key: str) -> int:
    """VMIs first: a VMI's pod is what the scheduler and the node wait for, so in a burst every new VMI
    gets its pod before the next VM is looked at."""
    return {"vmi": 0, "rs": 1, "vm": 2}.get(key.partition("/")[0], 3)


def _not_newer(version: Any, than: str) -> bool:
    try:
        return int(str(version)) <= int(than)
    except ValueError:
        return False  # opaque versions: never drop on a guess


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Controller:
    def __init__(
        self,
        kube: KubeWriter,
        config: ControllerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = _utcnow,
        record_events: bool = True,
    ) -> None:
        self.kube = kube
        self.config = config or ControllerConfig()
        self.metrics = metrics or Metrics()
        self.now = now
        self.cache = cache.ClusterCache()
        self.queue = WorkQueue(priority=_priority)
        self.expectations = Expectations()
        self.errors: dict[str, SyncError] = {}
        self.launched: set[str] = set()  # VMI UIDs that had a launcher pod
        self.nodes: dict[str, Obj] = {}  # slim Nodes by name (see virt_controller.nodes)
        self.synced = asyncio.Event()
        self._announced = False
        self._workers: list[asyncio.Task[None]] = []
        self._threads = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="kube")
        self.events: EventSink | None = None
        if record_events:
            self.events = EventRecorder(kube, component=self.config.component, registry=self.metrics.registry)
        self.metrics.watch_cache(self.cache.vmis.__iter__, self.cache.vms.__iter__, self._cache_sizes)

    def _cache_sizes(self) -> dict[str, int]:
        c = self.cache
        return {
            "vm": len(c.vms),
            "vmi": len(c.vmis),
            "rs": len(c.replica_sets),
            "pod": len(c.pods),
            "pvc": len(c.claims),
        }

    # -- events in ---------------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event (``event_type`` None for objects listed at start); updates the cache and the queue."""
        deleted = event_type == "DELETED"
        handler = getattr(self, f"_observe_{kind}")
        handler(dict(body), deleted)
        self.metrics.queue_depth.set(len(self.queue.keys))

    def _observe_vm(self, body: Obj, deleted: bool) -> None:
        if deleted:
            self.cache.vms.remove(body)
            self.errors.pop(f"vm/{objects.key(body)}", None)
            self.expectations.forget(f"vm/{objects.key(body)}")
            return
        self.cache.vms.upsert(cache.slim(body))
        self.queue.add(f"vm/{objects.key(body)}")

    def _observe_vmi(self, body: Obj, deleted: bool) -> None:
        key = objects.key(body)
        if deleted:
            last = self.cache.remove_vmi(body)
            self.launched.discard(objects.uid(body))
            self.errors.pop(f"vmi/{key}", None)
            self.expectations.forget(f"vmi/{key}")
            if last is not None:
                self.metrics.vmi_gone(last, self.now())
        else:
            previous, stored = self.cache.upsert_vmi(cache.slim(body))
            if stored:
                self.metrics.vmi_changed(previous, body, self.now())
            self.queue.add(f"vmi/{key}")
        self._satisfied(f"vmi/{key}")
        self._enqueue_owners(body)

    def _observe_pod(self, body: Obj, deleted: bool) -> None:
        vmi_uid = objects.labels(body).get(names.CREATED_BY_LABEL)
        if deleted:
            self.cache.remove_pod(body)
        else:
            self.cache.upsert_pod(cache.slim_pod(body))
            if vmi_uid:
                self.launched.add(vmi_uid)
        self._satisfied(f"pod/{objects.key(body)}")
        vmi_key = self.cache.vmi_key_by_uid(vmi_uid) if vmi_uid else None
        if vmi_key is not None:
            self.queue.add(f"vmi/{vmi_key}")

    def _observe_node(self, body: Obj, deleted: bool) -> None:
        name = objects.name(body)
        before = self.nodes.pop(name, None)
        if not deleted:
            self.nodes[name] = nodes.slim_node(body)
        # Heartbeats are not news (each VMI on a node looks again when the last one would run out);
        # a node that goes away or changes readiness is.
        if deleted or before is None or objects.status(before) != objects.status(self.nodes[name]):
            for vmi in self.cache.vmis:
                if objects.status(vmi).get("nodeName") == name and not objects.is_final(vmi):
                    self.queue.add(f"vmi/{objects.key(vmi)}")

    def _observe_rs(self, body: Obj, deleted: bool) -> None:
        if deleted:
            self.cache.replica_sets.remove(body)
            self.expectations.forget(f"rs/{objects.key(body)}")
            return
        self.cache.replica_sets.upsert(cache.slim(body))
        self.queue.add(f"rs/{objects.key(body)}")

    def _observe_pvc(self, body: Obj, deleted: bool) -> None:
        if deleted:
            self.cache.claims.remove(body)
        else:
            self.cache.claims.upsert(cache.slim_claim(body))
        for vmi in self.cache.vmis.in_namespace(objects.namespace(body)):
            if objects.phase(vmi) == "Pending":
                self.queue.add(f"vmi/{objects.key(vmi)}")

    def _enqueue_owners(self, vmi: Mapping[str, Any]) -> None:
        ns = objects.namespace(vmi)
        refs = objects.meta(vmi).get("ownerReferences") or []
        for ref in refs:
            if ref.get("kind") == "VirtualMachine":
                self.queue.add(f"vm/{ns}/{ref.get('name')}")
            elif ref.get("kind") == "VirtualMachineInstanceReplicaSet":
                self.queue.add(f"rs/{ns}/{ref.get('name')}")
        if not any(ref.get("controller") for ref in refs):
            # An orphan may be adopted by the VM of its name or by a replica set of its namespace.
            if self.cache.vms.get(objects.key(vmi)) is not None:
                self.queue.add(f"vm/{objects.key(vmi)}")
            for rs in self.cache.replica_sets.in_namespace(ns):
                self.queue.add(f"rs/{objects.key(rs)}")

    # -- resync ----------------------------------------------------------------------------------

    def sweep(self, kind: str, listed: list[Obj], list_version: str) -> int:
        """Drop cached objects of ``kind`` that a fresh list (at ``list_version``) no longer has: a watch
        that had to start over (410 Gone) never reports what was deleted meanwhile. Returns how many."""
        store = {"vm": self.cache.vms, "vmi": self.cache.vmis, "rs": self.cache.replica_sets,
                 "pod": self.cache.pods, "pvc": self.cache.claims}[kind]  # fmt: skip
        present = {objects.uid(o) for o in listed}
        ghosts = [
            o
            for o in store
            if objects.uid(o) not in present and _not_newer(objects.meta(o).get("resourceVersion"), list_version)
        ]
        for ghost in ghosts:
            log.info("dropping %s %s: gone from the apiserver", kind, objects.key(ghost))
            self.observe(kind, "DELETED", ghost)
        return len(ghosts)

    def requeue_all(self) -> None:
        """Look at everything again (level-based: a missed event cannot leave anything behind for long)."""
        for kind, store in (("vm", self.cache.vms), ("vmi", self.cache.vmis), ("rs", self.cache.replica_sets)):
            for obj in store:
                self.queue.add(f"{kind}/{objects.key(obj)}")

    async def resync_forever(self, lister: Callable[[str], tuple[list[Obj], str]], period: float) -> None:
        """Every ``period`` seconds: sweep each kind against a fresh list, then requeue every object."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            if not self.synced.is_set():
                continue
            for kind in ("vm", "vmi", "rs", "pod", "pvc"):
                try:
                    listed, version = await loop.run_in_executor(self._threads, lister, kind)
                except Exception as exc:  # the next round tries again
                    log.warning("resync of %s failed: %s", kind, exc)
                    continue
                self.sweep(kind, listed, version)
            self.requeue_all()

    def _satisfied(self, child: str) -> None:
        owner = self.expectations.observe(child)
        if owner is not None:
            self.queue.add(owner)

    # -- reconciling -------------------------------------------------------------------------------

    def plan(self, key: str) -> Plan | None:
        """The plan for ``key`` from the cache; None when the object is gone."""
        kind, _, obj_key = key.partition("/")
        now = self.now()
        error = self.errors.get(key)
        if kind == "vm":
            vm = self.cache.vms.get(obj_key)
            if vm is None:
                return None
            return reconcile_vm(vm, self.cache.vmis.get(obj_key), now, policy=self.config.crash_loop, sync_error=error)
        if kind == "vmi":
            vmi = self.cache.vmis.get(obj_key)
            if vmi is None:
                return None
            node_problem, recheck = self._node_health(vmi, now)
            plan = reconcile_vmi(
                vmi,
                self.cache.pods_of(objects.uid(vmi)),
                now,
                settings=self.config.launcher,
                claims=self.cache.claims_in(objects.namespace(vmi)),
                launched=objects.uid(vmi) in self.launched,
                policy=self.config.vmi,
                sync_error=error,
                node_problem=node_problem,
            )
            if recheck is not None and (plan.requeue_after is None or recheck < plan.requeue_after):
                plan = replace(plan, requeue_after=recheck)
            return plan
        if kind == "rs":
            rs = self.cache.replica_sets.get(obj_key)
            if rs is None:
                return None
            return reconcile_replica_set(rs, self.cache.vmis.in_namespace(objects.namespace(rs)), now, sync_error=error)
        raise ValueError(f"unknown key kind in {key!r}")

    def _node_health(self, vmi: Mapping[str, Any], now: datetime) -> tuple[str | None, float | None]:
        """Why the VMI's node is unresponsive (or None), and when to look again if it is not. Without any
        Node in view (a controller that cannot see them) nothing is judged."""
        node = objects.status(vmi).get("nodeName")
        if not node or objects.is_final(vmi) or objects.deleting(vmi) or not self.nodes:
            return None, None
        timeout = self.config.node_unresponsive_timeout
        seen = self.nodes.get(str(node))
        return nodes.unresponsive(str(node), seen, now, timeout), nodes.recheck_after(seen, now, timeout)

    async def sync(self, key: str) -> None:
        """Reconcile one key and carry out its plan; requeues as the outcome says."""
        wait = self.expectations.wait_for(key, time.monotonic())
        if wait > 0:
            self.queue.add_after(key, wait)
            return
        kind, _, obj_key = key.partition("/")
        started = time.perf_counter()
        plan = self.plan(key)
        if plan is None:
            self.queue.forget(key)
            return
        outcome = Outcome.DONE
        if plan.actions:
            result = await asyncio.get_running_loop().run_in_executor(self._threads, self._execute, plan)
            self._absorb(key, plan, result)
            outcome = result.outcome
        self.metrics.reconciles.labels(kind, outcome.value).inc()
        self.metrics.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)
        if outcome is Outcome.DONE:
            self.queue.forget(key)
            if plan.requeue_after is not None:
                self.queue.add_after(key, plan.requeue_after)
        else:
            delay = self.queue.add_rate_limited(key)
            if outcome is Outcome.FAILED:
                ns, _, name = obj_key.partition("/")
                log.info("retrying in %.2f s", delay, extra=logs.object_fields(KIND_NAMES[kind], ns, name))

    def _execute(self, plan: Plan) -> Result:
        def counted(verb: str, resource: Resource) -> None:
            self.metrics.writes.labels(verb, resource.plural).inc()

        return execute(self.kube, plan, component=self.config.component, on_write=counted, events=self.events)

    def _absorb(self, key: str, plan: Plan, result: Result) -> None:
        """Take the apiserver's answers into the cache; remember errors and expectations."""
        if result.error is not None:
            self.errors[key] = result.error
        elif result.outcome is Outcome.DONE:
            self.errors.pop(key, None)
        for obj in result.objects:
            kind = obj.get("kind")
            if kind == "Pod":
                self.cache.upsert_pod(cache.slim_pod(obj))
                self.launched.add(str(objects.labels(obj).get(names.CREATED_BY_LABEL)))
            elif kind == "VirtualMachineInstance":
                self.cache.upsert_vmi(cache.slim(obj))
                self.queue.add(f"vmi/{objects.key(obj)}")  # a new VMI needs its pod: no need to wait for the watch
            elif kind == "VirtualMachine":
                self.cache.vms.upsert(cache.slim(obj))
            elif kind == "VirtualMachineInstanceReplicaSet":
                self.cache.replica_sets.upsert(cache.slim(obj))
        for deletion in result.gone:
            gone = {"metadata": {"name": deletion.name, "namespace": deletion.namespace, "uid": deletion.uid or ""}}
            if deletion.resource.plural == "pods":
                self.cache.remove_pod(self.cache.pods.get(objects.key(gone)) or gone)
            elif deletion.resource.plural == "virtualmachineinstances":
                self.cache.remove_vmi(self.cache.vmis.get(objects.key(gone)) or gone)
            self.queue.add_after(key, 0.1)  # look again without the ghost
        # Belt and braces: a create whose answer did not make it into the cache holds its owner back
        # until the watch shows the object.
        now = time.monotonic()
        for action in plan.actions[: result.completed]:
            if not isinstance(action, Create) or action.owner_key is None:
                continue
            child_kind = "pod" if action.resource.plural == "pods" else "vmi"
            child_key = f"{action.namespace}/{objects.name(action.body)}"
            store = self.cache.pods if child_kind == "pod" else self.cache.vmis
            if store.get(child_key) is None:
                self.expectations.expect(
                    f"{key.partition('/')[0]}/{action.owner_key}", f"{child_kind}/{child_key}", now
                )

    # -- workers -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (in the running loop); they wait for the caches to be synced."""
        self._workers = [asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.config.workers)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._threads.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.events, EventRecorder):
            self.events.close()

    async def _worker(self) -> None:
        if not self.synced.is_set():
            await self.synced.wait()
        if not self._announced:  # the first worker to get here says so
            self._announced = True
            self.metrics.ready.set(1)
            log.info("caches synced: %s", self._cache_sizes())
        while True:
            key = await self.queue.get()
            try:
                await self.sync(key)
            except Exception:
                kind, _, obj_key = key.partition("/")
                ns, _, name = obj_key.partition("/")
                log.exception("reconcile crashed", extra=logs.object_fields(KIND_NAMES.get(kind, kind), ns, name))
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)
                self.metrics.queue_depth.set(len(self.queue.keys))
