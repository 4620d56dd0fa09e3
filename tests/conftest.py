"""Shared fixtures: one real development cluster per test session, stopped even when tests fail."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devcluster.cluster import Cluster, down, up
from devcluster.config import ClusterConfig, Ports


def make_test_cluster_config(base: Path, nodes: int = 2) -> ClusterConfig:
    """A cluster that cannot collide with another one: random ports, its own bridge and pod CIDR."""
    return ClusterConfig(
        state_dir=base,
        ports=Ports.random(),
        nodes=tuple(f"node-{i + 1}" for i in range(nodes)),
        pod_cidr=f"10.{random.randint(100, 239)}.0.0/16",
        service_cidr=f"10.{random.randint(16, 95)}.0.0/16",
        bridge=f"pvt{secrets.token_hex(4)}",
    )


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A scratch directory with a short path under /tmp (unix socket paths are limited to 107 bytes),
    removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pvu", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def state_dirs(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Path]]:
    """Makes state directories for clusters under $PODVIRT_TEST_TMP (default /var/tmp). They are removed
    when the session ends without a failure; after a failure they stay (their logs are the evidence),
    as they do with PODVIRT_KEEP_TEST_STATE=1."""
    made: list[Path] = []

    def make(prefix: str) -> Path:
        base = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("PODVIRT_TEST_TMP", "/var/tmp")))
        base.chmod(0o755)
        made.append(base)
        return base

    yield make
    if request.session.testsfailed or os.environ.get("PODVIRT_KEEP_TEST_STATE") == "1":
        for base in made:
            print(f"\nkept the cluster state (logs) in {base}")
    else:
        for base in made:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(state_dirs: Callable[[str], Path]) -> Iterator[Cluster]:
    """A real devcluster (etcd, kube-apiserver, controller-manager, scheduler, two stand-in nodes)."""
    base = state_dirs("podvirt-test-cluster-")
    # PODVIRT_TEST_NODES=0 runs the control plane alone (developing devcluster itself).
    cfg = make_test_cluster_config(base, int(os.environ.get("PODVIRT_TEST_NODES", "2")))
    try:
        running = up(cfg)
    except BaseException:
        down(base)
        raise
    try:
        yield running
    finally:
        down(base)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, ready for pods (its ``default`` ServiceAccount exists), deleted afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name} got no default ServiceAccount within 30 s")
        time.sleep(0.1)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
