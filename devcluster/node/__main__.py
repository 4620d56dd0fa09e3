"""``python -m devcluster.node``: run one stand-in node agent (a development substitute for a kubelet).

Flags (all paths may be relative; the agent runs as root):

  --name NODE            Node name; the kubeconfig's client certificate must be CN=system:node:NODE,
                         O=system:nodes (Node authorization and NodeRestriction apply).
  --kubeconfig PATH      kubeconfig with that client certificate (file paths or inline data).
  --root DIR             the node's directory: pods/<uid>/{volumes,containers}, ipam/, processes.json.
  --pod-cidr CIDR        this node's pod addresses, e.g. 10.244.0.0/24; its first address goes on the
                         bridge as the node's gateway and InternalIP.
  --cluster-cidr CIDR    all nodes' pod CIDRs together (default: the /16 around --pod-cidr); pods put
                         this prefix on eth0 so every pod of the cluster is on-link.
  --bridge NAME          the host bridge all nodes of the cluster share (default pvbr0).
  --image-store DIR      local OCI image store for image volumes (default ROOT/images).
  --cpu Q, --memory Q, --max-pods N
                         capacity and allocatable (defaults: this machine's CPUs and memory, 110 pods).
  --lease-seconds N      Lease duration (default 40); renewed every N/4 seconds.
  --shutdown-grace S     on SIGTERM, pods get at most S seconds of grace (default 10).
  --log-format F         auto (text on a terminal, JSON lines otherwise), json or text.
  --cleanup              remove what a previous run left (processes, namespaces, mounts, pod dirs, the
                         node's gateway on the bridge) and exit; for after an agent was SIGKILLed.

SIGTERM or SIGINT stops the agent and every pod it runs (see ``devcluster.node.agent``).
"""

from __future__ import annotations

import sys

from devcluster.node import _log
from devcluster.node.agent import cleanup, main_loop
from devcluster.node.config import from_args, parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = from_args(args)
    except ValueError as exc:
        print(f"devcluster node agent: {exc}", file=sys.stderr)
        return 2
    log = _log.setup(config.name, config.log_format)
    if args.cleanup:
        previous = cleanup(config.root, config.name, config.network)
        log.info("cleaned up after node %s (%d pod directories)", config.name, len(previous))
        return 0
    return main_loop(config)


if __name__ == "__main__":
    raise SystemExit(main())
