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
    <root>/device-plugins/kubelet.sock                             device plugins register here
    <root>/processes.json                                          running containers' process groups

A hostPath volume at or under ``/var/lib/kubelet`` means ``<root>`` (the path below it is kept): that
is the kubelet's directory on a real node, so manifests written for one (virt-handler mounting the
kubelet's directory at the same path) find this node's pods. Other hostPaths are the host's own.

Device plugins work as with a kubelet (:mod:`devcluster.node.devicemanager`): they register on
``kubelet.sock`` over the kubelet's gRPC API, their devices become the Node's capacity, and a pod
that requests them gets the plugin's ``Allocate`` answer (or fails ``UnexpectedAdmissionError``).

There is no kubelet API (no ``kubectl logs``/``exec``/``port-forward``): read the log files
(:func:`devcluster.node.logs.container_log`).

What it does not do (honestly): it ignores container images and runs commands from the host
(a command that is not installed here fails with ``StartError``); there is no PID or IPC
namespace, no cgroup limits (requests and limits are not enforced, cgroups only track and kill),
no capability dropping or seccomp (``runAsUser``/``runAsGroup``/``allowPrivilegeEscalation`` are
honoured), no DNS, no hairpin or Services of its own (ClusterIPs answer through the cluster's
service proxy, :mod:`devcluster.serviceproxy`, which also turns hairpin on for the bridge's ports;
the ``kubernetes`` Service has no endpoints: the apiserver is relayed to ``127.0.0.1`` in every
pod), no persistentVolumeClaim/CSI volumes, no ConfigMap/Secret volume
updates after start (tokens are refreshed), no preStop/postStart hooks, no gRPC probes, no
``node-role`` label (NodeRestriction refuses it from the node itself). A ``mountPath`` that does
not exist on the host is created there as an empty directory (or file) to mount on, and left in
place; so is ``/dev/termination-log``. Pods do not survive a restart of the agent (see ``agent``).
Module map: ``agent`` (Node, Lease, pod watch, restart recovery), ``pod`` (one pod's life),
``status`` (pure status computation), ``devicemanager`` and ``devices`` (device plugins), ``env``,
``volumes``, ``network``, ``apirelay``,
``process`` and ``_exec`` (starting and killing containers), ``api`` (the HTTP client).
"""

from devcluster.node.agent import cleanup

__all__ = ["cleanup"]
