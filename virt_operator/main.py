"""The ``virt-operator`` command.

    virt-operator [--kubeconfig FILE] [--namespace NS] [--metrics-address HOST:PORT] [--image-tag TAG] ...

Without ``--kubeconfig`` it uses the pod's service account in a cluster, else ``$KUBECONFIG`` or
``~/.kube/config``. It reconciles every ``KubeVirt`` resource (one is acted on, see README), serves
``/healthz`` and ``/readyz`` on ``--metrics-address``, and stops on SIGTERM or SIGINT. Replicas elect
one leader on the Lease ``virt-operator`` (:mod:`podvirt_common.leader`); the others wait, healthy and
ready, to take over (``--no-leader-elect`` for a single replica run by hand). The image
registry and tag flags are the defaults for what a KubeVirt resource leaves unset. ``--help`` lists
every option.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from podvirt_common import httpserve, logs
from podvirt_common.kube import Kube
from podvirt_common.leader import add_election_args, elector_from_args

from . import manifests
from .handlercerts import CertPolicy
from .installconfig import DEFAULT_NAMESPACE, DEFAULT_REGISTRY, InstallConfig, podvirt_version
from .manifests.rbac import OPERATOR_LEASE
from .operator import Operator
from .reconcile import Manifests, Settings

log = logging.getLogger("virt_operator")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = InstallConfig()
    p = argparse.ArgumentParser(prog="virt-operator", description="Installs, upgrades and removes podvirt.")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
    p.add_argument(
        "--namespace", default=os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE,
        help="the operator's namespace, where it watches the components (default: $POD_NAMESPACE, else kubevirt)",
    )  # fmt: skip
    p.add_argument("--metrics-address", default="0.0.0.0:8080", help="HOST:PORT for /healthz, /readyz; '' for none")
    install = p.add_argument_group("defaults of a KubeVirt resource")
    install.add_argument("--image-registry", default=DEFAULT_REGISTRY)
    install.add_argument("--image-tag", default=defaults.tag, help=f"default: the operator's version ({defaults.tag})")
    install.add_argument("--image-pull-policy", default=defaults.image_pull_policy)
    install.add_argument("--kubelet-root", default=defaults.kubelet_root, help="the kubelet's directory on the nodes")
    timing = p.add_argument_group("timing")
    timing.add_argument(
        "--degraded-after", type=float, default=120.0, help="seconds a component may be unready before Degraded"
    )
    timing.add_argument("--resync-period", type=float, default=60.0, help="seconds between full re-checks")
    # The Lease lives beside the components, in --namespace unless told otherwise.
    add_election_args(p, OPERATOR_LEASE, "")
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    args.lease_namespace = args.lease_namespace or args.namespace
    return args


def build_settings(args: argparse.Namespace) -> Settings:
    base = InstallConfig(
        namespace=args.namespace,
        registry=args.image_registry,
        tag=args.image_tag,
        image_pull_policy=args.image_pull_policy,
        kubelet_root=args.kubelet_root,
    )
    return Settings(
        base=base, certs=CertPolicy(), degraded_after=args.degraded_after, operator_version=podvirt_version()
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(args.log_level.upper(), args.log_format)
    kube = Kube.connect(args.kubeconfig, user_agent="virt-operator")
    operator = Operator(
        kube,
        Manifests(manifests.components, manifests.operator_install),
        build_settings(args),
        namespace=args.namespace,
        resync_period=args.resync_period,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping (%s)", signal.Signals(signum).name)
        stop.set()
        operator.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    elector = elector_from_args(kube, args)

    def readyz() -> tuple[int, bytes, str]:
        # A standby is ready: readiness must not depend on leading, or two replicas never roll.
        if operator.synced.is_set() or (elector is not None and not elector.leading):
            return 200, b"ok\n", "text/plain"
        return 503, b"not synced yet\n", "text/plain"

    server = httpserve.serve(args.metrics_address, {"/healthz": httpserve.ok, "/readyz": readyz}, "virt-operator")
    try:
        if elector is not None:
            if not elector.acquire(stop):
                return 0
            lose = functools.partial(on_signal, signal.SIGTERM, None)  # stops the loop; main() reports the loss
            threading.Thread(target=elector.hold, args=(stop, lose), name="lease", daemon=True).start()
        log.info("virt-operator %s watching KubeVirt resources; components in %s", podvirt_version(), args.namespace)
        operator.run(stop)
    finally:
        stop.set()
        if elector is not None:
            elector.release()
        if server is not None:
            server.shutdown()
        kube.close()
    if elector is not None and elector.lost:
        log.error("stopped: lost the leader lease")
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
