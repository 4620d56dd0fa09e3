"""Carries out a plan against the apiserver, front to back, and says how far it got.

The executor knows the apiserver's answers that mean "your view was stale" — AlreadyExists, Conflict,
a failed JSON-patch test, NotFound on a patch — and stops there without calling it an error: the key
is reconciled again once the cache has caught up. Any other refusal becomes a :class:`SyncError` the
next reconcile writes into the object's status (a VM's Failure condition, a VMI's Synchronized one).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from podvirt_common import logs
from podvirt_common.kube import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    InvalidError,
    NotFoundError,
    Resource,
)

from . import objects
from .actions import Action, Create, Delete, Event, JSONPatch, MergePatch, Plan
from .vm import SyncError

log = logging.getLogger(__name__)


class KubeWriter(Protocol):
    """The writes the executor needs (``podvirt_common.kube.Kube`` has them; tests use a fake)."""

    def create(self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]: ...

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        grace_period_seconds: int | None = None,
        propagation: str | None = None,
    ) -> bool: ...

    def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]: ...

    def json_patch(
        self,
        resource: Resource,
        name: str,
        operations: Sequence[Mapping[str, Any]],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]: ...

    def create_event(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False, component: str = ...
    ) -> dict[str, Any]: ...


class _AlreadyGoneError(Exception):
    """A delete found nothing: the object went away before (the cache did not know yet)."""


class Outcome(enum.Enum):
    DONE = "done"  # every action was carried out
    STALE = "stale"  # the apiserver knew better than the cache: look again when it has caught up
    FAILED = "failed"  # refused for another reason: see ``error``


@dataclass
class Result:
    outcome: Outcome
    completed: int = 0
    error: SyncError | None = None
    created: list[Obj] = field(default_factory=list)
    objects: list[Obj] = field(default_factory=list)  # the apiserver's answers to creates and patches
    gone: list[Delete] = field(default_factory=list)  # deletions that found nothing to delete

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DONE


Obj = dict[str, Any]
WriteHook = Callable[[str, Resource], None]
EventSink = Callable[[Event], None]


def _reason(action: Action) -> str:
    if isinstance(action, Create):
        return "FailedCreate"
    if isinstance(action, Delete):
        return "FailedDelete"
    return "FailedUpdate"


def _target(action: Action) -> str:
    if isinstance(action, Create):
        return f"{action.resource.kind} {action.namespace}/{objects.name(action.body)}"
    if isinstance(action, Event):
        return f"event {action.reason}"
    return f"{action.resource.kind} {action.namespace}/{action.name}"


def execute(
    kube: KubeWriter,
    plan: Plan,
    *,
    component: str = "virt-controller",
    on_write: WriteHook | None = None,
    events: EventSink | None = None,
) -> Result:
    """Carry out ``plan``; ``on_write(verb, resource)`` is told of every write that reached the apiserver.
    Events go to ``events`` when given (recorded in the background, off the reconcile's path), else
    are recorded in line."""
    result = Result(Outcome.DONE)
    versions: dict[tuple[str, str, str], str] = {}  # resourceVersions this plan's own writes produced
    for index, planned in enumerate(plan.actions):
        result.completed = index
        action = planned
        if isinstance(planned, MergePatch) and planned.resource_version is not None:
            own = versions.get((planned.resource.plural, planned.namespace, planned.name))
            if own is not None:
                # The precondition was on the observed version; this plan has since changed the object
                # itself (e.g. added a finalizer), so the version to expect is the one it produced.
                action = dataclasses.replace(planned, resource_version=own)
        try:
            if isinstance(action, Event) and events is not None:
                events(action)
                continue
            answer = _apply(kube, action, component)
        except (AlreadyExistsError, ConflictError, InvalidError) as exc:
            if isinstance(exc, InvalidError) and not isinstance(action, JSONPatch):
                return _failed(result, action, exc)
            log.debug("stale view: %s: %s", _target(action), exc.message)
            result.outcome = Outcome.STALE
            return result
        except _AlreadyGoneError:
            # Not an error, but the cache still shows the object: the controller drops it from there.
            if isinstance(planned, Delete):
                result.gone.append(planned)
            continue
        except NotFoundError as exc:
            if isinstance(action, Create):
                return _failed(result, action, exc)
            log.debug("gone: %s", _target(action))
            result.outcome = Outcome.STALE
            return result
        except ApiError as exc:
            return _failed(result, action, exc)
        if answer is not None:
            result.objects.append(answer)
            meta = answer.get("metadata") or {}
            if not isinstance(action, Event):
                key = (action.resource.plural, str(meta.get("namespace") or ""), str(meta.get("name")))
                if meta.get("resourceVersion") and _preconditioned(action):
                    versions[key] = str(meta["resourceVersion"])
                else:
                    # Applied to whatever the object was: its new version may include someone else's
                    # change, so a later precondition must stay on the observed version (and fail).
                    versions.pop(key, None)
            if isinstance(action, Create):
                result.created.append(answer)
        if on_write is not None and not isinstance(action, Event):
            on_write(type(action).__name__.lower(), action.resource)
    result.completed = len(plan.actions)
    return result


def _preconditioned(action: Action) -> bool:
    """Whether ``action`` applies only to the exact version observed (so its answer is that version
    plus this write alone). A Create is: the object did not exist."""
    if isinstance(action, Create):
        return True
    if isinstance(action, MergePatch):
        return action.resource_version is not None
    if isinstance(action, JSONPatch):
        return any(op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion" for op in action.operations)
    return False


def _failed(result: Result, action: Action, exc: ApiError) -> Result:
    log.warning("%s failed: %s", _target(action), exc.message, extra={"reason": exc.reason, "status": exc.status})
    result.outcome = Outcome.FAILED
    result.error = SyncError(_reason(action), exc.message)
    return result


def _apply(kube: KubeWriter, action: Action, component: str) -> Obj | None:
    """Carry out one action; returns the object the apiserver answered with, if any."""
    if isinstance(action, Create):
        answer = kube.create(action.resource, action.body, action.namespace)
        _log_write(action, "created")
        return answer
    if isinstance(action, Delete):
        found = kube.delete(
            action.resource,
            action.name,
            action.namespace,
            uid=action.uid,
            grace_period_seconds=action.grace_period_seconds,
        )
        if not found:
            raise _AlreadyGoneError
        _log_write(action, "deleted")
        return None
    if isinstance(action, MergePatch):
        return kube.merge_patch(
            action.resource,
            action.name,
            action.patch,
            action.namespace,
            subresource=action.subresource,
            resource_version=action.resource_version,
        )
    if isinstance(action, JSONPatch):
        return kube.json_patch(action.resource, action.name, action.operations, action.namespace)
    try:
        kube.create_event(action.involved, action.reason, action.message, warning=action.warning, component=component)
    except ApiError as exc:  # an event is worth a log line, never a retry
        log.info("event %s not recorded: %s", action.reason, exc.message)
    return None


def _log_write(action: Create | Delete, verb: str) -> None:
    name = objects.name(action.body) if isinstance(action, Create) else action.name
    log.info(
        "%s %s", verb, action.resource.kind, extra=logs.object_fields(action.resource.kind, action.namespace, name)
    )
