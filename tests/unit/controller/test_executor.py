"""The executor's preconditions: a plan's later writes apply only to what its reconcile observed."""

from __future__ import annotations

import pytest

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES
from virt_controller.actions import JSONPatch, MergePatch, Plan
from virt_controller.executor import Outcome, execute

from .fakeapi import FakeApi

pytestmark = pytest.mark.unit


def _vmi(api: FakeApi) -> dict[str, object]:
    return api.put(
        VIRTUAL_MACHINE_INSTANCES,
        {"metadata": {"name": "v", "namespace": "default"}, "spec": {}, "status": {"phase": "Running"}},
    )


def _status_write(rv: str) -> MergePatch:
    return MergePatch(
        VIRTUAL_MACHINE_INSTANCES,
        "default",
        "v",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status",
        resource_version=rv,
    )


def _label(ops_extra: list[dict[str, object]]) -> JSONPatch:
    return JSONPatch(
        VIRTUAL_MACHINE_INSTANCES,
        "default",
        "v",
        [*ops_extra, {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}],
    )


def test_a_write_after_an_unconditional_one_does_not_absorb_someone_elses_change() -> None:
    api = FakeApi()
    observed = _vmi(api)
    rv = observed["metadata"]["resourceVersion"]  # type: ignore[index]
    api.set_status(VIRTUAL_MACHINE_INSTANCES, "v", {"phase": "Succeeded"})  # another writer, after observation
    result = execute(api, Plan([_label([]), _status_write(rv)]))
    assert result.outcome is Outcome.STALE
    assert "conditions" not in api.get(VIRTUAL_MACHINE_INSTANCES, "v", "default")["status"]


def test_a_write_after_a_preconditioned_one_goes_on_from_the_version_it_produced() -> None:
    api = FakeApi()
    observed = _vmi(api)
    rv = observed["metadata"]["resourceVersion"]  # type: ignore[index]
    guarded = _label([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}])
    result = execute(api, Plan([guarded, _status_write(rv)]))
    assert result.outcome is Outcome.DONE
    stored = api.get(VIRTUAL_MACHINE_INSTANCES, "v", "default")
    assert stored["metadata"]["labels"] == {"a": "b"}
    assert stored["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
