"""The ``virt-controller`` command.

    virt-controller [--kubeconfig FILE] [--metrics-address HOST:PORT] [--launcher-image IMAGE] ...

Without ``--kubeconfig`` it uses the pod's service account in a cluster, else ``$KUBECONFIG`` or
``~/.kube/config``. It waits for the Lease (``--lease-namespace``/``--lease-name``) before acting, serves
``/metrics``, ``/healthz`` and ``/readyz`` on ``--metrics-address``, and stops on SIGTERM or SIGINT,
releasing the Lease. ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from podvirt_common import httpserve, logs
from podvirt_common.kube import (
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    Kube,
)
from podvirt_common.leader import add_election_args, elector_from_args

from . import handlers, nodes
from .controller import Controller, ControllerConfig
from .launcher_pod import LauncherSettings
from .metrics import Metrics
from .vm import CrashLoopPolicy
from .vmi import VMIPolicy

log = logging.getLogger("virt_controller")


def _key_values(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="virt-controller", description="podvirt's cluster-wide VM controller.")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--workers", type=int, default=32, help="keys reconciled at once (default 32)")
    p.add_argument(
        "--metrics-address", default="0.0.0.0:8080", help="HOST:PORT for /metrics, /healthz, /readyz; '' for none"
    )
    launcher = p.add_argument_group("launcher pods")
    launcher.add_argument("--launcher-image", default=LauncherSettings.image)
    launcher.add_argument(
        "--launcher-command", default="virt-launcher", help="command of the compute container (shell words)"
    )
    launcher.add_argument("--use-emulation", action="store_true", help="guests run under QEMU TCG (no /dev/kvm)")
    launcher.add_argument(
        "--cpu-allocation-ratio", type=_positive_int, default=LauncherSettings.cpu_allocation_ratio,
        help="vCPUs per core requested for a VMI that asks for no CPU, as KubeVirt's cpuAllocationRatio "
        "(default 10: 100m per vCPU)",
    )  # fmt: skip
    launcher.add_argument(
        "--launcher-node-selector", action="append", default=[], metavar="KEY=VALUE",
        help="node label every launcher pod requires (repeatable), e.g. kubevirt.io/schedulable=true",
    )  # fmt: skip
    timing = p.add_argument_group("timing")
    timing.add_argument("--scheduling-phase-delay", type=float, default=VMIPolicy.scheduling_phase_delay)
    timing.add_argument("--force-delete-after", type=float, default=VMIPolicy.force_delete_after)
    timing.add_argument("--crash-loop-base-delay", type=float, default=CrashLoopPolicy.base)
    timing.add_argument("--crash-loop-max-delay", type=float, default=CrashLoopPolicy.maximum)
    timing.add_argument("--stable-run", type=float, default=CrashLoopPolicy.stable_run)
    timing.add_argument(
        "--node-unresponsive-timeout",
        type=float,
        default=nodes.DEFAULT_TIMEOUT,
        help="seconds without a virt-handler heartbeat, or not Ready, before a node's VMIs fail (default 300)",
    )
    add_election_args(p, "virt-controller", os.environ.get("POD_NAMESPACE", "kube-system"))
    p.add_argument("--resync-period", type=float, default=300.0, help="seconds between full re-checks (default 300)")
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


@dataclass
class Probes:
    """What the probe endpoint reports. It is served from the start, while this replica waits for the
    Lease too: a standby is alive and ready to take over (readiness must not depend on leading, or a
    Deployment of two would never be fully ready and could never roll). The leader is ready once its
    caches are synced."""

    controller: Controller | None = None

    def readyz(self) -> tuple[int, bytes, str]:
        if self.controller is None:
            return 200, b"ok (standby)\n", "text/plain"
        if self.controller.synced.is_set():
            return 200, b"ok\n", "text/plain"
        return 503, b"caches not synced yet\n", "text/plain"

    def metrics(self) -> tuple[int, bytes, str]:
        if self.controller is None:
            return 200, b"", CONTENT_TYPE_LATEST
        return httpserve.metrics_route(self.controller.metrics.registry)()


def serve_probes(address: str, probes: Probes) -> ThreadingHTTPServer | None:
    routes = {"/metrics": probes.metrics, "/healthz": httpserve.ok, "/readyz": probes.readyz}
    return httpserve.serve(address, routes, "virt-controller")


def lister(kube: Kube) -> Callable[[str], tuple[list[dict[str, Any]], str]]:
    """Fresh lists for the controller's resync: every object of a kind, and the list's resourceVersion."""
    resources = {
        "vm": (VIRTUAL_MACHINES, None),
        "vmi": (VIRTUAL_MACHINE_INSTANCES, None),
        "rs": (VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS, None),
        "pod": (PODS, handlers.LAUNCHER_SELECTOR),
        "pvc": (PERSISTENT_VOLUME_CLAIMS, None),
    }

    def list_kind(kind: str) -> tuple[list[dict[str, Any]], str]:
        resource, selector = resources[kind]
        query: dict[str, str | int | bool] = {"limit": 500}
        if selector:
            query["labelSelector"] = selector
        items: list[dict[str, Any]] = []
        version = ""
        while True:
            page = kube.request("GET", resource.path(), query=query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            if not meta.get("continue"):
                return items, version
            query["continue"] = meta["continue"]

    return list_kind


def build_config(args: argparse.Namespace) -> ControllerConfig:
    return ControllerConfig(
        workers=args.workers,
        launcher=LauncherSettings(
            image=args.launcher_image,
            command=tuple(shlex.split(args.launcher_command)),
            emulation=args.use_emulation,
            cpu_allocation_ratio=args.cpu_allocation_ratio,
            node_selector=_key_values(args.launcher_node_selector),
        ),
        crash_loop=CrashLoopPolicy(args.crash_loop_base_delay, args.crash_loop_max_delay, args.stable_run),
        vmi=VMIPolicy(args.scheduling_phase_delay, args.force_delete_after),
        node_unresponsive_timeout=args.node_unresponsive_timeout,
    )


async def run(args: argparse.Namespace, kube: Kube, probes: Probes) -> None:
    import kopf  # noqa: PLC0415 - imported once logging is set up
    from kopf._core.engines.peering import Identity  # noqa: PLC0415 - kopf exports no public name for it

    metrics = Metrics()
    controller = Controller(kube, build_config(args), metrics=metrics)
    metrics.leading.set(1)
    probes.controller = controller
    registry = kopf.OperatorRegistry()
    handlers.register(registry, controller, kube)
    handlers.quiet_kopf()
    controller.start()  # before kopf starts: kopf waits for tasks started after it when it stops
    resync = asyncio.create_task(controller.resync_forever(lister(kube), args.resync_period), name="resync")
    try:
        # kopf stops on SIGTERM/SIGINT; losing the lease sends this process SIGTERM too.
        # Our identity, not kopf's guess: that asks the passwd database for the user, and a pod's
        # non-root UID (1001) has no entry there.
        await kopf.operator(
            registry=registry,
            settings=handlers.settings(),
            clusterwide=True,
            standalone=True,
            identity=Identity(args.identity),
        )
    finally:
        resync.cancel()
        await controller.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(args.log_level.upper(), args.log_format)
    kube = Kube.connect(args.kubeconfig, user_agent="virt-controller", pool_size=max(8, args.workers * 2))
    halt = threading.Event()
    probes = Probes()
    server = serve_probes(args.metrics_address, probes)
    elector = elector_from_args(kube, args)
    if elector is not None:
        try:
            if not elector.acquire(halt):
                return 0
        except KeyboardInterrupt:
            return 0

    loop = asyncio.new_event_loop()

    def lose() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    if elector is not None:
        threading.Thread(target=elector.hold, args=(halt, lose), name="lease", daemon=True).start()
    try:
        loop.run_until_complete(run(args, kube, probes))
    except KeyboardInterrupt:
        pass
    finally:
        halt.set()
        if elector is not None:
            elector.release()
        if server is not None:
            server.shutdown()
        loop.close()
        kube.close()
    if elector is not None and elector.lost:
        log.error("stopped: lost the leader lease")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
