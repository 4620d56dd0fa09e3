"""subresources.kubevirt.io through the real apiserver's aggregation layer to a virt-api process.

VM subresources change the VM object (checked end to end). VMI subresources reach a stand-in
virt-handler over mutual TLS: a small server on loopback with the handler's endpoint, found by virt-api
the way it finds a real one (a running pod labelled ``kubevirt.io=virt-handler`` on the VMI's node).
Authorisation is checked at both doors: the apiserver's RBAC, and virt-api's own SubjectAccessReview
for requests that come with the front proxy's certificate but a user without RBAC.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from devcluster.cluster import Cluster
from podvirt_common import certs
from virt_api.testing import VirtApiProcess, free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NS = "api-subresources"
NODE = "api-test-node"
SUB = "/apis/subresources.kubevirt.io/v1/namespaces/" + NS


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(*args, check=False, input=input)


def apply(cluster: Cluster, document: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))


class StandInHandler:
    """virt-handler's endpoint on loopback, with mutual TLS: records actions, echoes console bytes."""

    def __init__(self, directory: Path) -> None:
        ca = certs.new_ca("test-podvirt-internal-ca")
        self.files = {}
        for stem, pair in (
            ("handler", certs.issue(ca, "virt-handler", hosts=("virt-handler",), server=True)),
            ("virt-api", certs.issue(ca, "virt-api", client=True)),
        ):
            crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
            pair.write(crt, key)
            self.files[stem] = (crt, key)
        self.ca_file = directory / "internal-ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        self.port = free_port()
        self.actions: list[str] = []
        app = FastAPI()

        @app.put("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/{action}")
        async def act(namespace: str, name: str, action: str) -> dict[str, str]:
            self.actions.append(f"{action} {namespace}/{name}")
            return {"phase": "Running"}

        @app.get("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/guestosinfo")
        async def guestosinfo(namespace: str, name: str) -> dict[str, Any]:
            return {"guestAgentVersion": "stand-in", "os": {"name": "busybox", "kernelRelease": "6.1"}}

        @app.websocket("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console")
        async def console(ws: WebSocket, namespace: str, name: str) -> None:
            await ws.accept(subprotocol="plain.kubevirt.io")
            await ws.send_bytes(b"\r\nbusybox login: ")
            while (message := await ws.receive())["type"] != "websocket.disconnect":
                await ws.send_bytes(b"<" + (message.get("bytes") or b"") + b">")

        @app.websocket("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/vnc")
        async def vnc(ws: WebSocket, namespace: str, name: str) -> None:
            await ws.accept(subprotocol="plain.kubevirt.io")
            await ws.send_bytes(b"RFB 003.008\n")
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass

        crt, key = self.files["handler"]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            ssl_certfile=str(crt),
            ssl_keyfile=str(key),
            ssl_ca_certs=str(self.ca_file),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            log_config=None,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def virt_api_args(self) -> tuple[str, ...]:
        crt, key = self.files["virt-api"]
        return (
            f"--handler-cert={crt}",
            f"--handler-key={key}",
            f"--handler-ca={self.ca_file}",
            f"--handler-port={self.port}",
        )

    def __enter__(self) -> StandInHandler:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _handler_pod(cluster: Cluster) -> None:
    """A Node and a running virt-handler pod on it, as virt-api's locator sees them (nothing runs them)."""
    apply(cluster, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"podvirt.test": "api"}}})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "virt-handler-stand-in",
            "namespace": "kubevirt",
            "labels": {"kubevirt.io": "virt-handler"},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "virt-handler", "image": "stand-in"}]},
    }
    apply(cluster, pod)
    status = {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}
    cluster.kubectl("patch", "pod", "virt-handler-stand-in", "-n", "kubevirt", "--subresource=status",
                    "--type=merge", "-p", json.dumps(status))  # fmt: skip


@pytest.fixture(scope="module")
def virt_api(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtApiProcess]:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    with StandInHandler(tmp_path_factory.mktemp("handler")) as handler:
        process = VirtApiProcess(
            cluster.kubeconfig,
            args=handler.virt_api_args(),
            log_path=cluster.state_dir / "logs" / "virt-api-subresources.log",
        )
        process.start()
        process.handler = handler  # type: ignore[attr-defined]
        kubectl(cluster, "create", "namespace", NS)
        _handler_pod(cluster)
        try:
            yield process
        finally:
            process.stop()
            kubectl(cluster, "delete", "namespace", NS, "--wait=false")
            kubectl(cluster, "delete", "pod", "virt-handler-stand-in", "-n", "kubevirt", "--force", "--grace-period=0")
            kubectl(cluster, "delete", "node", NODE)


def vm(name: str, strategy: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "runStrategy": strategy,
            "template": {"spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}},
        },
    }


def running_vmi(cluster: Cluster, name: str, **conditions: str) -> None:
    """A VMI that the (absent) controller and handler would have started on the stand-in node."""
    apply(
        cluster,
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}},
        },
    )
    status = {
        "status": {
            "phase": "Running",
            "nodeName": NODE,
            "conditions": [{"type": t, "status": s} for t, s in conditions.items()],
        }
    }
    cluster.kubectl("patch", "vmi", name, "-n", NS, "--subresource=status", "--type=merge", "-p", json.dumps(status))


def put(
    cluster: Cluster, path: str, body: dict[str, Any] | None = None, *as_user: str
) -> subprocess.CompletedProcess[str]:
    """PUT through the apiserver, as ``kubectl replace --raw`` does (optionally impersonating)."""
    return kubectl(cluster, *as_user, "replace", "--raw", path, "-f", "-", input=json.dumps(body or {}))


def get_vm(cluster: Cluster, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", "vm", name, "-n", NS, "-o", "json").stdout)
    return loaded


def test_discovery_lists_the_subresources(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    versions = cluster.kubectl("api-versions").stdout.split()
    assert {"subresources.kubevirt.io/v1", "subresources.kubevirt.io/v1alpha3"} <= set(versions)
    listed = json.loads(cluster.kubectl("get", "--raw", "/apis/subresources.kubevirt.io/v1").stdout)
    names = {r["name"] for r in listed["resources"]}
    assert {"virtualmachines/start", "virtualmachines/stop", "virtualmachineinstances/console"} <= names
    version = json.loads(cluster.kubectl("get", "--raw", "/apis/subresources.kubevirt.io/v1/version").stdout)
    assert version["gitVersion"].startswith("v")
    health = json.loads(cluster.kubectl("get", "--raw", "/apis/subresources.kubevirt.io/v1alpha3/healthz").stdout)
    assert health == {"apiserver": "ok", "restapiserver": "ok"}
    # Discovery of the whole server is complete (an unavailable aggregated API would be reported here);
    # like KubeVirt's, the group lists only subresources, which kubectl api-resources does not print.
    everything = kubectl(cluster, "api-resources")
    assert everything.returncode == 0 and "subresources.kubevirt.io" not in everything.stderr


def test_start_and_stop_rewrite_the_run_strategy(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    apply(cluster, vm("flip", "Halted"))
    started = put(cluster, f"{SUB}/virtualmachines/flip/start")
    assert started.returncode == 0, started.stderr
    assert get_vm(cluster, "flip")["spec"]["runStrategy"] == "Always"
    again = put(cluster, f"{SUB}/virtualmachines/flip/start")
    assert "Error from server (Conflict)" in again.stderr and "runStrategy Always does not support" in again.stderr
    assert put(cluster, f"{SUB}/virtualmachines/flip/stop").returncode == 0
    assert get_vm(cluster, "flip")["spec"]["runStrategy"] == "Halted"


def test_manual_vms_get_state_change_requests(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    apply(cluster, vm("manual", "Manual"))
    assert put(cluster, f"{SUB}/virtualmachines/manual/start", {"paused": True}).returncode == 0
    assert get_vm(cluster, "manual")["status"]["stateChangeRequests"] == [
        {"action": "Start", "data": {"paused": "true"}}
    ]
    running_vmi(cluster, "manual")
    uid = json.loads(cluster.kubectl("get", "vmi", "manual", "-n", NS, "-o", "json").stdout)["metadata"]["uid"]
    assert put(cluster, f"{SUB}/virtualmachines/manual/restart", {"gracePeriodSeconds": 7}).returncode == 0
    assert get_vm(cluster, "manual")["status"]["stateChangeRequests"] == [
        {"action": "Stop", "uid": uid},
        {"action": "Start"},
    ]
    vmi = json.loads(cluster.kubectl("get", "vmi", "manual", "-n", NS, "-o", "json").stdout)
    assert vmi["spec"]["terminationGracePeriodSeconds"] == 7, "virt-api may shorten a running VMI's grace period"


def test_dry_run_and_the_old_version_path(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    apply(cluster, vm("dry", "Halted"))
    path = f"/apis/subresources.kubevirt.io/v1alpha3/namespaces/{NS}/virtualmachines/dry/start"
    assert put(cluster, path, {"dryRun": ["All"]}).returncode == 0
    assert get_vm(cluster, "dry")["spec"]["runStrategy"] == "Halted"


def test_an_unknown_vm_is_not_found(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    missing = put(cluster, f"{SUB}/virtualmachines/nobody/start")
    assert 'Error from server (NotFound): virtualmachines.kubevirt.io "nobody" not found' in missing.stderr


def test_migrate_creates_a_migration_only_for_a_running_live_migratable_vm(
    cluster: Cluster, virt_api: VirtApiProcess
) -> None:
    apply(cluster, vm("mover", "Always"))
    stopped = put(cluster, f"{SUB}/virtualmachines/mover/migrate")
    assert "VM is not running" in stopped.stderr
    running_vmi(cluster, "mover", LiveMigratable="False")
    pinned = put(cluster, f"{SUB}/virtualmachines/mover/migrate")
    assert "not live-migratable" in pinned.stderr, "the migration webhook judged the VMIM virt-api created"
    running_vmi(cluster, "mover", LiveMigratable="True")
    assert put(cluster, f"{SUB}/virtualmachines/mover/migrate").returncode == 0
    migrations = json.loads(cluster.kubectl("get", "vmim", "-n", NS, "-o", "json").stdout)["items"]
    assert [m["spec"]["vmiName"] for m in migrations] == ["mover"]
    assert migrations[0]["metadata"]["labels"]["kubevirt.io/vmi-name"] == "mover"


def test_vmi_actions_reach_the_handler_of_the_vmis_node(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    running_vmi(cluster, "acted", AgentConnected="True")
    assert put(cluster, f"{SUB}/virtualmachineinstances/acted/pause").returncode == 0
    assert put(cluster, f"{SUB}/virtualmachineinstances/acted/softreboot").returncode == 0
    assert put(cluster, f"{SUB}/virtualmachineinstances/acted/reset").returncode == 0
    not_paused = put(cluster, f"{SUB}/virtualmachineinstances/acted/unpause")
    assert "Error from server (Conflict)" in not_paused.stderr and "VMI is not paused" in not_paused.stderr
    running_vmi(cluster, "acted", AgentConnected="True", Paused="True")  # what the handler would report
    assert put(cluster, f"{SUB}/virtualmachineinstances/acted/unpause").returncode == 0
    assert virt_api.handler.actions[-4:] == [  # type: ignore[attr-defined]
        f"pause {NS}/acted",
        f"softreboot {NS}/acted",
        f"reset {NS}/acted",
        f"unpause {NS}/acted",
    ]
    info = json.loads(cluster.kubectl("get", "--raw", f"{SUB}/virtualmachineinstances/acted/guestosinfo").stdout)
    assert info["os"]["name"] == "busybox"


def _tls_to_apiserver(cluster: Cluster) -> ssl.SSLContext:
    pki = cluster.state_dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    return ctx


def _server(cluster: Cluster) -> str:
    return f"127.0.0.1:{cluster.config.ports.apiserver}"


def test_console_bytes_cross_apiserver_virt_api_and_handler_both_ways(
    cluster: Cluster, virt_api: VirtApiProcess
) -> None:
    running_vmi(cluster, "talker")

    async def session() -> list[bytes]:
        url = f"wss://{_server(cluster)}{SUB}/virtualmachineinstances/talker/console"
        async with connect(url, ssl=_tls_to_apiserver(cluster), subprotocols=["plain.kubevirt.io"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "plain.kubevirt.io"
            banner = await ws.recv()
            await ws.send(b"root\n")
            echoed = await ws.recv()
        return [bytes(banner), bytes(echoed)]  # type: ignore[arg-type]

    assert asyncio.run(session()) == [b"\r\nbusybox login: ", b"<root\n>"]


def test_vnc_reaches_the_handler_too(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    running_vmi(cluster, "viewer")

    async def greeting() -> bytes:
        url = f"wss://{_server(cluster)}{SUB}/virtualmachineinstances/viewer/vnc"
        async with connect(url, ssl=_tls_to_apiserver(cluster), subprotocols=["plain.kubevirt.io"]) as ws:  # type: ignore[list-item]
            return bytes(await ws.recv())  # type: ignore[arg-type]

    assert asyncio.run(greeting()) == b"RFB 003.008\n"


def test_a_console_to_a_vmi_that_does_not_run_is_refused_with_a_status(
    cluster: Cluster, virt_api: VirtApiProcess
) -> None:
    async def attempt() -> int:
        url = f"wss://{_server(cluster)}{SUB}/virtualmachineinstances/nobody/console"
        try:
            async with connect(url, ssl=_tls_to_apiserver(cluster), subprotocols=["plain.kubevirt.io"]):  # type: ignore[list-item]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt()) == 404


def test_a_user_without_rbac_is_refused_by_the_apiserver(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    apply(cluster, vm("guarded", "Halted"))
    refused = put(cluster, f"{SUB}/virtualmachines/guarded/start", None, "--as=eve")
    assert "Error from server (Forbidden)" in refused.stderr
    assert get_vm(cluster, "guarded")["spec"]["runStrategy"] == "Halted"


def test_rbac_on_one_subresource_opens_that_one_only(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "vm-starter", "namespace": NS},
        "rules": [
            {"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachines/start"], "verbs": ["update"]}
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "bob-starts", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm-starter"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
    }
    apply(cluster, role)
    apply(cluster, binding)
    apply(cluster, vm("bobs", "Halted"))
    assert put(cluster, f"{SUB}/virtualmachines/bobs/start", None, "--as=bob").returncode == 0
    assert get_vm(cluster, "bobs")["spec"]["runStrategy"] == "Always"
    assert "Forbidden" in put(cluster, f"{SUB}/virtualmachines/bobs/stop", None, "--as=bob").stderr


def _direct(cluster: Cluster, virt_api: VirtApiProcess, cert: tuple[str, str] | None) -> httpx.Client:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only the client side of the handshake matters here
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return httpx.Client(base_url=virt_api.url, verify=ctx, trust_env=False)


def test_virt_api_itself_refuses_a_proxied_user_without_rbac(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    """The front proxy's certificate with a user the apiserver would have refused: virt-api asks RBAC too."""
    pki = cluster.state_dir / "pki"
    apply(cluster, vm("sneaky", "Halted"))
    running_vmi(cluster, "sneaky")
    proxy = (str(pki / "front-proxy-client.crt"), str(pki / "front-proxy-client.key"))
    with _direct(cluster, virt_api, proxy) as client:
        answer = client.put(f"{SUB}/virtualmachines/sneaky/start", headers={"X-Remote-User": "eve"})
        info = client.get(f"{SUB}/virtualmachineinstances/sneaky/guestosinfo", headers={"X-Remote-User": "eve"})
    assert answer.status_code == 403 and answer.json()["reason"] == "Forbidden"
    assert 'User "eve" cannot update resource "virtualmachines/start"' in answer.json()["message"]
    assert info.status_code == 403
    assert get_vm(cluster, "sneaky")["spec"]["runStrategy"] == "Halted"


def test_a_direct_request_bypassing_the_proxy_is_refused(cluster: Cluster, virt_api: VirtApiProcess) -> None:
    apply(cluster, vm("direct", "Halted"))
    headers = {"X-Remote-User": "kubernetes-admin", "X-Remote-Group": "system:masters"}
    with _direct(cluster, virt_api, None) as client:
        answer = client.put(f"{SUB}/virtualmachines/direct/start", headers=headers)
    assert answer.status_code == 401 and answer.json()["reason"] == "Unauthorized"
    pki = cluster.state_dir / "pki"
    admin = (str(pki / "admin.crt"), str(pki / "admin.key"))
    with _direct(cluster, virt_api, admin) as client, pytest.raises(httpx.HTTPError):
        client.put(f"{SUB}/virtualmachines/direct/start", headers=headers)  # a cluster CA certificate: no handshake
    assert get_vm(cluster, "direct")["spec"]["runStrategy"] == "Halted"
