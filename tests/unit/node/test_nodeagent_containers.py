"""Who a container runs as, its termination message, and the status of a pod the agent lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from devcluster.node.containers import identity, termination_message
from devcluster.node.env import ContainerConfigError
from devcluster.node.status import lost_pod_status

pytestmark = pytest.mark.unit


def test_the_container_security_context_wins_over_the_pod_one() -> None:
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000, "supplementalGroups": [3000]}}
    who = identity(pod, {"securityContext": {"runAsUser": 107, "allowPrivilegeEscalation": False}})
    assert (who.uid, who.gid, who.groups, who.no_new_privs) == (107, 1000, [3000, 2000], True)
    assert identity({}, {}).uid is None and identity({}, {}).gid is None
    assert identity({}, {"securityContext": {"runAsUser": 5}}).gid == 0


def test_run_as_non_root_needs_a_user() -> None:
    with pytest.raises(ContainerConfigError, match="runAsNonRoot"):
        identity({"securityContext": {"runAsNonRoot": True}}, {})
    assert identity({"securityContext": {"runAsNonRoot": True, "runAsUser": 107}}, {}).uid == 107


def test_termination_message_from_the_file_or_the_log(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    (tmp_path / "termination-log").write_text("")
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    assert termination_message({}, tmp_path, log, 1) == ""
    assert termination_message(fallback, tmp_path, log, 0) == ""
    tail = termination_message(fallback, tmp_path, log, 1)
    assert tail.endswith("line 99") and len(tail) <= 2048
    (tmp_path / "termination-log").write_text("disk full")
    assert termination_message(fallback, tmp_path, log, 1) == "disk full"


def test_a_lost_pod_is_failed_with_a_reason_and_unknown_containers() -> None:
    pod = {
        "spec": {"containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": "Running", "startTime": "2030-01-01T00:00:00Z", "podIP": "10.244.0.5"},
    }
    patch = lost_pod_status(pod, "node-1", "10.244.0.1", dt.datetime(2030, 1, 1, 1, tzinfo=dt.UTC))
    assert patch["phase"] == "Failed" and patch["reason"] == "NodeAgentRestarted"
    assert "node-1 restarted" in patch["message"]
    [status] = patch["containerStatuses"]
    assert status["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert "startTime" not in patch  # unchanged
