"""A real guest's serial console through the whole chain: apiserver -> virt-api -> virt-handler -> launcher -> QEMU.

The VMI is admitted by virt-api's webhooks and the launcher boots exactly the stored (defaulted) object;
virt-handler's own endpoint code serves the console over mutual TLS, with a lookup pointing at that
launcher's sockets (the handler's informers and pod discovery are not part of this test); virt-api finds
the handler the way it finds a real one. A user then types into the console through the aggregation
layer and reads what the guest answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from test_api_subresources import NODE, _handler_pod, _server, _tls_to_apiserver
from vm.harness import LauncherRun, build_guest_image, tiny_vmi
from websockets.asyncio.client import connect

from devcluster.cluster import Cluster
from podvirt_common import certs
from virt_api.testing import VirtApiProcess, free_port
from virt_handler.launcher_client import LauncherTarget
from virt_handler.server import create_app

pytestmark = [pytest.mark.cluster, pytest.mark.vm]

ROOT = Path(__file__).resolve().parents[2]
NS = "api-console"
LAUNCHER_UID = 107


class HandlerEndpoint:
    """virt-handler's console/action endpoint (its real code) on loopback, for one launcher."""

    def __init__(self, directory: Path, target: LauncherTarget) -> None:
        ca = certs.new_ca("test-podvirt-internal-ca")
        self.files: dict[str, tuple[Path, Path]] = {}
        for stem, pair in (
            ("handler", certs.issue(ca, "virt-handler", hosts=("virt-handler",), server=True)),
            ("virt-api", certs.issue(ca, "virt-api", client=True)),
        ):
            self.files[stem] = (directory / f"{stem}.crt", directory / f"{stem}.key")
            pair.write(*self.files[stem])
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        self.port = free_port()
        app = create_app(
            lambda namespace, name: target if (namespace, name) == (target.namespace, target.name) else None
        )
        crt, key = self.files["handler"]
        self.server = uvicorn.Server(
            uvicorn.Config(
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
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def virt_api_args(self) -> tuple[str, ...]:
        crt, key = self.files["virt-api"]
        return (
            f"--handler-cert={crt}",
            f"--handler-key={key}",
            f"--handler-ca={self.ca_file}",
            f"--handler-port={self.port}",
        )

    def __enter__(self) -> HandlerEndpoint:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def admitted_vmi(cluster: Cluster) -> dict[str, Any]:
    """The tiny guest's VMI as the webhooks stored it (created while a virt-api serves them)."""
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.kubectl("create", "namespace", NS, check=False)
    vmi = tiny_vmi("typist")
    vmi["metadata"] = {"name": "typist", "namespace": NS}
    vmi["spec"]["domain"]["devices"]["autoattachPodInterface"] = False  # no pod network outside a pod
    with VirtApiProcess(cluster.kubeconfig, log_path=cluster.state_dir / "logs" / "virt-api-console-admission.log"):
        cluster.kubectl("create", "-f", "-", input=json.dumps(vmi))
    stored: dict[str, Any] = json.loads(cluster.kubectl("get", "vmi", "typist", "-n", NS, "-o", "json").stdout)
    return stored


@pytest.fixture(scope="module")
def chain(cluster: Cluster, admitted_vmi: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The launcher runs as its own user (107), which must own its capabilities cache (as in tests/vm).
    cache = Path(tempfile.mkdtemp(prefix="pvt-cache-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(cache, LAUNCHER_UID, LAUNCHER_UID)
    run = LauncherRun(build_guest_image(), cache)
    try:
        run.add_kernel_boot()
        run.start(admitted_vmi)
        run.wait_running(timeout=120)
        meta = admitted_vmi["metadata"]
        target = LauncherTarget(NS, meta["name"], meta["uid"], "pod-uid", run.base, "s", None)
        with HandlerEndpoint(tmp_path_factory.mktemp("handler"), target) as handler:
            virt_api = VirtApiProcess(
                cluster.kubeconfig,
                args=handler.virt_api_args(),
                log_path=cluster.state_dir / "logs" / "virt-api-console.log",
            )
            with virt_api:
                _handler_pod(cluster)
                status = {"status": {"phase": "Running", "nodeName": NODE}}
                cluster.kubectl("patch", "vmi", "typist", "-n", NS, "--subresource=status", "--type=merge",
                                "-p", json.dumps(status))  # fmt: skip
                yield
                cluster.kubectl("delete", "pod", "virt-handler-stand-in", "-n", "kubevirt", "--force",
                                "--grace-period=0", check=False)  # fmt: skip
                cluster.kubectl("delete", "node", NODE, check=False)
    finally:
        run.close()
        shutil.rmtree(cache, ignore_errors=True)
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_typing_into_a_real_guests_console_through_the_apiserver(cluster: Cluster, chain: None) -> None:
    async def session() -> str:
        url = f"wss://{_server(cluster)}/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachineinstances/typist/console"
        seen = b""

        async def until(marker: bytes, within: float) -> None:
            nonlocal seen
            deadline = time.monotonic() + within
            while marker not in seen:
                seen += bytes(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))  # type: ignore[arg-type]

        async with connect(url, ssl=_tls_to_apiserver(cluster), subprotocols=["plain.kubevirt.io"]) as ws:  # type: ignore[list-item]
            # The guest may still be booting: type until its shell answers ("42" only comes from the shell).
            for _ in range(30):
                await ws.send(b"echo typed-$((6 * 7))\n")
                try:
                    await until(b"typed-42", 4)
                    break
                except TimeoutError:
                    continue
        return seen.decode(errors="replace")

    assert "typed-42" in asyncio.run(session())
