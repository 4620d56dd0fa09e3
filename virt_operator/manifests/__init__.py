"""Every Kubernetes object of a podvirt installation, rendered from an :class:`InstallConfig`: one source of truth.

- :func:`operator_install`: what ``kubectl apply -f deploy/podvirt-operator.yaml`` creates (namespace,
  CRDs, virt-operator's account, roles and Deployment).
- :func:`components`: what virt-operator installs for a ``KubeVirt`` resource (virt-api, virt-controller,
  virt-handler, their accounts and roles, budgets, priority, the users' aggregated roles).
- :mod:`.olm`: the OLM bundle's ClusterServiceVersion, made from the same objects.
- ``python -m virt_operator.manifests DIR`` writes ``deploy/``, ``bundle/`` and ``bundle.Dockerfile``.

Modules: ``meta`` (labels, rules), ``rbac`` (who may do what), ``components`` (workloads), ``operator``
(the install manifest), ``olm`` (the bundle), ``files`` (rendering and the staleness check).
"""

from .components import components
from .files import render, stale_files, write_all
from .meta import covers
from .olm import cluster_service_version
from .operator import kubevirt_cr, operator_install

__all__ = [
    "cluster_service_version",
    "components",
    "covers",
    "kubevirt_cr",
    "operator_install",
    "render",
    "stale_files",
    "write_all",
]
