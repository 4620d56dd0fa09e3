"""The running podvirt a test talks to: its Kubernetes client, the handlers' endpoints, the component logs."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from devcluster import processes
from devcluster.cluster import Cluster
from podvirt_common import httpserve
from podvirt_common.kube import PODS, VIRTUAL_MACHINE_INSTANCES, Kube, NotFoundError


@dataclass
class Podvirt:
    cluster: Cluster
    kube: Kube
    handler_ports: dict[str, int]
    client_context: ssl.SSLContext
    records: list[processes.ProcessRecord] = field(default_factory=list)
    argv: dict[str, list[str]] = field(default_factory=dict)
    #: Where the mutual-TLS files live: ca.crt (trusted by the handlers), handler.*, client.* (virt-api's).
    pki: Path | None = None

    def start(self, name: str, argv: list[str] | None = None) -> processes.ProcessRecord:
        """Start a component (again) as its own process group, logging to the cluster's log directory."""
        if argv is not None:
            self.argv[name] = argv
        proc = processes.spawn(name, self.argv[name], self.cluster.state_dir / "logs" / f"{name}.log")
        record = processes.record(name, proc)
        self.records = [r for r in self.records if r.name != name] + [record]
        return record

    def wait_handler(self, node: str, timeout: float = 60) -> None:
        """Until the node's handler accepts connections on its endpoint."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.handler_ports[node]), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"virt-handler on {node} not listening:\n{self.log_tail('virt-handler-' + node)}"
                    ) from None
                time.sleep(0.2)

    def handler_metrics(self, node: str, timeout: float = 30) -> str:
        """The node handler's /metrics (its port, chosen by the kernel, is in the handler's log)."""
        log = self.cluster.state_dir / "logs" / f"virt-handler-{node}.log"
        deadline = time.monotonic() + timeout
        while (port := httpserve.port_from_log(log.read_text())) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"virt-handler on {node} never said where /metrics is:\n{self.log_tail(log.stem)}")
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group, as a crash would."""
        record = next(r for r in self.records if r.name == name)
        record.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def vmi(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(VIRTUAL_MACHINE_INSTANCES, name, namespace)
        except NotFoundError:
            return None

    def wait_vmi(
        self, namespace: str, name: str, what: str, check: Callable[[dict[str, Any] | None], bool], timeout: float = 180
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        obj = None
        while time.monotonic() < deadline:
            obj = self.vmi(namespace, name)
            if check(obj):
                return obj
            time.sleep(0.25)
        logs = "\n".join(self.log_tail(r.name) for r in self.records)
        raise AssertionError(
            f"VMI {namespace}/{name} not {what} within {timeout} s; last seen:\n"
            f"{json.dumps(obj, indent=1)[-3000:]}\n{logs}"
        )

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
        obj = self.wait_vmi(
            namespace, name, phase, lambda o: o is not None and (o.get("status") or {}).get("phase") == phase, timeout
        )
        assert obj is not None
        return obj

    def launcher_pods(self, namespace: str) -> list[dict[str, Any]]:
        return self.kube.list_objects(PODS, namespace, label_selector="kubevirt.io=virt-launcher")

    def log_tail(self, component: str, lines: int = 30) -> str:
        path = self.cluster.state_dir / "logs" / f"{component}.log"
        if not path.exists():
            return ""
        return f"==> {component} <==\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def console_url(self, node: str, namespace: str, name: str) -> str:
        return f"wss://127.0.0.1:{self.handler_ports[node]}/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console"

    def read_console_until(
        self, node: str, namespace: str, name: str, marker: bytes, send: bytes = b"", timeout: float = 120
    ) -> bytes:
        """Open the console through the node's handler endpoint, optionally type, and read until ``marker``."""

        async def session() -> bytes:
            seen = b""
            async with connect(self.console_url(node, namespace, name), ssl=self.client_context) as ws:
                if send:
                    await ws.send(send)
                deadline = time.monotonic() + timeout
                while marker not in seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AssertionError(
                            f"console of {namespace}/{name} never showed {marker!r}; got {seen[-2000:]!r}"
                        )
                    try:
                        data = await asyncio.wait_for(ws.recv(), remaining)
                    except TimeoutError:
                        raise AssertionError(
                            f"console of {namespace}/{name} never showed {marker!r}; got {seen[-2000:]!r}"
                        ) from None
                    seen += data if isinstance(data, bytes) else data.encode()
            return seen

        return asyncio.run(session())
