"""The operator's decision, pure: from a KubeVirt resource and what exists, the plan of writes and the status.

Level-based: nothing here asks how the cluster got into its state. One KubeVirt resource per cluster is
acted on (:func:`active`): the one holding the finalizer, else the oldest; any other is told it is
ignored. For the active one, :func:`reconcile` renders the components at the configuration the
resource asks for, keeps the handler certificates, applies what differs from what the operator last
applied, deletes what it installed that is no longer rendered, and states phase and conditions from
the components' readiness (:mod:`.rollout`). Deletion is :mod:`.uninstall`.

What the operator installed is remembered on the resource itself (annotation ``podvirt.io/installed``):
it is written *before* a new object is created and shrinks only once a removed object is seen gone,
so a crash at any point leaves nothing the operator would forget to remove. Objects are looked at by
exact name (:func:`wanted`), never by a broad list, and only those labelled as podvirt's are deleted.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from podvirt_common.kube import NAMESPACES, SECRETS

from . import handlercerts, rollout, uninstall
from . import status as st
from .installconfig import PART_OF, PART_OF_LABEL, InstallConfig, podvirt_version
from .kinds import CRDS, WORKLOADS, Key, key_of, write_order
from .kvconfig import InvalidSpecError, install_config
from .plan import (
    CERTS_ANNOTATION,
    DIGEST_ANNOTATION,
    FINALIZER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    Action,
    Apply,
    Delete,
    Event,
    Observed,
    Plan,
    SetMetadata,
    decode_inventory,
    encode_inventory,
    stamp,
)
from .readiness import WorkloadState, workload_state

Obj = dict[str, Any]
Render = Callable[[InstallConfig], list[Obj]]


@dataclass(frozen=True)
class Manifests:
    """The two renderings the operator works from (:mod:`virt_operator.manifests` in production)."""

    #: What the operator installs for a KubeVirt resource.
    components: Render
    #: What installed the operator itself (never removed by it, even where ``components`` overlaps).
    operator_install: Render


@dataclass(frozen=True)
class Settings:
    #: The operator's defaults for what a KubeVirt resource leaves unset (registry, tag, kubelet root...).
    base: InstallConfig = field(default_factory=InstallConfig)
    certs: handlercerts.CertPolicy = field(default_factory=handlercerts.CertPolicy)
    #: A component not ready for this long makes the installation Degraded.
    degraded_after: float = 120.0
    operator_version: str = field(default_factory=podvirt_version)


def meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def active(kubevirts: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The KubeVirt resource that is acted on: the one holding the finalizer (it installed podvirt),
    else the oldest; ties by namespace and name."""

    def rank(kv: Mapping[str, Any]) -> tuple[bool, str, str, str]:
        m = meta(kv)
        holds = FINALIZER in (m.get("finalizers") or ())
        return (not holds, str(m.get("creationTimestamp") or ""), str(m.get("namespace")), str(m.get("name")))

    return min(kubevirts, key=rank, default=None)


def digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def is_podvirts(obj: Mapping[str, Any] | None) -> bool:
    return (meta(obj).get("labels") or {}).get(PART_OF_LABEL) == PART_OF


@dataclass(frozen=True)
class _Rendering:
    config: InstallConfig
    objects: dict[Key, Obj]
    protected: frozenset[Key]


def _render(kv: Mapping[str, Any], manifests: Manifests, settings: Settings) -> _Rendering:
    """The components at the resource's configuration; raises InvalidSpecError or the manifests' error."""
    config = install_config(kv, settings.base)
    objects: dict[Key, Obj] = {}
    for obj in manifests.components(config):
        key = key_of(obj)
        if key.resource is SECRETS and key.name in handlercerts.SECRET_NAMES:
            continue  # the operator's own material, never a rendered placeholder
        objects[key] = copy.deepcopy(obj)
    protected = frozenset(key_of(o) for o in manifests.operator_install(config))
    return _Rendering(config, objects, protected)


def _cert_keys(namespace: str) -> dict[str, Key]:
    return {name: Key("v1", "Secret", namespace, name) for name in handlercerts.SECRET_NAMES}


def wanted(kv: Mapping[str, Any], manifests: Manifests, settings: Settings) -> set[Key]:
    """The objects a reconcile of ``kv`` looks at: what it installed, what it would install, its
    certificates, and while uninstalling what virt-api registered by itself."""
    namespace = str(meta(kv).get("namespace") or settings.base.namespace)
    keys = decode_inventory(kv) | set(_cert_keys(namespace).values())
    # A spec or manifests error is reconcile()'s to report; what was installed is still looked at.
    with contextlib.suppress(Exception):
        keys |= set(_render(kv, manifests, settings).objects)
    if meta(kv).get("deletionTimestamp"):
        keys |= set(uninstall.self_registered(namespace))
    return keys


def _status_plan(kv: Mapping[str, Any], status: Obj, actions: list[Action], **plan: Any) -> Plan:
    """A plan that writes ``status`` (only if it differs from the resource's) after ``actions``."""
    return Plan(actions=actions, status=None if status == (kv.get("status") or {}) else status, **plan)


def reconcile(observed: Observed, manifests: Manifests, settings: Settings, now: datetime) -> Plan:
    kv = observed.kv
    chosen = active(observed.kubevirts) or kv
    if meta(chosen).get("uid") != meta(kv).get("uid"):
        return _ignored(kv, chosen, now)
    finalizers = list(meta(kv).get("finalizers") or [])
    if meta(kv).get("deletionTimestamp"):
        if FINALIZER not in finalizers:
            return Plan()
        try:
            rendering: _Rendering | None = _render(kv, manifests, settings)
        except Exception:  # uninstall removes what the inventory and labels say, rendering or not
            rendering = None
        desired = set(rendering.objects) if rendering else set()
        protected = rendering.protected if rendering else frozenset()
        namespace = str(meta(kv).get("namespace") or settings.base.namespace)
        ours = decode_inventory(kv) | desired | set(_cert_keys(namespace).values())
        return uninstall.plan(observed, ours - protected, settings.operator_version, now)
    return _install(observed, manifests, settings, now)


def _ignored(kv: Mapping[str, Any], chosen: Mapping[str, Any], now: datetime) -> Plan:
    where = f"{meta(chosen).get('namespace')}/{meta(chosen).get('name')}"
    message = f"KubeVirt {where} is the installation of this cluster (one per cluster); this one is ignored"
    old = kv.get("status") or {}
    conds = [st.Condition(t, t == st.DEGRADED, st.EXISTING_DEPLOYMENT, message) for t in st.CONDITION_TYPES]
    status: Obj = {"conditions": st.conditions(old.get("conditions"), conds, now)}
    if meta(kv).get("generation"):
        status["observedGeneration"] = meta(kv)["generation"]
    actions: list[Action] = []
    finalizers = list(meta(kv).get("finalizers") or [])
    if FINALIZER in finalizers:  # it holds nothing: the other one is the installation
        remaining = [f for f in finalizers if f != FINALIZER]
        actions.append(SetMetadata(str(meta(kv).get("resourceVersion") or ""), finalizers=remaining))
    if st.condition(old, st.DEGRADED).get("message") != message:
        actions.append(Event(st.EXISTING_DEPLOYMENT, message, warning=True))
    return _status_plan(kv, status, actions)


def _failed(kv: Mapping[str, Any], actions: list[Action], reason: str, message: str, now: datetime) -> Plan:
    status = st.with_failure(kv.get("status"), reason, message, now)
    status.setdefault("phase", st.DEPLOYING)
    if meta(kv).get("generation"):
        status["observedGeneration"] = meta(kv)["generation"]
    if st.condition(kv.get("status"), st.DEGRADED).get("message") != message:
        actions = [*actions, Event(reason, message, warning=True)]
    return _status_plan(kv, status, actions)


def _install(observed: Observed, manifests: Manifests, settings: Settings, now: datetime) -> Plan:
    kv = observed.kv
    finalizers = list(meta(kv).get("finalizers") or [])
    rv = str(meta(kv).get("resourceVersion") or "")
    inventory = decode_inventory(kv)
    try:
        rendering = _render(kv, manifests, settings)
    except InvalidSpecError as exc:
        return _failed(kv, _finalizer_only(finalizers, rv), st.INVALID_SPEC, str(exc), now)
    except Exception as exc:  # the manifests' defect, told in the status instead of a traceback
        message = f"rendering the components failed: {type(exc).__name__}: {exc}"
        return _failed(kv, _finalizer_only(finalizers, rv), st.RENDER_FAILED, message, now)
    config = rendering.config

    # The handler certificates: kept as they are unless due; the pods that mount them follow them.
    cert_keys = _cert_keys(config.namespace)
    live_secrets = {name: observed.live.get(key) for name, key in cert_keys.items()}
    decision = handlercerts.decide(live_secrets, now, settings.certs)
    issued = handlercerts.issue(decision, live_secrets, config.namespace, now, settings.certs)
    in_force = {**live_secrets, **{str(s["metadata"]["name"]): s for s in issued}}
    certs_digest = handlercerts.digest(in_force)

    desired = {key: _decorate(obj, config.namespace, certs_digest) for key, obj in rendering.objects.items()}
    for secret in issued:
        desired[key_of(secret)] = _decorate(secret, config.namespace, certs_digest)

    applies: list[Apply] = []
    changing: set[Key] = set()
    for key in sorted(desired, key=lambda k: (write_order(k), k)):
        body = desired[key]
        want = digest(body)
        body["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = want
        live = observed.live.get(key)
        live_digest = (meta(live).get("annotations") or {}).get(DIGEST_ANNOTATION)
        if live is None or live_digest != want:
            changing.add(key)
        remembered = observed.applied.get(key)
        if key in changing or remembered is None or (remembered.digest, remembered.stamp) != (want, stamp(live or {})):
            applies.append(Apply(key, body, want))

    keep = set(desired) | set(cert_keys.values())
    leaving = sorted(
        (k for k in inventory - keep if k in observed.live and k.resource not in (NAMESPACES, CRDS)),
        key=lambda k: (-write_order(k), k),
    )
    prunes = [
        Delete(k, meta(observed.live[k]).get("uid"))
        for k in leaving
        if k not in rendering.protected
        and is_podvirts(observed.live[k])
        and not meta(observed.live[k]).get("deletionTimestamp")
    ]
    # Remember new objects before creating them; forget removed ones once they are seen gone.
    new_inventory = keep | {k for k in leaving if k not in rendering.protected and is_podvirts(observed.live[k])}
    actions: list[Action] = []
    needs_finalizer = FINALIZER not in finalizers
    if needs_finalizer or new_inventory != inventory:
        actions.append(
            SetMetadata(
                rv,
                finalizers=[*finalizers, FINALIZER] if needs_finalizer else None,
                inventory=encode_inventory(new_inventory) if new_inventory != inventory else None,
            )
        )
    actions.extend(applies)
    actions.extend(prunes)
    if decision.any:
        actions.append(Event("CertificatesIssued", "issued handler certificates: " + "; ".join(decision.reasons)))
    created = [a.key for a in applies if a.key not in observed.live]
    updated = [a.key for a in applies if a.key in observed.live and a.key in changing]
    if created or updated:
        actions.append(Event("ResourcesApplied", _summary(created, updated)))
    if prunes:
        gone = _keys(p.key for p in prunes)
        actions.append(Event("ResourcesDeleted", f"deleted what the configuration no longer renders: {gone}"))

    states = []
    for key in sorted(desired):
        if key.resource not in WORKLOADS:
            continue
        live = observed.live.get(key)
        if live is None:
            states.append(WorkloadState(key.name, False, False, "not created yet"))
        elif key in changing:
            states.append(WorkloadState(key.name, False, False, "its new spec is being applied"))
        else:
            states.append(workload_state(live))
    result = rollout.assess(
        kv.get("status"),
        config,
        states,
        observed.unready_since,
        settings.degraded_after,
        settings.operator_version,
        now,
    )
    status = result.status
    if meta(kv).get("generation"):
        status["observedGeneration"] = meta(kv)["generation"]
    actions.extend(result.events)
    return _status_plan(kv, status, actions, unready_since=result.unready_since, requeue_after=result.requeue_after)


def _finalizer_only(finalizers: list[str], rv: str) -> list[Action]:
    if FINALIZER in finalizers:
        return []
    return [SetMetadata(rv, finalizers=[*finalizers, FINALIZER])]


def _decorate(obj: Obj, namespace: str, certs_digest: str) -> Obj:
    """The object as the operator applies it: its labels, its namespace, the certificate digest on the
    pod template of a workload that mounts the handler certificates."""
    m = obj.setdefault("metadata", {})
    if key_of(obj).resource.namespaced:
        m.setdefault("namespace", namespace)
    labels = m.setdefault("labels", {})
    labels.setdefault(PART_OF_LABEL, PART_OF)
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        volumes = (template.get("spec") or {}).get("volumes") or ()
        mounted = {str((v.get("secret") or {}).get("secretName")) for v in volumes}
        if mounted & set(handlercerts.SECRET_NAMES):
            template.setdefault("metadata", {}).setdefault("annotations", {})[CERTS_ANNOTATION] = certs_digest
    return obj


def _keys(keys: Iterable[Key], limit: int = 8) -> str:
    names = [str(k) for k in keys]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _summary(created: list[Key], updated: list[Key]) -> str:
    parts = []
    if created:
        parts.append(f"created {len(created)}: {_keys(created)}")
    if updated:
        parts.append(f"updated {len(updated)}: {_keys(updated)}")
    return "; ".join(parts)
