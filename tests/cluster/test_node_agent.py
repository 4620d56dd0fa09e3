"""The stand-in node agents themselves: registration, Lease heartbeats, and what happens to their
pods when an agent stops cleanly or is killed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import Cluster

pytestmark = pytest.mark.cluster


def get(cluster: Cluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"agent-test-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "-n", name, "default", check=False).returncode == 0,
        20,
        "the default ServiceAccount",
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_nodes_register_with_capacity_labels_pod_cidr_and_a_renewed_lease(cluster: Cluster) -> None:
    for name in cluster.nodes:
        node = get(cluster, "node", name)
        assert ready(node)
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/arch"] in ("amd64", "arm64")
        status = node["status"]
        for resource in ("cpu", "memory", "pods"):
            assert status["capacity"][resource] == status["allocatable"][resource]
        assert status["capacity"]["pods"] == str(cluster.config.node_max_pods)
        pod_cidr = cluster.config.node_pod_cidr(name)
        assert node["spec"]["podCIDR"] == pod_cidr
        internal = next(a["address"] for a in status["addresses"] if a["type"] == "InternalIP")
        assert internal == str(ipaddress.ip_network(pod_cidr).network_address + 1)
        assert "devcluster-stand-in" in status["nodeInfo"]["containerRuntimeVersion"]
    lease = get(cluster, "lease", "-n", "kube-node-lease", cluster.nodes[0])
    assert lease["spec"]["holderIdentity"] == cluster.nodes[0]
    first = lease["spec"]["renewTime"]
    wait_for(
        lambda: get(cluster, "lease", "-n", "kube-node-lease", cluster.nodes[0])["spec"]["renewTime"] != first,
        15,
        "the lease to be renewed",
    )


def _sleeper(ns: str, name: str, node: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": "x", "command": ["sleep", "600"]}],
                "terminationGracePeriodSeconds": 1,
            },
        }
    )


def _running_pid(cluster: Cluster, ns: str, name: str) -> int:
    def running() -> bool:
        return get(cluster, "pod", "-n", ns, name)["status"].get("phase") == "Running"

    wait_for(running, 30, f"pod {name} to run")
    status = get(cluster, "pod", "-n", ns, name)["status"]["containerStatuses"][0]
    return int(status["containerID"].removeprefix("devcluster://"))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _failed_with(cluster: Cluster, ns: str, name: str, reason: str) -> Callable[[], bool]:
    def check() -> bool:
        status = get(cluster, "pod", "-n", ns, name)["status"]
        return status.get("phase") == "Failed" and status.get("reason") == reason

    return check


def test_a_stopped_agent_stops_its_pods_and_reports_them_failed(cluster: Cluster, ns: str) -> None:
    node = cluster.nodes[-1]
    cluster.kubectl("create", "-f", "-", input=_sleeper(ns, "stopped", node))
    pid = _running_pid(cluster, ns, "stopped")
    cluster.restart_component(f"node/{node}")
    wait_for(_failed_with(cluster, ns, "stopped", "NodeAgentStopped"), 30, "the pod to be reported Failed")
    assert not _alive(pid)
    wait_for(lambda: ready(get(cluster, "node", node)), 30, f"{node} to be Ready again")
    # The restarted agent leaves the finished pod alone and deletes it when asked.
    cluster.kubectl("delete", "pod", "-n", ns, "stopped", "--timeout=20s")


def test_a_killed_agent_reports_the_pods_it_lost_after_its_restart(cluster: Cluster, ns: str) -> None:
    node = cluster.nodes[-1]
    cluster.kubectl("create", "-f", "-", input=_sleeper(ns, "orphaned", node))
    pid = _running_pid(cluster, ns, "orphaned")
    agent = next(r for r in cluster.processes() if r.name == f"node/{node}" and r.alive())
    os.kill(agent.pid, signal.SIGKILL)
    # The container dies with its agent (parent-death signal); the supervisor restarts the agent.
    wait_for(lambda: not _alive(pid), 10, "the container to die with its agent")
    wait_for(_failed_with(cluster, ns, "orphaned", "NodeAgentRestarted"), 60, "the lost pod to be reported Failed")
    status = get(cluster, "pod", "-n", ns, "orphaned")["status"]
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    wait_for(lambda: ready(get(cluster, "node", node)), 30, f"{node} to be Ready again")
    heartbeat = next(c for c in get(cluster, "node", node)["status"]["conditions"] if c["type"] == "Ready")
    assert dt.datetime.fromisoformat(heartbeat["lastHeartbeatTime"].replace("Z", "+00:00")) > dt.datetime.now(
        dt.UTC
    ) - dt.timedelta(minutes=2)


def test_pods_keep_running_and_new_ones_start_across_an_apiserver_restart(cluster: Cluster, ns: str) -> None:
    node = cluster.nodes[0]
    cluster.kubectl("create", "-f", "-", input=_sleeper(ns, "before", node))
    pid = _running_pid(cluster, ns, "before")
    cluster.restart_component("kube-apiserver")
    wait_for(lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 60, "the apiserver")
    # Each agent's watch reconnects and picks up what happened while the apiserver was away.
    wait_for(
        lambda: cluster.kubectl("create", "-f", "-", input=_sleeper(ns, "after", node), check=False).returncode == 0,
        30,
        "creating a pod after the restart",
    )
    _running_pid(cluster, ns, "after")
    assert _alive(pid)
    assert get(cluster, "pod", "-n", ns, "before")["status"]["phase"] == "Running"
