"""The ``devcluster`` command: a real Kubernetes control plane and stand-in nodes on this machine."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from devcluster import binaries, supervisor
from devcluster.cluster import Cluster, ClusterError, down, status, up
from devcluster.config import DEFAULT_STATE_DIR, ClusterConfig, Ports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_state(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="where the cluster keeps its files")
        return p

    p_up = with_state(sub.add_parser("up", help="start the cluster and wait until it is ready"))
    p_up.add_argument("--nodes", type=int, default=1, help="number of stand-in nodes (live migration needs 2)")
    p_up.add_argument("--random-ports", action="store_true", help="use free random ports (to run several clusters)")
    p_up.add_argument("--apiserver-port", type=int, default=6443)
    p_up.add_argument("--pod-cidr", default="10.244.0.0/16", help="/16 the nodes' pod /24s are cut from")
    p_up.add_argument(
        "--service-cidr", default="10.96.0.0/16", help="ClusterIPs (give each cluster on one machine its own)"
    )
    p_up.add_argument("--bridge", default="pvbr0", help="host bridge joining the pods' network namespaces")
    with_state(sub.add_parser("down", help="stop everything `up` started"))
    with_state(sub.add_parser("status", help="print the cluster's state as JSON"))
    with_state(sub.add_parser("kubeconfig", help="print the admin kubeconfig's path"))
    with_state(sub.add_parser("supervise", help=argparse.SUPPRESS))
    p_restart = with_state(sub.add_parser("restart", help="restart one component, e.g. kube-apiserver or node/node-1"))
    p_restart.add_argument("component")
    sub.add_parser("build", help="build (or check the cache of) the cluster binaries")
    p_image = with_state(sub.add_parser("image", help="manage the stand-in nodes' local image store"))
    image_sub = p_image.add_subparsers(dest="image_command", required=True)
    p_import = image_sub.add_parser("import", help="import an OCI image layout (directory or tar) as REFERENCE")
    p_import.add_argument("source", type=Path)
    p_import.add_argument("reference")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ClusterError, FileNotFoundError, ValueError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    state_dir: Path | None = getattr(args, "state_dir", None)
    if args.command == "build":
        return binaries.main([])
    assert state_dir is not None
    state_dir = state_dir.resolve()
    if args.command == "up":
        ports = Ports.random() if args.random_ports else Ports(apiserver=args.apiserver_port)
        nodes = tuple(f"node-{i + 1}" for i in range(args.nodes))
        cfg = ClusterConfig(
            state_dir=state_dir,
            ports=ports,
            nodes=nodes,
            pod_cidr=args.pod_cidr,
            service_cidr=args.service_cidr,
            bridge=args.bridge,
        )
        cluster = up(cfg)
        print(f"devcluster ready: {cfg.server}, nodes {', '.join(nodes)}")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print(f"  kubectl: {binaries.binary('kubectl')}")
        return 0
    if args.command == "down":
        down(state_dir)
        print(f"devcluster in {state_dir} stopped")
        return 0
    if args.command == "status":
        print(json.dumps(status(state_dir), indent=2))
        return 0
    if args.command == "kubeconfig":
        print(ClusterConfig.load(state_dir).admin_kubeconfig)
        return 0
    if args.command == "supervise":
        return supervisor.run(state_dir)
    if args.command == "restart":
        Cluster(ClusterConfig.load(state_dir)).restart_component(args.component)
        return 0
    if args.command == "image":
        # The image store belongs to the stand-in node; imported late so the CLI starts fast.
        images = importlib.import_module("devcluster.images")
        images.import_image(state_dir / "images", args.source, args.reference)
        print(f"imported {args.source} as {args.reference}")
        return 0
    raise AssertionError(args.command)
