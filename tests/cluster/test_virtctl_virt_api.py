"""virtctl through the apiserver's aggregation layer to the real virt-api (no handler, no guests).

A control plane of this module's own runs virt-api (its webhooks and APIServices would change the
shared session cluster for everyone). There is no controller, handler or launcher: what virt-api
decides itself (writes to VMs, migrations, refusals, version, discovery) is checked end to end;
VMI actions stop at virt-api, which has no client certificate for virt-handler and says so.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import Cluster, down, up
from devcluster.config import ClusterConfig, Ports

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def api(state_dirs: Callable[[str], Path]) -> Iterator[Cluster]:
    """A control plane with the CRDs and virt-api registered as the subresources.kubevirt.io APIService."""
    base = state_dirs("podvirt-virtctl-")
    config = ClusterConfig(state_dir=base, ports=Ports.random(), nodes=())
    try:
        cluster = up(config)
    except BaseException:
        down(base)
        raise
    virt_api: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("create", "namespace", "kubevirt")
        port = _free_port()
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "virt-api", "namespace": "kubevirt"},
            "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
        # The webhooks are called by URL: an ExternalName Service only works for the APIService.
        argv = [sys.executable, "-m", "virt_api", "--kubeconfig", str(cluster.kubeconfig), "--namespace", "kubevirt",
                "--listen", "127.0.0.1", "--port", str(port), "--service-port", str(port),
                "--webhook-url", f"https://127.0.0.1:{port}", "--log-format", "text"]  # fmt: skip
        with (base / "virt-api.log").open("wb") as log:
            virt_api = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def available() -> bool:
            assert virt_api is not None and virt_api.poll() is None, (base / "virt-api.log").read_text()[-3000:]
            got = cluster.kubectl("get", "apiservice", "v1.subresources.kubevirt.io", "-o", "json", check=False)
            conditions = json.loads(got.stdout).get("status", {}).get("conditions", []) if got.returncode == 0 else []
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        _wait(available, "virt-api's APIService to be Available")
        _wait(lambda: cluster.kubectl("get", "vm", "-A", check=False).returncode == 0, "kubevirt.io/v1 to be served")
        yield cluster
    finally:
        if virt_api is not None:
            _stop(virt_api)
        down(base)


def virtctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "virtctl", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def apply(cluster: Cluster, document: dict[str, Any] | str) -> None:
    cluster.kubectl("apply", "-f", "-", input=document if isinstance(document, str) else json.dumps(document))


def vm(cluster: Cluster, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", "vm", name, "-o", "json").stdout)
    return loaded


def running_vmi(cluster: Cluster, name: str, *conditions: str) -> None:
    """A VMI that claims to run on a node (no controller or handler here changes it)."""
    apply(cluster, {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": name},
                    "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}})  # fmt: skip
    status: dict[str, Any] = {"status": {"phase": "Running", "nodeName": "node-somewhere"}}
    status["status"]["conditions"] = [{"type": c, "status": "True"} for c in conditions]
    cluster.kubectl("patch", "vmi", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))


def test_version_matches_the_server(api: Cluster) -> None:
    done = virtctl(api, "version")
    assert done.returncode == 0, done.stderr
    client, server = done.stdout.splitlines()
    assert client.split(",")[0].replace("Client", "Server") == server.split(",")[0]
    assert "warning" not in done.stderr


def test_created_manifest_passes_virt_apis_admission_and_starts_and_stops(api: Cluster) -> None:
    made = virtctl(api, "create", "vm", "--name=lifecycle", "--run-strategy=Halted",
                   "--volume-containerdisk=src:example.com/guest:1")  # fmt: skip
    assert made.returncode == 0, made.stderr
    apply(api, made.stdout)

    dry = virtctl(api, "start", "lifecycle", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert vm(api, "lifecycle")["spec"]["runStrategy"] == "Halted"

    started = virtctl(api, "start", "lifecycle", "--paused")
    assert started.returncode == 0, started.stderr
    assert started.stdout == "VM lifecycle was scheduled to start\n"
    spec = vm(api, "lifecycle")["spec"]
    assert spec["runStrategy"] == "Always"
    assert spec["template"]["spec"]["startStrategy"] == "Paused"

    again = virtctl(api, "start", "lifecycle")
    assert again.returncode == 5
    assert "cannot start VirtualMachine default/lifecycle: runStrategy Always" in again.stderr

    stopped = virtctl(api, "stop", "lifecycle")
    assert stopped.returncode == 0, stopped.stderr
    assert vm(api, "lifecycle")["spec"]["runStrategy"] == "Halted"
    assert virtctl(api, "stop", "lifecycle").returncode == 5


def test_manual_vm_gets_a_start_request(api: Cluster) -> None:
    made = virtctl(api, "create", "vm", "--name=manual", "--run-strategy=Manual")
    apply(api, made.stdout)
    assert virtctl(api, "start", "manual", "--paused").returncode == 0
    requests = vm(api, "manual")["status"]["stateChangeRequests"]
    assert [r["action"] for r in requests] == ["Start"]
    assert virtctl(api, "restart", "manual").returncode == 5  # no VMI to restart


def test_forced_stop_shortens_the_grace_period_of_the_running_vmi(api: Cluster) -> None:
    apply(api, virtctl(api, "create", "vm", "--name=forced", "--run-strategy=Always").stdout)
    running_vmi(api, "forced")
    done = virtctl(api, "stop", "forced", "--force", "--grace-period=0")
    assert done.returncode == 0, done.stderr
    vmi = json.loads(api.kubectl("get", "vmi", "forced", "-o", "json").stdout)
    assert vmi["spec"]["terminationGracePeriodSeconds"] == 0
    assert vm(api, "forced")["spec"]["runStrategy"] == "Halted"


def test_migrate_then_cancel(api: Cluster) -> None:
    apply(api, virtctl(api, "create", "vm", "--name=stuck", "--run-strategy=Always").stdout)
    running_vmi(api, "stuck")
    refused = virtctl(api, "migrate", "stuck")
    assert refused.returncode == 1  # invalid: the admission webhook's words reach the user
    assert "the VMI is not live-migratable" in refused.stderr

    apply(api, virtctl(api, "create", "vm", "--name=mover", "--run-strategy=Always").stdout)
    running_vmi(api, "mover", "LiveMigratable")
    done = virtctl(api, "migrate", "mover", "--addedNodeSelector", "disk=ssd")
    assert done.returncode == 0, done.stderr
    migrations = json.loads(api.kubectl("get", "vmim", "-o", "json").stdout)["items"]
    (migration,) = [m for m in migrations if m["spec"]["vmiName"] == "mover"]
    assert migration["spec"]["addedNodeSelector"] == {"disk": "ssd"}
    cancelled = virtctl(api, "migrate-cancel", "mover")
    assert cancelled.returncode == 0, cancelled.stderr
    left = json.loads(api.kubectl("get", "vmim", "-o", "json").stdout)["items"]
    assert all(m["metadata"].get("deletionTimestamp") for m in left if m["spec"]["vmiName"] == "mover")


def test_missing_and_stopped_objects(api: Cluster) -> None:
    missing = virtctl(api, "start", "nope")
    assert missing.returncode == 3
    assert missing.stderr.strip() == "error: VirtualMachine default/nope not found"
    apply(api, virtctl(api, "create", "vm", "--name=halted", "--run-strategy=Halted").stdout)
    paused = virtctl(api, "pause", "vm", "halted")
    assert paused.returncode == 5
    assert "it is not running (runStrategy Halted" in paused.stderr
    console = virtctl(api, "console", "halted", "--timeout=0")
    assert console.returncode == 3
    assert "VirtualMachineInstance default/halted not found" in console.stderr


def test_console_waits_for_the_vmi_then_reports_what_virt_api_says(api: Cluster) -> None:
    env = {**os.environ, "KUBECONFIG": str(api.kubeconfig)}
    waiting = subprocess.Popen(
        [sys.executable, "-m", "virtctl", "console", "late", "--timeout=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()
        running_vmi(api, "late")
        _, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert "Waiting for VirtualMachineInstance default/late to run" in err
    # There is no virt-handler here: virt-api refuses to go further, and says why.
    assert waiting.returncode == 6, err
    assert "no client certificate for virt-handler" in err


def test_port_forward_reaches_virt_api_which_says_it_has_no_way_to_the_handler(api: Cluster) -> None:
    running_vmi(api, "forwarded")
    done = virtctl(api, "port-forward", "--stdio", "vmi/forwarded", "22")
    assert done.returncode == 6, done.stderr
    assert "no client certificate for virt-handler" in done.stderr
    udp = virtctl(api, "port-forward", "--stdio", "vmi/forwarded", "udp/53")
    assert udp.returncode != 0
    assert "not supported by podvirt" in udp.stderr, udp.stderr
