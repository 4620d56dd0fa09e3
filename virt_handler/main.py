"""``virt-handler``: the per-node agent (one per node, a DaemonSet) that runs VMIs through their launchers.

It watches the VMIs labelled for its node and the launcher pods bound to it, drives each launcher
(network, spec, shutdown) and keeps VMI status true (:mod:`vmisync`); serves console, VNC and VMI
actions to virt-api over mutual TLS (:mod:`server`); keeps its Node's heartbeat (:mod:`node`); and
serves the kubelet the device plugins for ``devices.kubevirt.io/tun``, ``…/kvm``, ``…/vhost-net``
(:mod:`deviceplugin`); hands launchers the node's QEMU capabilities cache with their specs
(``--qemu-capabilities-dir``, :mod:`podvirt_common.qemucaps`). Killing it changes nothing for
running guests: on start it rediscovers every launcher and carries on.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, ProcessCollector

from podvirt_common import httpserve, logs, qemucaps
from podvirt_common.kube import NODES, PODS, VIRTUAL_MACHINE_INSTANCES, Kube
from virt_handler import node as node_duties
from virt_handler.deviceplugin import DevicePlugins, is_char_device
from virt_handler.dhcp import DHCPServer
from virt_handler.informer import Informer
from virt_handler.launcher_client import LauncherTarget
from virt_handler.metrics import VMIStatsCollector
from virt_handler.portforward import ForwardTarget
from virt_handler.server import create_app
from virt_handler.vmisync import VMISync, guest_address, launcher_pod, rfc3339
from virt_handler.workqueue import WorkQueue

log = logging.getLogger("virt_handler")
NODE_LABEL = "kubevirt.io/nodeName"
LAUNCHER_SELECTOR = "kubevirt.io=virt-launcher"
RESYNC_SECONDS = 10.0
WORKERS = 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virt-handler", description=__doc__.splitlines()[0])
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster credentials)")
    p.add_argument("--kubelet-root", type=Path, default=Path("/var/lib/kubelet"), help="the node's kubelet directory")
    p.add_argument("--listen", default="0.0.0.0", help="address of the console/action endpoint")  # noqa: S104
    p.add_argument("--port", type=int, default=8186)
    p.add_argument("--tls-cert", type=Path, required=True, help="serving certificate (PEM)")
    p.add_argument("--tls-key", type=Path, required=True)
    p.add_argument("--client-ca", type=Path, required=True, help="CA that signs virt-api's client certificate")
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0:8080",
        help="HOST:PORT of the plain-HTTP /metrics, /healthz and /readyz ('' for none; port 0: any free port)",
    )
    p.add_argument(
        "--kvm",
        choices=("auto", "yes", "no"),
        default="auto",
        help="offer devices.kubevirt.io/kvm while /dev/kvm exists (auto, yes: and warn when it does not) or never (no)",
    )
    p.add_argument(
        "--qemu-capabilities-dir",
        type=Path,
        default=None,
        help="libvirt QEMU capabilities files (from virt-launcher-capabilities) to hand every launcher",
    )
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    return p


class Handler:
    def __init__(
        self, kube: Kube, node: str, kubelet_root: Path, kvm: bool, qemu_capabilities: dict[str, str] | None = None
    ) -> None:
        self.kube = kube
        self.node = node
        self.devices = DevicePlugins(kubelet_root, kvm)
        self.queue = WorkQueue()
        self.dhcp = DHCPServer()
        self.sync = VMISync(kube, node, kubelet_root, self.dhcp, self.queue.add, qemu_capabilities=qemu_capabilities)
        self.vmis = Informer(kube, VIRTUAL_MACHINE_INSTANCES, self._vmi_changed, label_selector=f"{NODE_LABEL}={node}")
        self.pods = Informer(
            kube, PODS, self._pod_changed, label_selector=LAUNCHER_SELECTOR, field_selector=f"spec.nodeName={node}"
        )
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def _vmi_changed(self, key: str, obj: dict[str, Any] | None) -> None:
        self.queue.add(key)

    def _pod_changed(self, key: str, pod: dict[str, Any] | None) -> None:
        namespace = key.split("/", 1)[0]
        if pod is None:
            # The pod is gone: every VMI of this namespace may have lost its launcher.
            for vmi in self.vmis.items():
                if vmi["metadata"].get("namespace") == namespace:
                    self.queue.add(f"{namespace}/{vmi['metadata']['name']}")
            return
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "VirtualMachineInstance":
                self.queue.add(f"{namespace}/{ref['name']}")

    def lookup(self, namespace: str, name: str) -> LauncherTarget | None:
        vmi = self.vmis.get(f"{namespace}/{name}")
        return None if vmi is None else self._target(vmi, self.pods.items())

    def _target(self, vmi: dict[str, Any], pods: list[dict[str, Any]]) -> LauncherTarget | None:
        if (vmi.get("status") or {}).get("phase") != "Running":
            return None
        pod = launcher_pod(vmi, pods, self.node)
        return None if pod is None else self.sync.target(vmi, pod)

    def forward_target(self, namespace: str, name: str) -> ForwardTarget | None:
        """A running VMI's launcher and its guest's address, for port-forwards."""
        target = self.lookup(namespace, name)
        vmi = self.vmis.get(f"{namespace}/{name}")
        if target is None or vmi is None:
            return None
        return ForwardTarget(target, guest_address(vmi))

    def running_vmis(self) -> list[tuple[str, str, LauncherTarget]]:
        """This node's running VMIs and their launchers (what the metrics are collected from)."""
        found = []
        pods = self.pods.items()
        for vmi in self.vmis.items():
            meta = vmi["metadata"]
            target = self._target(vmi, pods)
            if target is not None:
                found.append((meta["namespace"], meta["name"], target))
        return found

    def http_routes(self) -> dict[str, httpserve.Route]:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(VMIStatsCollector(self.node, self.running_vmis))

        def healthz() -> tuple[int, bytes, str]:
            alive = all(t.is_alive() for t in self.threads) and not self.stopping.is_set()
            return (200, b"ok\n", "text/plain") if alive else (503, b"stopping or a worker died\n", "text/plain")

        return {"/metrics": httpserve.metrics_route(registry), "/healthz": healthz, "/readyz": healthz}

    def _worker(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                again = self.sync.sync(key, self.vmis.get(key), self.pods.items())
            except Exception:
                log.exception("%s: sync failed", key)
                again = 5.0
            finally:
                self.queue.done(key)
            if again is not None:
                self.queue.add_after(key, again)

    def _resync(self) -> None:
        while not self.stopping.wait(RESYNC_SECONDS):
            for vmi in self.vmis.items():
                self.queue.add(f"{vmi['metadata']['namespace']}/{vmi['metadata']['name']}")

    def _heartbeat(self) -> None:
        while True:
            try:
                self.kube.merge_patch(NODES, self.node, node_duties.heartbeat_patch(rfc3339(time.time()), True))
            except Exception as exc:
                log.warning("node heartbeat failed: %s", exc)
            if self.stopping.wait(node_duties.HEARTBEAT_INTERVAL):
                return

    def start(self) -> None:
        self.dhcp.start()
        self.pods.start()
        self.vmis.start()
        self.pods.wait_synced(30)
        self.vmis.wait_synced(30)
        targets = [self.devices.run, self._heartbeat, self._resync] + [self._worker] * WORKERS
        for target in targets:
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self.threads.append(thread)
        log.info("virt-handler running on node %s", self.node)

    def stop(self) -> None:
        """A clean stop: the node stops taking VMIs; running guests are left alone."""
        self.stopping.set()
        self.devices.stop()
        self.queue.close()
        self.vmis.stop()
        self.pods.stop()
        try:
            self.kube.merge_patch(NODES, self.node, node_duties.heartbeat_patch(rfc3339(time.time()), False))
        except Exception as exc:
            log.warning("could not mark node %s unschedulable: %s", self.node, exc)
        self.dhcp.stop()


def load_capabilities(directory: Path | None) -> dict[str, str]:
    """The node's QEMU capabilities files, read once: the init container wrote them before we started."""
    if directory is None:
        return {}
    try:
        files = qemucaps.read_dir(directory)
    except OSError as exc:
        log.warning("QEMU capabilities in %s unreadable (launchers will probe QEMU themselves): %s", directory, exc)
        return {}
    if not files:
        log.warning("no QEMU capabilities in %s: launchers will probe QEMU themselves (~1.5 s each)", directory)
    else:
        log.info("handing launchers the QEMU capabilities %s", ", ".join(files))
    return files


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(fmt=args.log_format)
    if not args.node_name:
        print("virt-handler: --node-name (or $NODE_NAME) is required", flush=True)
        return 2
    kube = Kube.connect(args.kubeconfig, user_agent="virt-handler")
    if args.kvm == "yes" and not is_char_device("/dev/kvm"):
        log.warning("--kvm=yes but this node has no /dev/kvm: devices.kubevirt.io/kvm stays unavailable")
    capabilities = load_capabilities(args.qemu_capabilities_dir)
    handler = Handler(kube, args.node_name, args.kubelet_root, kvm=args.kvm != "no", qemu_capabilities=capabilities)
    handler.start()
    httpserve.serve(args.metrics_address, handler.http_routes(), "virt-handler")
    config = uvicorn.Config(
        create_app(handler.lookup, handler.forward_target),
        host=args.listen,
        port=args.port,
        ssl_certfile=str(args.tls_cert),
        ssl_keyfile=str(args.tls_key),
        ssl_ca_certs=str(args.client_ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        handler.stop()
    return 0
