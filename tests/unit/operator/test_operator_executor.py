"""virt-operator's executor: a refused write becomes the Degraded condition with the apiserver's message."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_operator_fakes import T0, World, condition, kubevirt

from podvirt_common.kube import InvalidError, Resource
from virt_operator.executor import Executor
from virt_operator.plan import FIELD_MANAGER

pytestmark = pytest.mark.unit


class FakeKube:
    def __init__(self, refuse: tuple[str, str] | None = None) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, Any]] = []
        self.status: dict[str, Any] | None = None

    def apply(
        self, resource: Resource, obj: dict[str, Any], field_manager: str, *, force: bool = True
    ) -> dict[str, Any]:
        assert field_manager == FIELD_MANAGER and force
        if (obj["kind"], obj["metadata"]["name"]) == self.refuse:
            raise InvalidError(
                422, "Invalid", f'{resource.kind} "{self.refuse}" is invalid: spec.replicas: must be >= 0'
            )
        self.calls.append(("apply", obj["metadata"]["name"]))
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "7", "generation": 1}}

    def merge_patch(
        self, resource: Resource, name: str, patch: dict[str, Any], namespace: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        self.calls.append(("patch", kw.get("subresource") or "metadata"))
        if kw.get("subresource") == "status":
            self.status = patch["status"]
        return {"metadata": {"resourceVersion": "8"}}

    def delete(self, resource: Resource, name: str, namespace: str | None = None, **kw: Any) -> bool:
        self.calls.append(("delete", name))
        return True

    def create_event(self, involved: dict[str, Any], reason: str, message: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("event", reason))
        return {}


def test_a_plan_is_carried_out_in_order_and_remembered() -> None:
    world = World(kubevirt())
    plan = world.plan()
    kube = FakeKube()
    applied: dict[Any, Any] = {}
    outcome = Executor(kube, applied).execute(world.kv, plan, T0)  # type: ignore[arg-type]
    assert outcome.failure is None
    assert kube.calls[0] == ("patch", "metadata"), "the finalizer and inventory first"
    assert ("patch", "status") in kube.calls
    assert len(applied) == sum(1 for c in kube.calls if c[0] == "apply")


def test_a_refused_apply_stops_the_plan_and_is_degraded_with_the_apiservers_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(kubevirt())
    plan = world.plan()
    kube = FakeKube(refuse=("Deployment", "virt-api"))
    with caplog.at_level(logging.WARNING):
        outcome = Executor(kube, {}).execute(world.kv, plan, T0)  # type: ignore[arg-type]
    assert outcome.failure is not None and "spec.replicas: must be >= 0" in outcome.failure
    assert kube.status is not None
    degraded = condition({"status": kube.status}, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "DeploymentFailed"
    assert "applying Deployment kubevirt/virt-api" in degraded["message"] and "must be >= 0" in degraded["message"]
    assert ("event", "DeploymentFailed") in kube.calls
    assert not any(r.exc_info for r in caplog.records), "told in one line, never a traceback"
    assert not any(c == ("apply", "virt-handler") for c in kube.calls), "the plan stopped"
