"""What ``kubectl apply`` installs before anything runs: namespace, CRDs, virt-operator and its permissions.

virt-operator then installs :func:`components` for the ``KubeVirt`` resource; its roles are computed from
those objects, so it can create each of them and nothing the installation does not need.
"""

from __future__ import annotations

from kubevirt_types.crdgen import KINDS
from virt_operator.installconfig import OPERATOR, InstallConfig

from .components import components, container, pod_template, restricted_container, restricted_pod, spread
from .meta import Obj, obj
from .rbac import operator_rbac


def namespace(config: InstallConfig) -> Obj:
    ns = obj("v1", "Namespace", config.namespace, OPERATOR)
    # virt-handler is privileged (see components.virt_handler); the rest would pass "restricted".
    ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
    return ns


def crds() -> list[Obj]:
    """Every kubevirt.io CRD, the KubeVirt one included, exactly as kubevirt_types.crdgen makes them."""
    found = []
    for kind in KINDS:
        crd = kind.crd()
        crd["metadata"]["labels"]["app.kubernetes.io/component"] = OPERATOR
        found.append(crd)
    return found


def operator_deployment(config: InstallConfig) -> Obj:
    main = container(
        config,
        OPERATOR,
        [],
        env=[
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        resources={"requests": {"cpu": "10m", "memory": "150Mi"}},
        securityContext=restricted_container(),
    )
    del main["args"]
    pod = {"securityContext": restricted_pod(), "affinity": spread(OPERATOR), "containers": [main]}
    template = pod_template(OPERATOR, pod)
    return obj(
        "apps/v1",
        "Deployment",
        OPERATOR,
        OPERATOR,
        config.namespace,
        spec={
            # Two replicas, one leading on the Lease (virt_operator/main.py); the standby takes over
            # when the leader's node goes. Rolled one at a time: a new replica waits as a standby.
            "replicas": 2,
            "selector": {"matchLabels": {"kubevirt.io": OPERATOR}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template,
        },
    )


def operator_install(config: InstallConfig) -> list[Obj]:
    """Namespace, CRDs, the operator's account, roles and Deployment (``deploy/podvirt-operator.yaml``)."""
    definitions = crds()
    rbac = operator_rbac(config, components(config), [c["metadata"]["name"] for c in definitions])
    # The PriorityClass the operator's own pod uses must exist before it: it is part of the install.
    priority = next(o for o in components(config) if o["kind"] == "PriorityClass")
    return [namespace(config), *definitions, priority, *rbac, operator_deployment(config)]


def kubevirt_cr(config: InstallConfig) -> Obj:
    """The example install resource (``deploy/kubevirt-cr.yaml``): one per cluster, named ``kubevirt``."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": config.namespace},
        "spec": {
            "imagePullPolicy": config.image_pull_policy,
            "configuration": {"developerConfiguration": {"useEmulation": False, "featureGates": []}},
        },
    }
