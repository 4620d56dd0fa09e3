"""The kinds of object an installation consists of, where the apiserver serves each, and object identity.

The operator writes only kinds it knows here: an object of another kind in the rendered manifests is a
defect of the manifests, reported in the KubeVirt status rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podvirt_common.kube import CONFIG_MAPS, NAMESPACES, SECRETS, Resource

Obj = dict[str, Any]

SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
SERVICES = Resource("", "v1", "services", "Service")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DAEMON_SETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
_RBAC = "rbac.authorization.k8s.io"
ROLES = Resource(_RBAC, "v1", "roles", "Role")
ROLE_BINDINGS = Resource(_RBAC, "v1", "rolebindings", "RoleBinding")
CLUSTER_ROLES = Resource(_RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTER_ROLE_BINDINGS = Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False)
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
PRIORITY_CLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False)
_ADMISSION = "admissionregistration.k8s.io"
MUTATING_WEBHOOKS = Resource(_ADMISSION, "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False)
VALIDATING_WEBHOOKS = Resource(
    _ADMISSION, "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", namespaced=False
)
API_SERVICES = Resource("apiregistration.k8s.io", "v1", "apiservices", "APIService", namespaced=False)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)

#: Every kind the operator may apply, in the order a plan writes them: identities and permissions
#: before the workloads that use them, configuration before the pods that mount it.
KNOWN: tuple[Resource, ...] = (
    NAMESPACES,
    CRDS,
    PRIORITY_CLASSES,
    SERVICE_ACCOUNTS,
    CLUSTER_ROLES,
    CLUSTER_ROLE_BINDINGS,
    ROLES,
    ROLE_BINDINGS,
    SECRETS,
    CONFIG_MAPS,
    SERVICES,
    POD_DISRUPTION_BUDGETS,
    MUTATING_WEBHOOKS,
    VALIDATING_WEBHOOKS,
    API_SERVICES,
    DEPLOYMENTS,
    DAEMON_SETS,
)
_BY_KIND: Mapping[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in KNOWN}
#: Kinds that run pods: their readiness is the installation's availability.
WORKLOADS = (DEPLOYMENTS, DAEMON_SETS)


class UnknownKindError(ValueError):
    """A rendered object of a kind the operator does not know how to write."""


@dataclass(frozen=True, order=True)
class Key:
    """One object's identity: kind (with its API group/version), namespace ('' if cluster-scoped) and name."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"

    @property
    def resource(self) -> Resource:
        return resource_of(self.api_version, self.kind)


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise UnknownKindError(f"{kind} ({api_version}) is not a kind virt-operator installs") from None


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    resource = resource_of(str(obj.get("apiVersion")), str(obj.get("kind")))
    namespace = str(meta.get("namespace") or "") if resource.namespaced else ""
    return Key(resource.api_version, resource.kind, namespace, str(meta.get("name") or ""))


def write_order(key: Key) -> int:
    """Position of the key's kind in :data:`KNOWN` (deletions go the other way round)."""
    return KNOWN.index(key.resource)
