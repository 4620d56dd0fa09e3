"""podvirt_common's Kubernetes wrapper and logging, as virt-controller relies on them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from podvirt_common import logs
from podvirt_common.kube import (
    LEASES,
    NODES,
    PODS,
    VIRTUAL_MACHINES,
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidError,
    NotFoundError,
    error_for,
    merge_patch_for,
    retry_on_conflict,
)

pytestmark = pytest.mark.unit


def test_resource_paths() -> None:
    assert PODS.path("ns", "p") == "/api/v1/namespaces/ns/pods/p"
    assert PODS.path() == "/api/v1/pods"
    assert VIRTUAL_MACHINES.path("ns", "vm", "status") == "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines/vm/status"
    assert NODES.path("ignored", "n1") == "/api/v1/nodes/n1"
    assert LEASES.api_version == "coordination.k8s.io/v1"


@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        (404, "NotFound", NotFoundError),
        (409, "AlreadyExists", AlreadyExistsError),
        (409, "Conflict", ConflictError),
        (422, "Invalid", InvalidError),
        (410, "Expired", GoneError),
    ],
)
def test_apiserver_refusals_become_typed_errors(status: int, reason: str, error: type) -> None:
    body = json.dumps({"kind": "Status", "reason": reason, "message": "the details"}).encode()
    exc = error_for(status, body, "POST", "/x")
    assert isinstance(exc, error)
    assert exc.message == "the details" and exc.reason == reason and exc.status == status


def test_a_merge_patch_carries_only_the_changes_and_nulls_for_removals() -> None:
    old = {"phase": "Pending", "conditions": [{"type": "A"}], "nested": {"keep": 1, "drop": 2, "change": 3}}
    new = {"phase": "Scheduling", "conditions": [{"type": "A"}], "nested": {"keep": 1, "change": 4}}
    assert merge_patch_for(old, new) == {"phase": "Scheduling", "nested": {"drop": None, "change": 4}}
    assert merge_patch_for(new, new) == {}


def test_retry_on_conflict_retries_then_gives_up() -> None:
    calls = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConflictError(409, "Conflict", "modified")
        return "ok"

    assert retry_on_conflict(attempt, sleep=lambda _: None) == "ok"
    assert len(calls) == 3
    with pytest.raises(ConflictError):
        retry_on_conflict(
            lambda: (_ for _ in ()).throw(ConflictError(409, "Conflict", "x")), attempts=2, sleep=lambda _: None
        )


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_carry_the_objects_namespace_and_name() -> None:
    out = io.StringIO()
    logs.setup(logging.INFO, "json", out)
    logs.for_object(logging.getLogger("t"), "VirtualMachine", "ns", "vm1").info("started", extra={"pod": "p"})
    line = json.loads(out.getvalue())
    assert line["msg"] == "started"
    assert (line["kind"], line["namespace"], line["name"], line["pod"]) == ("VirtualMachine", "ns", "vm1", "p")
    assert line["logger"] == "t" and line["level"] == "info"


def test_text_logs_read_like_a_sentence() -> None:
    out = io.StringIO()
    logs.setup(logging.INFO, "text", out)
    logging.getLogger("t").info("created", extra=logs.object_fields("Pod", "ns", "p1"))
    assert "INFO    t Pod ns/p1: created" in out.getvalue()
