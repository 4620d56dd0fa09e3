"""Command options become KubeVirt's option bodies, field for field, at the right paths."""

from __future__ import annotations

import pytest

from virtctl import subresources as sub

pytestmark = pytest.mark.unit


def test_start_options() -> None:
    assert sub.start_options() == {}
    assert sub.start_options(paused=True) == {"paused": True}
    assert sub.start_options(dry_run=True) == {"dryRun": ["All"]}


def test_stop_uses_grace_period_and_restart_grace_period_seconds() -> None:
    assert sub.stop_options(grace_period=0) == {"gracePeriod": 0}
    assert sub.restart_options(grace_period=0) == {"gracePeriodSeconds": 0}
    assert sub.stop_options() == {} == sub.restart_options()


def test_migrate_options() -> None:
    assert sub.migrate_options(added_node_selector={"disk": "ssd"}, dry_run=True) == {
        "dryRun": ["All"],
        "addedNodeSelector": {"disk": "ssd"},
    }
    assert sub.migrate_options() == {}


def test_paths_and_rbac_names() -> None:
    assert sub.START.path("ns", "vm1") == "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm1/start"
    assert sub.SOFT_REBOOT.path("ns", "x").endswith("/virtualmachineinstances/x/softreboot")
    forward = sub.port_forward(22)
    assert forward.path("ns", "x").endswith("/virtualmachineinstances/x/portforward/22/tcp")
    assert forward.request("ns", "x").resource == "virtualmachineinstances/portforward"
    assert forward.request("ns", "x").verb == "get"
    assert sub.PAUSE.request("ns", "x").verb == "update"
