"""Who may do what: each component's least-privilege roles, the users' aggregated roles, the operator's roles.

Every component rule is derived from the API calls the component's code makes (the reason sits beside
it). The operator's own roles are computed from the roles it installs: the apiserver lets nobody create
a role or a binding granting more than they hold themselves (RBAC escalation prevention), and the
operator holds exactly those permissions rather than the ``escalate``/``bind`` verbs.
"""

from __future__ import annotations

from virt_operator.installconfig import (
    HANDLER_CA_SECRET,
    HANDLER_CLIENT_SECRET,
    HANDLER_SERVER_SECRET,
    OPERATOR,
    VIRT_API_CERTS_SECRET,
    InstallConfig,
)

from .meta import Obj, merge_rules, obj, rule

RBAC = "rbac.authorization.k8s.io/v1"
KUBEVIRT = "kubevirt.io"
SUBRESOURCES = "subresources.kubevirt.io"

#: Names virt-api registers itself under (virt_api/registration.py; a unit test keeps them equal).
MUTATING_WEBHOOK = "virt-api-mutator"
VALIDATING_WEBHOOK = "virt-api-validator"
API_SERVICES = ("v1.subresources.kubevirt.io", "v1alpha3.subresources.kubevirt.io")
#: The Lease virt-controller's replicas elect a leader with (``--lease-name``).
CONTROLLER_LEASE = "virt-controller"
#: The Lease virt-operator's replicas elect a leader with.
OPERATOR_LEASE = "virt-operator"
#: The kube-system Role every aggregated API server binds to read the front proxy's CA.
AUTH_READER_ROLE = "extension-apiserver-authentication-reader"
AUTH_READER_BINDING = "podvirt:virt-api-auth-reader"
AUTH_CONFIGMAP = "extension-apiserver-authentication"

VM_KINDS = [
    "virtualmachines",
    "virtualmachineinstances",
    "virtualmachineinstancereplicasets",
    "virtualmachineinstancemigrations",
]
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]


def cluster_role_name(component: str) -> str:
    return f"podvirt:{component}"


def service_account(config: InstallConfig, component: str) -> Obj:
    return obj("v1", "ServiceAccount", component, component, config.namespace)


# --- the components ---------------------------------------------------------------------------------

CONTROLLER_CLUSTER_RULES = [
    rule([KUBEVIRT], ["virtualmachines", "virtualmachineinstancereplicasets"], ["list", "watch"],
         "kopf lists and watches them cluster-wide (virt_controller/handlers.py); the resync lists them"),
    rule([KUBEVIRT], ["virtualmachineinstances"], ["list", "watch", "create", "patch", "delete"],
         "VMs and replica sets create and delete VMIs; finalizer, node label and adoption are patches"),
    rule([KUBEVIRT], [f"{kind}/status" for kind in VM_KINDS[:3]], ["patch"],
         "printableStatus, conditions and phases are merge patches of the status subresource"),
    rule([KUBEVIRT], [f"{kind}/finalizers" for kind in VM_KINDS[:3]], ["update"],
         "owner references with blockOwnerDeletion (VMI of a VM or replica set, launcher pod of a VMI) need "
         "it where the OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift)"),
    rule([""], ["pods"], ["list", "watch", "create", "delete"],
         "launcher pods in the VMs' namespaces: watched by label, created and deleted per VMI"),
    rule([""], ["persistentvolumeclaims"], ["list", "watch"], "VMs wait for the claims their volumes name"),
    rule([""], ["nodes"], ["list", "watch"],
         "the handler heartbeat and Ready condition: VMIs on an unresponsive node fail (virt_controller/nodes.py)"),
    rule([""], ["namespaces"], ["list", "watch"], "kopf's cache-synced signal is an event handler on namespaces"),
    rule([""], ["events"], ["create"], "Events on VMs and VMIs in their namespaces (virt_controller/events.py)"),
]  # fmt: skip

CONTROLLER_NAMESPACE_RULES = [
    rule(["coordination.k8s.io"], ["leases"], ["create"], "the first replica creates the leader Lease"),
    rule(["coordination.k8s.io"], ["leases"], ["get", "patch"], "leader election reads and renews its Lease",
         names=[CONTROLLER_LEASE]),
]  # fmt: skip

HANDLER_CLUSTER_RULES = [
    rule([KUBEVIRT], ["virtualmachineinstances"], ["list", "watch"],
         "the informer of VMIs labelled kubevirt.io/nodeName=<its node> (RBAC cannot narrow by label)"),
    rule([KUBEVIRT], ["virtualmachineinstances/status"], ["patch"], "phase, conditions, interfaces of its VMIs"),
    rule([""], ["pods"], ["list", "watch"], "launcher pods bound to its node (field selector spec.nodeName)"),
    rule([""], ["nodes"], ["patch"], "heartbeat annotation and kubevirt.io/schedulable label (virt_handler/node.py)"),
]  # fmt: skip

API_CLUSTER_RULES = [
    rule([KUBEVIRT], ["virtualmachines"], ["get", "patch"], "start/stop/restart read the VM and patch runStrategy"),
    rule([KUBEVIRT], ["virtualmachines/status"], ["patch"], "start/stop append stateChangeRequests"),
    rule([KUBEVIRT], ["virtualmachineinstances"], ["get", "list", "patch"],
         "actions find the VMI's node; stop patches the grace period; the uninstall guard counts VMIs"),
    rule([KUBEVIRT], ["virtualmachineinstancemigrations"], ["list", "create"],
         "migrate creates a migration; admission refuses a second one for the same VMI"),
    rule([KUBEVIRT], ["kubevirts"], ["list"], "admission allows only one KubeVirt resource"),
    rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"],
         "asks whether the proxied user may use a subresource (virt_api/auth.py)"),
    rule(["admissionregistration.k8s.io", "apiregistration.k8s.io"],
         ["mutatingwebhookconfigurations", "validatingwebhookconfigurations", "apiservices"], ["create"],
         "registers itself (virt_api/registration.py); a create cannot be narrowed to a name"),
    rule(["admissionregistration.k8s.io"], ["mutatingwebhookconfigurations"], ["patch"],
         "re-applies its webhooks with the current caBundle (server-side apply)", names=[MUTATING_WEBHOOK]),
    rule(["admissionregistration.k8s.io"], ["validatingwebhookconfigurations"], ["patch"],
         "re-applies its webhooks with the current caBundle (server-side apply)", names=[VALIDATING_WEBHOOK]),
    rule(["apiregistration.k8s.io"], ["apiservices"], ["patch"],
         "re-applies its APIServices with the current caBundle (server-side apply)", names=list(API_SERVICES)),
]  # fmt: skip

API_NAMESPACE_RULES = [
    rule([""], ["secrets"], ["create"], "the first replica stores the CA and serving certificate it made"),
    rule([""], ["secrets"], ["get", "update"], "certificates are shared by the replicas and rotated in place",
         names=[VIRT_API_CERTS_SECRET]),
    rule([""], ["pods"], ["list"], "finds the virt-handler pod of a VMI's node (label kubevirt.io=virt-handler)"),
]  # fmt: skip

CLUSTER_RULES = {
    "virt-api": API_CLUSTER_RULES,
    "virt-controller": CONTROLLER_CLUSTER_RULES,
    "virt-handler": HANDLER_CLUSTER_RULES,
}
NAMESPACE_RULES = {"virt-api": API_NAMESPACE_RULES, "virt-controller": CONTROLLER_NAMESPACE_RULES}


def _binding(
    kind: str, name: str, component: str, role_kind: str, role: str, subjects: list[Obj], ns: str | None
) -> Obj:
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}
    return obj(RBAC, kind, name, component, ns, roleRef=ref, subjects=subjects)


def _sa_subject(config: InstallConfig, component: str) -> list[Obj]:
    return [{"kind": "ServiceAccount", "name": component, "namespace": config.namespace}]


def component_rbac(config: InstallConfig, component: str) -> list[Obj]:
    """The ServiceAccount, roles and bindings of one component (virt-api, virt-controller or virt-handler)."""
    subjects = _sa_subject(config, component)
    name = cluster_role_name(component)
    objects = [
        service_account(config, component),
        obj(RBAC, "ClusterRole", name, component, rules=CLUSTER_RULES[component]),
        _binding("ClusterRoleBinding", name, component, "ClusterRole", name, subjects, None),
    ]
    if component in NAMESPACE_RULES:
        objects += [
            obj(RBAC, "Role", component, component, config.namespace, rules=NAMESPACE_RULES[component]),
            _binding("RoleBinding", component, component, "Role", component, subjects, config.namespace),
        ]
    if component == "virt-api":
        # Every aggregated API server reads the front proxy's CA and allowed names from kube-system.
        objects.append(
            _binding("RoleBinding", AUTH_READER_BINDING, component, "Role", AUTH_READER_ROLE, subjects, "kube-system")
        )
    return objects


# --- the users ---------------------------------------------------------------------------------------

_EDIT_SUBRESOURCES = [
    rule([SUBRESOURCES], ["virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart",
                          "virtualmachines/migrate"], ["update"], "virtctl start|stop|restart|migrate"),
    rule([SUBRESOURCES], ["virtualmachineinstances/pause", "virtualmachineinstances/unpause",
                          "virtualmachineinstances/softreboot", "virtualmachineinstances/reset"], ["update"],
         "virtctl pause|unpause|softreboot|reset"),
    rule([SUBRESOURCES], ["virtualmachineinstances/console", "virtualmachineinstances/vnc",
                          "virtualmachineinstances/guestosinfo"], ["get"], "virtctl console|vnc|guestosinfo"),
    rule([SUBRESOURCES], ["virtualmachineinstances/portforward", "virtualmachines/portforward"], ["get"],
         "virtctl port-forward|ssh|scp"),
    rule([KUBEVIRT], ["virtualmachineinstancereplicasets/scale"], ["get", "update", "patch"], "kubectl scale vmirs"),
]  # fmt: skip

USER_RULES: dict[str, list[Obj]] = {
    "admin": [
        rule([KUBEVIRT], VM_KINDS, [*READ, *WRITE, "deletecollection"], "namespace admins manage VMs fully"),
        *_EDIT_SUBRESOURCES,
    ],
    "edit": [rule([KUBEVIRT], VM_KINDS, [*READ, *WRITE], "namespace editors run VMs"), *_EDIT_SUBRESOURCES],
    "view": [rule([KUBEVIRT], VM_KINDS, READ, "namespace viewers see VMs (no consoles: they are interactive)")],
}
#: What every authenticated user may call on the aggregated API (``virtctl version``).
DEFAULT_RULES = [rule([SUBRESOURCES], ["version", "healthz"], ["get"], "virtctl version; health of the API")]


def user_roles(config: InstallConfig) -> list[Obj]:
    """``kubevirt.io:admin|edit|view`` (aggregated into the built-in roles) and ``kubevirt.io:default``."""
    roles = []
    for level, rules in USER_RULES.items():
        role = obj(RBAC, "ClusterRole", f"kubevirt.io:{level}", "virt-operator", rules=rules)
        role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{level}"] = "true"
        roles.append(role)
    authenticated = [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]
    roles += [
        obj(RBAC, "ClusterRole", "kubevirt.io:default", "virt-operator", rules=DEFAULT_RULES),
        _binding("ClusterRoleBinding", "kubevirt.io:default", "virt-operator", "ClusterRole", "kubevirt.io:default",
                 authenticated, None),
    ]  # fmt: skip
    return roles


# --- the operator ------------------------------------------------------------------------------------


def operator_cluster_rules(installed: list[Obj], crd_names: list[str]) -> list[Obj]:
    """The operator's cluster-wide rules: its own duties plus every cluster-wide rule it hands out."""
    names = _names_by_kind(installed)
    own = [
        rule([KUBEVIRT], ["kubevirts"], [*READ, "update", "patch"], "the KubeVirt resource it reconciles"),
        rule([KUBEVIRT], ["kubevirts/status"], ["get", "update", "patch"], "phase and conditions it reports"),
        rule([KUBEVIRT], ["kubevirts/finalizers"], ["update"], "its finalizer holds the CR until uninstall is done"),
        rule([KUBEVIRT], ["virtualmachines", "virtualmachineinstances"], ["list"],
             "uninstall is refused while any VM or VMI is left"),
        rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], [*READ, "create"], "installs the CRDs"),
        rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["update", "patch", "delete"],
             "upgrades and removes podvirt's CRDs, no others", names=crd_names),
        rule(["rbac.authorization.k8s.io"], ["clusterroles", "clusterrolebindings"], [*READ, "create"],
             "installs the components' and users' cluster roles"),
        rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["update", "patch", "delete"],
             "upgrades and removes its own cluster roles", names=names["ClusterRole"]),
        rule(["rbac.authorization.k8s.io"], ["clusterrolebindings"], ["update", "patch", "delete"],
             "upgrades and removes its own cluster role bindings", names=names["ClusterRoleBinding"]),
        rule(["rbac.authorization.k8s.io"], ["rolebindings"], ["create"],
             "virt-api's binding in kube-system (a create cannot be narrowed to a name or a namespace)"),
        rule(["rbac.authorization.k8s.io"], ["rolebindings"], ["get", "update", "patch", "delete"],
             "upgrades and removes virt-api's binding in kube-system", names=[AUTH_READER_BINDING]),
        rule([""], ["configmaps"], READ,
             "what extension-apiserver-authentication-reader grants: needed to bind virt-api to it",
             names=[AUTH_CONFIGMAP]),
        rule(["scheduling.k8s.io"], ["priorityclasses"], [*READ, "create"], "installs the components' priority"),
        rule(["scheduling.k8s.io"], ["priorityclasses"], ["update", "patch", "delete"], "its own priority class",
             names=names["PriorityClass"]),
        rule(["admissionregistration.k8s.io", "apiregistration.k8s.io"],
             ["mutatingwebhookconfigurations", "validatingwebhookconfigurations", "apiservices"], READ,
             "sees whether virt-api has registered itself"),
        rule(["admissionregistration.k8s.io"], ["mutatingwebhookconfigurations"], ["delete"],
             "uninstall removes what virt-api registered", names=[MUTATING_WEBHOOK]),
        rule(["admissionregistration.k8s.io"], ["validatingwebhookconfigurations"], ["delete"],
             "uninstall removes what virt-api registered", names=[VALIDATING_WEBHOOK]),
        rule(["apiregistration.k8s.io"], ["apiservices"], ["delete"], "uninstall removes what virt-api registered",
             names=list(API_SERVICES)),
    ]  # fmt: skip
    handed_out = [r for o in installed if o["kind"] == "ClusterRole" for r in o["rules"]]
    return merge_rules(own, handed_out)


def operator_namespace_rules(installed: list[Obj]) -> list[Obj]:
    """The operator's rules in the install namespace: its own duties plus every rule of the Roles it creates."""
    own = [
        rule([""], ["serviceaccounts", "services"], [*READ, *WRITE], "the components' accounts and virt-api's Service"),
        rule([""], ["secrets"], ["create"], "creates the handler mTLS Secrets (a create cannot be narrowed to a name)"),
        rule([""], ["secrets"], ["get", "update", "patch", "delete"],
             "rotates the handler mTLS Secrets; uninstall removes them and virt-api's",
             names=[HANDLER_CA_SECRET, HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET, VIRT_API_CERTS_SECRET]),
        rule(["apps"], ["deployments", "daemonsets"], [*READ, *WRITE], "the components' workloads"),
        rule(["policy"], ["poddisruptionbudgets"], [*READ, *WRITE], "the components' disruption budgets"),
        rule(["rbac.authorization.k8s.io"], ["roles"], [*READ, *WRITE], "the components' Roles here"),
        rule(["rbac.authorization.k8s.io"], ["rolebindings"], [*READ, "update", "patch", "delete"],
             "the components' RoleBindings here (create comes with the cluster role)"),
        rule([""], ["pods"], ["list", "watch"], "readiness of the components' pods for the KubeVirt conditions"),
        rule([""], ["events"], ["create", "patch"], "Events about the installation"),
        rule(["coordination.k8s.io"], ["leases"], ["create"], "the first replica creates the leader Lease"),
        rule(["coordination.k8s.io"], ["leases"], ["get", "patch"], "leader election reads and renews its Lease",
             names=[OPERATOR_LEASE]),
    ]  # fmt: skip
    handed_out = [r for o in installed if o["kind"] == "Role" for r in o["rules"]]
    return merge_rules(own, handed_out)


def _names_by_kind(objects: list[Obj]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"ClusterRole": [], "ClusterRoleBinding": [], "PriorityClass": []}
    for o in objects:
        if o["kind"] in found:
            found[o["kind"]].append(o["metadata"]["name"])
    return found


def operator_rbac(config: InstallConfig, installed: list[Obj], crd_names: list[str]) -> list[Obj]:
    """The operator's ServiceAccount, ClusterRole, Role and their bindings, able to create ``installed``."""
    name = cluster_role_name(OPERATOR)
    subjects = _sa_subject(config, OPERATOR)
    cluster_rules = operator_cluster_rules(installed, crd_names)
    namespace_rules = operator_namespace_rules(installed)
    return [
        service_account(config, OPERATOR),
        obj(RBAC, "ClusterRole", name, OPERATOR, rules=cluster_rules),
        _binding("ClusterRoleBinding", name, OPERATOR, "ClusterRole", name, subjects, None),
        obj(RBAC, "Role", OPERATOR, OPERATOR, config.namespace, rules=namespace_rules),
        _binding("RoleBinding", OPERATOR, OPERATOR, "Role", OPERATOR, subjects, config.namespace),
    ]
