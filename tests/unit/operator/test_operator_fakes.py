"""Helpers, no tests: hand-made manifests and a tiny cluster model to drive the operator's pure reconcile."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from virt_operator.installconfig import HANDLER_SERVER_SECRET, InstallConfig
from virt_operator.kinds import Key, key_of
from virt_operator.plan import Applied, Apply, Delete, Observed, Plan, SetMetadata, stamp
from virt_operator.reconcile import Manifests, Settings, reconcile, wanted

Obj = dict[str, Any]
# Near the real time: certificates are issued with the real clock (podvirt_common.certs).
T0 = datetime.now(UTC).replace(microsecond=0)
LABELS = {"app.kubernetes.io/part-of": "podvirt"}


def _obj(api_version: str, kind: str, name: str, namespace: str | None = None, **fields: Any) -> Obj:
    meta: Obj = {"name": name, "labels": dict(LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def _template(config: InstallConfig, name: str, volumes: list[Obj] | None = None) -> Obj:
    args = ["--use-emulation"] if config.use_emulation else []
    container = {"name": name, "image": config.image(name), "args": args}
    return {
        "metadata": {"labels": {"kubevirt.io": name}},
        "spec": {"containers": [container], "volumes": volumes or []},
    }


def components(config: InstallConfig) -> list[Obj]:
    ns = config.namespace
    handler_volume = {"name": "certs", "secret": {"secretName": HANDLER_SERVER_SECRET}}
    objects = [
        _obj("scheduling.k8s.io/v1", "PriorityClass", "kubevirt-cluster-critical", value=1000),
        _obj("v1", "ServiceAccount", "virt-api", ns),
        _obj("rbac.authorization.k8s.io/v1", "ClusterRole", "kubevirt.io:view", rules=[]),
        _obj(
            "apps/v1",
            "Deployment",
            "virt-api",
            ns,
            spec={"replicas": config.api_replicas, "template": _template(config, "virt-api")},
        ),
        _obj(
            "apps/v1",
            "Deployment",
            "virt-controller",
            ns,
            spec={"replicas": config.controller_replicas, "template": _template(config, "virt-controller")},
        ),
        _obj(
            "apps/v1",
            "DaemonSet",
            "virt-handler",
            ns,
            spec={"template": _template(config, "virt-handler", [handler_volume])},
        ),
    ]
    if "ExtraRole" in config.feature_gates:
        objects.append(_obj("rbac.authorization.k8s.io/v1", "ClusterRole", "extra", rules=[]))
    return objects


def operator_install(config: InstallConfig) -> list[Obj]:
    return [
        _obj("v1", "Namespace", config.namespace),
        _obj("scheduling.k8s.io/v1", "PriorityClass", "kubevirt-cluster-critical", value=1000),
    ]


MANIFESTS = Manifests(components, operator_install)
SETTINGS = Settings(
    base=InstallConfig(registry="reg.example/podvirt", tag="v1"), degraded_after=60, operator_version="v1"
)


def kubevirt(name: str = "kubevirt", namespace: str = "kubevirt", created: datetime = T0, **spec: Any) -> Obj:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec,
    }


@dataclass
class World:
    """A cluster as the operator sees it: the KubeVirt resources, the objects, VMs per namespace, and the
    operator's memory. ``step`` reconciles once and carries the plan out the way the apiserver would."""

    kv: Obj
    others: list[Obj] = field(default_factory=list)
    objects: dict[Key, Obj] = field(default_factory=dict)
    workloads: dict[str, tuple[int, int]] = field(default_factory=dict)
    applied: dict[Key, Applied] = field(default_factory=dict)
    unready_since: dict[str, datetime] = field(default_factory=dict)
    now: datetime = T0
    settings: Settings = SETTINGS
    manifests: Manifests = MANIFESTS
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    gone: bool = False

    def observe(self) -> Observed:
        keys = wanted(self.kv, self.manifests, self.settings)
        deleting = bool(self.kv["metadata"].get("deletionTimestamp"))
        return Observed(
            kv=copy.deepcopy(self.kv),
            kubevirts=[copy.deepcopy(self.kv), *copy.deepcopy(self.others)],
            live={k: copy.deepcopy(o) for k, o in self.objects.items() if k in keys},
            workloads=dict(self.workloads) if deleting else {},
            applied=dict(self.applied),
            unready_since=dict(self.unready_since),
        )

    def plan(self) -> Plan:
        return reconcile(self.observe(), self.manifests, self.settings, self.now)

    def step(self, advance: float = 0.0) -> Plan:
        self.now += timedelta(seconds=advance)
        plan = self.plan()
        for action in plan.actions:
            self._carry_out(action)
        if plan.status is not None:
            self.kv["status"] = plan.status
        for action in plan.after_status:
            self._carry_out(action)
        self.unready_since = dict(plan.unready_since)
        if self.kv["metadata"].get("deletionTimestamp") and not self.kv["metadata"].get("finalizers"):
            self.gone = True
        return plan

    def _carry_out(self, action: object) -> None:
        if isinstance(action, Apply):
            old = self.objects.get(action.key)
            body = copy.deepcopy(action.body)
            meta = body["metadata"]
            meta["resourceVersion"] = str(next(self._rv))
            meta["uid"] = (old or {}).get("metadata", {}).get("uid") or f"uid-{action.key.name}"
            if action.key.kind in ("Deployment", "DaemonSet"):
                generation = (old or {}).get("metadata", {}).get("generation", 0)
                changed = old is None or old.get("spec") != body.get("spec")
                meta["generation"] = generation + 1 if changed else generation
                body["status"] = (old or {}).get("status", {})
            self.objects[action.key] = body
            self.applied[action.key] = Applied(action.digest, stamp(body))
        elif isinstance(action, Delete):
            if action.propagation == "Foreground" and action.key in self.objects:
                self.objects[action.key]["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
            else:
                self.objects.pop(action.key, None)
        elif isinstance(action, SetMetadata):
            meta = self.kv["metadata"]
            if action.finalizers is not None:
                meta["finalizers"] = action.finalizers
            if action.inventory is not None:
                meta.setdefault("annotations", {})["podvirt.io/installed"] = action.inventory
            meta["resourceVersion"] = str(next(self._rv))

    # -- what the cluster's controllers do ----------------------------------------------------------

    def workload(self, name: str) -> Obj:
        return next(o for k, o in self.objects.items() if k.kind in ("Deployment", "DaemonSet") and k.name == name)

    def become_ready(self, *names: str, ready: bool = True) -> None:
        """The workloads' controllers roll the current spec out and (if ``ready``) every pod is ready."""
        for key, obj in self.objects.items():
            if key.kind not in ("Deployment", "DaemonSet") or (names and key.name not in names):
                continue
            gen = obj["metadata"]["generation"]
            if key.kind == "Deployment":
                n = obj["spec"]["replicas"]
                obj["status"] = {
                    "observedGeneration": gen,
                    "replicas": n,
                    "updatedReplicas": n,
                    "readyReplicas": n if ready else 0,
                }
            else:
                obj["status"] = {
                    "observedGeneration": gen,
                    "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": 2,
                    "numberReady": 2 if ready else 1,
                }

    def finish_foreground_deletions(self) -> None:
        for key in [k for k, o in self.objects.items() if o["metadata"].get("deletionTimestamp")]:
            del self.objects[key]

    def delete_kv(self) -> None:
        self.kv["metadata"]["deletionTimestamp"] = "2030-01-02T00:00:00Z"

    def set_spec(self, **spec: Any) -> None:
        self.kv["spec"] = spec
        self.kv["metadata"]["generation"] += 1


def condition(kv: Obj, type_: str) -> Obj:
    return next(c for c in kv.get("status", {}).get("conditions", []) if c["type"] == type_)


def keys_of(objects: list[Obj]) -> set[Key]:
    return {key_of(o) for o in objects}
