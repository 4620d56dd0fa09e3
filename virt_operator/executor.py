"""Carries out a plan against the apiserver, front to back, and keeps the operator's memory of its writes.

A refused write stops the plan. A Conflict or NotFound on the KubeVirt resource means the view was
stale: the next reconcile looks again. Any other refusal goes, with the apiserver's own message and the
object named, into the Degraded condition and a warning Event; it is logged as one line, never as a
traceback. Events are best-effort.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from podvirt_common import logs
from podvirt_common.kube import KUBEVIRTS, ApiError, ConflictError, Kube, NotFoundError

from . import status as st
from .kinds import Key
from .plan import (
    FIELD_MANAGER,
    INVENTORY_ANNOTATION,
    Action,
    Applied,
    Apply,
    Delete,
    Event,
    Plan,
    SetMetadata,
    stamp,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    #: The first refused write, as the status told it (None: the plan was carried out).
    failure: str | None = None
    #: True when the view was stale (look again soon, nothing is wrong).
    stale: bool = False


class Executor:
    def __init__(self, kube: Kube, applied: MutableMapping[Key, Applied]) -> None:
        self.kube = kube
        self.applied = applied

    def execute(self, kv: Mapping[str, Any], plan: Plan, now: datetime) -> Outcome:
        meta = kv.get("metadata") or {}
        self._log = logs.for_object(log, "KubeVirt", meta.get("namespace"), str(meta.get("name")))
        self._kv = dict(kv)
        self._rv: str | None = None
        try:
            for action in plan.actions:
                self._do(action)
            if plan.status is not None:
                self._write_status(plan.status)
            for action in plan.after_status:
                self._do(action)
        except (ConflictError, NotFoundError) as exc:
            self._log.info("the KubeVirt resource changed meanwhile (%s); looking again", exc.message)
            return Outcome(stale=True)
        except _RefusedError as refused:
            message = f"{refused.what}: {refused.error.message}"
            self._log.warning("write refused: %s", message)
            current = plan.status if plan.status is not None else kv.get("status")
            failed = st.with_failure(current, plan.failure_reason, message, now)
            if failed != (kv.get("status") or {}):
                self._event(Event(plan.failure_reason, message, warning=True))
                try:
                    self._write_status(failed)
                except ApiError as exc:
                    self._log.warning("cannot write the status: %s", exc.message)
            return Outcome(failure=message)
        return Outcome()

    def _do(self, action: Action) -> None:
        if isinstance(action, Event):
            self._event(action)
        elif isinstance(action, Apply):
            try:
                written = self.kube.apply(action.key.resource, action.body, FIELD_MANAGER, force=True)
            except ApiError as exc:
                raise _RefusedError(f"applying {action.key}", exc) from None
            self.applied[action.key] = Applied(action.digest, stamp(written))
            self._log.info("applied %s", action.key)
        elif isinstance(action, Delete):
            key = action.key
            try:
                self.kube.delete(
                    key.resource, key.name, key.namespace or None, uid=action.uid, propagation=action.propagation
                )
            except ConflictError:
                pass  # a same-named successor: not the object that was meant
            except ApiError as exc:
                raise _RefusedError(f"deleting {key}", exc) from None
            self.applied.pop(key, None)
            self._log.info("deleted %s", key)
        elif isinstance(action, SetMetadata):
            patch: Obj = {}
            if action.finalizers is not None:
                patch["finalizers"] = action.finalizers
            if action.inventory is not None:
                patch["annotations"] = {INVENTORY_ANNOTATION: action.inventory}
            meta = self._kv.get("metadata") or {}
            written = self.kube.merge_patch(
                KUBEVIRTS,
                str(meta.get("name")),
                {"metadata": patch},
                meta.get("namespace"),
                resource_version=self._rv or action.resource_version,
            )
            self._rv = str((written.get("metadata") or {}).get("resourceVersion") or "") or None

    def _write_status(self, status: Obj) -> None:
        meta = self._kv.get("metadata") or {}
        said = {c.get("type"): f"{c.get('status')}/{c.get('reason')}" for c in status.get("conditions") or ()}
        self._log.info("status: phase %s, %s", status.get("phase"), ", ".join(f"{k}={v}" for k, v in said.items()))
        written = self.kube.merge_patch(
            KUBEVIRTS, str(meta.get("name")), {"status": status}, meta.get("namespace"), subresource="status"
        )
        self._rv = str((written.get("metadata") or {}).get("resourceVersion") or "") or self._rv

    def _event(self, event: Event) -> None:
        try:
            self.kube.create_event(
                self._kv, event.reason, event.message, warning=event.warning, component="virt-operator"
            )
        except ApiError as exc:
            self._log.info("event %s not recorded: %s", event.reason, exc.message)


class _RefusedError(Exception):
    def __init__(self, what: str, error: ApiError) -> None:
        super().__init__(what)
        self.what = what
        self.error = error
