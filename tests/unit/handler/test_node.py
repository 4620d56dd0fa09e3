"""The handler's node patches: heartbeat and schedulability."""

from __future__ import annotations

import pytest

from virt_handler.node import heartbeat_patch

pytestmark = pytest.mark.unit


def test_heartbeat_marks_the_node_schedulable_with_a_timestamp() -> None:
    patch = heartbeat_patch("2026-11-25T19:00:00Z", schedulable=True)
    assert patch["metadata"]["labels"] == {"kubevirt.io/schedulable": "true"}
    assert patch["metadata"]["annotations"] == {"kubevirt.io/heartbeat": "2026-11-25T19:00:00Z"}


def test_a_clean_stop_marks_the_node_unschedulable() -> None:
    assert heartbeat_patch("t", schedulable=False)["metadata"]["labels"]["kubevirt.io/schedulable"] == "false"
