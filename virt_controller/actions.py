"""What a reconcile asks for: writes to the apiserver, as plain values the executor carries out in order.

A plan is carried out front to back and stops at the first action that fails; the key is then
reconciled again from fresh observations. So a plan orders its actions such that stopping after any of
them leaves a state the next reconcile understands (e.g. create the VMI, *then* consume the start
request that asked for it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podvirt_common.kube import Resource

Obj = dict[str, Any]


@dataclass(frozen=True)
class Create:
    """Create ``body``. AlreadyExists means the cache was behind: the plan stops and the key is retried."""

    resource: Resource
    namespace: str
    body: Obj
    owner_key: str | None = None  # the reconciled object that expects to see this one appear


@dataclass(frozen=True)
class Delete:
    """Delete one object; ``uid`` guards against hitting a same-named successor. Gone already is success."""

    resource: Resource
    namespace: str
    name: str
    uid: str | None = None
    grace_period_seconds: int | None = None


@dataclass(frozen=True)
class MergePatch:
    """A JSON merge patch; with ``resource_version`` it applies only to the version that was observed."""

    resource: Resource
    namespace: str
    name: str
    patch: Obj
    subresource: str | None = None
    resource_version: str | None = None


@dataclass(frozen=True)
class JSONPatch:
    """A JSON patch, usually with ``test`` operations that make it apply only to what was observed."""

    resource: Resource
    namespace: str
    name: str
    operations: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about ``involved`` (an object dict); emitted when the plan gets this far."""

    involved: Mapping[str, Any]
    reason: str
    message: str
    warning: bool = False


Action = Create | Delete | MergePatch | JSONPatch | Event


@dataclass(frozen=True)
class Plan:
    """The actions of one reconcile and, if time alone will change the answer, when to look again."""

    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def writes(self) -> list[Action]:
        return [a for a in self.actions if not isinstance(a, Event)]
