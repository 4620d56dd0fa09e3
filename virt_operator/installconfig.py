"""What an installation of podvirt is parameterised by, and the names its objects share.

One :class:`InstallConfig` goes into :mod:`virt_operator.manifests` (which renders every object of an
installation from it) and comes out of a ``KubeVirt`` custom resource (which the operator reads). The
constants are the names that several parts must agree on: the manifests mount the Secrets the operator
fills with certificates, virt-api finds the handlers by their label, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata


def podvirt_version() -> str:
    """The installed podvirt's version (the default image tag is ``v<version>``)."""
    try:
        return metadata.version("podvirt")
    except metadata.PackageNotFoundError:
        return "0.0.0"


#: The namespace KubeVirt installs into; podvirt keeps it so that users' habits and docs carry over.
DEFAULT_NAMESPACE = "kubevirt"
DEFAULT_REGISTRY = "quay.io/podvirt"

#: Label every object of an installation carries (what the operator owns and removes on uninstall).
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "podvirt"
COMPONENT_LABEL = "app.kubernetes.io/component"
#: KubeVirt's own label on its component pods; virt-api finds virt-handler pods by ``kubevirt.io=virt-handler``.
KUBEVIRT_LABEL = "kubevirt.io"

COMPONENTS = ("virt-api", "virt-controller", "virt-handler")
OPERATOR = "virt-operator"

#: CA that signs virt-handler's serving certificate and virt-api's client certificate for it (mTLS).
HANDLER_CA_SECRET = "virt-handler-ca"  # noqa: S105 - a Secret's name
#: virt-handler's serving certificate (DNS name ``virt-handler``) and the CA bundle it trusts for clients.
HANDLER_SERVER_SECRET = "virt-handler-server-certs"  # noqa: S105 - a name
#: virt-api's client certificate for virt-handler and the CA bundle it trusts for the handler.
HANDLER_CLIENT_SECRET = "virt-api-handler-client-certs"  # noqa: S105 - a name
#: Keys in those Secrets (the ``kubernetes.io/tls`` layout plus the CA bundle).
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_BUNDLE_KEY = "ca.crt"
#: virt-api keeps its own CA and serving certificate (for the apiserver) in this Secret, managed by itself.
VIRT_API_CERTS_SECRET = "virt-api-certs"  # noqa: S105 - a name

HANDLER_PORT = 8186
API_PORT = 8443


@dataclass(frozen=True)
class InstallConfig:
    """Everything an installation varies by. Defaults are a production install on a real cluster."""

    namespace: str = DEFAULT_NAMESPACE
    #: Images are ``<registry>/<component>:<tag>`` (e.g. ``quay.io/podvirt/virt-api:v0.1.0``).
    registry: str = DEFAULT_REGISTRY
    tag: str = field(default_factory=lambda: f"v{podvirt_version()}")
    image_pull_policy: str = "IfNotPresent"
    #: The kubelet's directory on the nodes (virt-handler reaches launcher sockets under ``pods/``).
    kubelet_root: str = "/var/lib/kubelet"
    #: ``spec.configuration.developerConfiguration.useEmulation``: guests under TCG, no /dev/kvm asked for.
    use_emulation: bool = False
    #: ``spec.configuration.developerConfiguration.cpuAllocationRatio``: vCPUs per requested core.
    cpu_allocation_ratio: int = 10
    #: ``spec.configuration.developerConfiguration.featureGates``.
    feature_gates: tuple[str, ...] = ()
    controller_replicas: int = 2
    api_replicas: int = 2

    def image(self, component: str) -> str:
        return f"{self.registry}/{component}:{self.tag}"
