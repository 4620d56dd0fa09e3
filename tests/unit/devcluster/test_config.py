"""A cluster's settings: the service CIDR is per cluster, checked, and old state directories still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devcluster.config import ClusterConfig, Ports

pytestmark = pytest.mark.unit


def test_the_kubernetes_service_ip_is_the_first_address_of_the_service_cidr(tmp_path: Path) -> None:
    assert ClusterConfig(state_dir=tmp_path).apiserver_service_ip == "10.96.0.1"
    assert ClusterConfig(state_dir=tmp_path, service_cidr="10.55.0.0/16").apiserver_service_ip == "10.55.0.1"


@pytest.mark.parametrize(
    ("service_cidr", "complaint"),
    [
        ("10.244.0.0/16", "overlaps the pod CIDR"),
        ("10.0.0.0/8", "from /12 to /24"),
        ("10.96.0.0/28", "from /12 to /24"),
        ("fd00::/108", "IPv4"),
    ],
)
def test_a_service_cidr_that_cannot_work_is_refused(tmp_path: Path, service_cidr: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ClusterConfig(state_dir=tmp_path, service_cidr=service_cidr)


def test_settings_round_trip_and_a_state_directory_from_before_service_cidr_loads(tmp_path: Path) -> None:
    cfg = ClusterConfig(state_dir=tmp_path, ports=Ports.random(), nodes=("node-1",), service_cidr="10.77.0.0/16")
    cfg.save()
    assert ClusterConfig.load(tmp_path) == cfg
    data = json.loads((tmp_path / "cluster.json").read_text())
    del data["service_cidr"]
    (tmp_path / "cluster.json").write_text(json.dumps(data))
    assert ClusterConfig.load(tmp_path).service_cidr == "10.96.0.0/16"
