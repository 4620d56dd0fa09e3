"""Run a real virt-api process against a cluster, for tests and benchmarks (as ``kopf.testing`` does for kopf).

    with VirtApiProcess(kubeconfig) as virt_api:
        ...  # webhooks and subresources.kubevirt.io are served through the cluster's apiserver

It listens on loopback, registers its webhooks by URL and its APIServices through an ``ExternalName``
Service pointing at ``localhost`` (what a development cluster without Service routing needs), and on
stop removes its registration, so that a stopped test instance leaves no fail-closed webhook behind
(unless ``unregister=False``: to test what a cluster does while virt-api is down).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from podvirt_common import kube as k
from virt_api.apiserver import API_SERVICES, MUTATING_WEBHOOKS, SERVICES, VALIDATING_WEBHOOKS
from virt_api.registration import MUTATOR, VALIDATOR
from virt_api.subresources.discovery import GROUP, VERSIONS

NAMESPACES = k.Resource("", "v1", "namespaces", "Namespace", namespaced=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VirtApiProcess:
    """One virt-api subprocess; always stopped by its own pid."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str = "kubevirt",
        port: int | None = None,
        args: tuple[str, ...] = (),
        log_path: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.port = port or free_port()
        self.args = args
        self.log_path = log_path
        self.kube = k.Kube.connect(kubeconfig, user_agent="virt-api-testing")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "virt_api",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            f"--service-port={self.port}",
            f"--webhook-url={self.url}",
            "--log-format=json",
            *self.args,
        ]

    def _prepare(self) -> None:
        for resource, body, namespace in (
            (NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}, None),
            (
                SERVICES,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "virt-api", "namespace": self.namespace},
                    "spec": {"type": "ExternalName", "externalName": "localhost"},
                },
                self.namespace,
            ),
        ):
            with contextlib.suppress(k.AlreadyExistsError):
                self.kube.create(resource, body, namespace)

    def start(self, timeout: float = 90.0) -> None:
        self._prepare()
        if self.log_path is None:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        else:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Until this process listens and the apiserver reports the APIServices available (TLS, caBundle and
        discovery all work)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"virt-api exited with {self.process.returncode}; see {self.log_path}")
            if self._listening() and all(self._available(f"{v}.{GROUP}") for v in VERSIONS):
                return
            time.sleep(0.25)
        raise TimeoutError(f"virt-api's APIServices not available within {timeout:.0f} s; see {self.log_path}")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def _available(self, name: str) -> bool:
        try:
            service = self.kube.get(API_SERVICES, name)
        except k.NotFoundError:
            return False
        conditions = (service.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)

    def stop(self, unregister: bool = True) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
        if unregister:
            self.unregister()

    def unregister(self) -> None:
        for resource, name in (
            (MUTATING_WEBHOOKS, MUTATOR),
            (VALIDATING_WEBHOOKS, VALIDATOR),
            *((API_SERVICES, f"{v}.{GROUP}") for v in VERSIONS),
        ):
            self.kube.delete(resource, name)

    def __enter__(self) -> VirtApiProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        self.kube.close()
