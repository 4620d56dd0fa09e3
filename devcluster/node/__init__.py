"""devcluster's stand-in node agent: a development substitute for a kubelet, and not a kubelet.

One agent process per node (``python -m devcluster.node --name NODE ...``, flags in
``__main__``). It registers a Node with capacity, labels, a Ready condition and Lease heartbeats,
and runs the pods bound to it on this machine: every container is a process group in a private
mount namespace, with its volumes bind-mounted at their mount paths, in the pod's own network
namespace (a veth on the cluster's bridge) unless ``hostNetwork``. It runs the container's
``command`` and ``args`` from the host and ignores the image; image *volumes* come from the local
store (:mod:`devcluster.images`). It keeps the kubelet's directory layout under ``--root``::

    <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>     emptyDir (virt-handler looks here)
    <root>/pods/<uid>/volumes/kubernetes.io~projected/<volume>     tokens, ca.crt, namespace ...
    <root>/pods/<uid>/containers/<name>/<restartCount>.log         stdout+stderr of each run
    <root>/ipam/<ip>                                               address leases
    <root>/processes.json                                          running containers' process groups

There is no kubelet API (no ``kubectl logs``/``exec``/``port-forward``): read the log files.
Module map: ``agent`` (Node, Lease, pod watch, restart recovery), ``pod`` (one pod's life),
``status`` (pure status computation), ``env``, ``volumes``, ``network``, ``apirelay``,
``process`` and ``_exec`` (starting and killing containers), ``api`` (the HTTP client).
"""

from devcluster.node.agent import cleanup

__all__ = ["cleanup"]
