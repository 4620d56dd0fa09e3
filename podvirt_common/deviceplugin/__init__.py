"""The kubelet's device-plugin API, v1beta1: the messages and grpclib stubs generated from ``api.proto``
(``make protos``) and the API's constants.

virt-handler serves the ``DevicePlugin`` service for the devices VMs use; a kubelet (on devcluster, the
stand-in node) serves ``Registration`` on :data:`KUBELET_SOCKET` and calls the plugins back on the
socket each one registered, all in the kubelet's :data:`DIRECTORY`.
"""

from __future__ import annotations

VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DIRECTORY = "device-plugins"  # under the kubelet's root directory (/var/lib/kubelet)
KUBELET_SOCKET = "kubelet.sock"
