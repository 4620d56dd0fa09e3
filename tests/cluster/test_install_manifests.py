"""The install manifests on a real apiserver: accepted as written, RBAC least privilege, users' roles aggregate.

Workloads are only sent with server-side dry run (nothing here runs a component). The RBAC objects,
CRDs, PriorityClass and namespace are really applied, and removed again at the end of the module,
cluster-scoped ones too, even when a test fails.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import Cluster
from virt_operator.installconfig import InstallConfig
from virt_operator.manifests import components, operator_install
from virt_operator.manifests.files import to_yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CONFIG = InstallConfig()
NS = CONFIG.namespace
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
#: How the operator applies (server-side, forced, as its own field manager), here as its service account.
OPERATOR_APPLY = (
    "apply", "--server-side", "--force-conflicts", "--field-manager=virt-operator",
    f"--as=system:serviceaccount:{NS}:virt-operator",
)  # fmt: skip
VM = """apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: jane-vm
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices: {}
        memory:
          guest: 64Mi
"""


def sa(component: str) -> str:
    """kubectl's flag to act as a component's service account."""
    return f"--as=system:serviceaccount:{NS}:{component}"


def can_i(cluster: Cluster, *args: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", *args, check=False)
    answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def review(cluster: Cluster, user: str, namespace: str, verb: str, group: str, resource: str, sub: str) -> bool:
    """A SubjectAccessReview: ``kubectl auth can-i`` cannot name a group that discovery does not know yet."""
    attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": resource, "subresource": sub}
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": attributes}}  # fmt: skip
    proc = cluster.kubectl("create", "-o", "jsonpath={.status.allowed}", "-f", "-", input=json.dumps(body))
    return proc.stdout.strip() == "true"


def _wait(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def installed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator's install without its Deployment (namespace, CRDs, priority, RBAC), applied for real."""
    workdir = tmp_path_factory.mktemp("install")
    prerequisites = workdir / "prerequisites.yaml"
    prerequisites.write_text(to_yaml([o for o in operator_install(CONFIG) if o["kind"] != "Deployment"]))
    component_rbac = workdir / "component-rbac.yaml"
    component_rbac.write_text(to_yaml([o for o in components(CONFIG) if o["kind"] in RBAC_KINDS]))
    # Another module's installation may still be going away: a terminating namespace takes nothing new.
    _wait(
        lambda: (
            cluster.kubectl("get", "namespace", NS, "-o", "jsonpath={.status.phase}", check=False).stdout
            != "Terminating"
        ),
        f"an earlier namespace {NS} to be gone",
        timeout=180,
    )
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(prerequisites))
        _wait(
            lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", NS, check=False).returncode == 0,
            f"namespace {NS} to be ready",
        )
        yield workdir
    finally:
        for path in (component_rbac, prerequisites):
            cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(path), check=False)


def test_the_operator_manifest_is_accepted_as_written(cluster: Cluster, installed: Path) -> None:
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", str(ROOT / "deploy" / "podvirt-operator.yaml")
    )
    assert "deployment.apps/virt-operator serverside-applied (server dry run)" in proc.stdout


def test_the_operator_may_create_every_component_object(cluster: Cluster, component_rbac: Path) -> None:
    """As the operator's account (the component roles were created by it too): every object is accepted."""
    objects = component_rbac / "components.yaml"
    objects.write_text(to_yaml(components(CONFIG)))
    proc = cluster.kubectl(*OPERATOR_APPLY, "--dry-run=server", "-f", str(objects), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(components(CONFIG))
    assert "daemonset.apps/virt-handler serverside-applied" in proc.stdout


def test_the_operator_holds_no_more_than_it_needs(cluster: Cluster, installed: Path) -> None:
    op = sa("virt-operator")
    assert can_i(cluster, "create", "deployments", "-n", NS, op)
    assert not can_i(cluster, "create", "deployments", "-n", "default", op)
    assert not can_i(cluster, "get", "secrets", "-n", "default", op)
    assert not can_i(cluster, "get", "secrets/someone-elses", "-n", NS, op)
    assert can_i(cluster, "delete", "secrets/virt-handler-ca", "-n", NS, op)
    assert not can_i(cluster, "delete", "clusterroles/cluster-admin", op)
    assert not can_i(cluster, "delete", "customresourcedefinitions/other.example.com", op)


@pytest.fixture(scope="module")
def component_rbac(cluster: Cluster, installed: Path) -> Path:
    """The components' accounts, roles and bindings, created by the operator's account as it will create them.

    Roles before bindings: the apiserver lets a binding through only when its role exists and the
    creator holds every permission in it (RBAC escalation prevention), dry run or not.
    """
    objects = [o for o in components(CONFIG) if o["kind"] in RBAC_KINDS]
    for step, kinds in enumerate((("ServiceAccount", "ClusterRole", "Role"), ("ClusterRoleBinding", "RoleBinding"))):
        path = installed / f"component-rbac-{step}.yaml"
        path.write_text(to_yaml([o for o in objects if o["kind"] in kinds]))
        proc = cluster.kubectl(*OPERATOR_APPLY, "-f", str(path), check=False)
        assert proc.returncode == 0, proc.stderr
    return installed


def test_virt_controller_may_do_what_it_does_and_no_more(cluster: Cluster, component_rbac: Path) -> None:
    me = sa("virt-controller")
    assert can_i(cluster, "create", "pods", "-n", "default", me)
    assert can_i(cluster, "delete", "pods", "-n", "default", me)
    assert can_i(cluster, "patch", "virtualmachineinstances.kubevirt.io", "--subresource=status", "-A", me)
    assert can_i(cluster, "create", "events", "-n", "default", me)
    assert can_i(cluster, "patch", "leases.coordination.k8s.io/virt-controller", "-n", NS, me)
    assert not can_i(cluster, "patch", "leases.coordination.k8s.io/other", "-n", NS, me)
    assert not can_i(cluster, "get", "secrets", "-A", me)
    assert not can_i(cluster, "get", "secrets", "-n", NS, me)
    assert not can_i(cluster, "delete", "virtualmachines.kubevirt.io", "-n", "default", me)
    assert not can_i(cluster, "patch", "nodes", me)


def test_virt_api_may_do_what_it_does_and_no_more(cluster: Cluster, component_rbac: Path) -> None:
    me = sa("virt-api")
    assert can_i(cluster, "create", "subjectaccessreviews.authorization.k8s.io", me)
    assert can_i(cluster, "get", "configmaps/extension-apiserver-authentication", "-n", "kube-system", me)
    assert can_i(cluster, "update", "secrets/virt-api-certs", "-n", NS, me)
    assert not can_i(cluster, "get", "secrets/virt-handler-ca", "-n", NS, me)
    assert can_i(cluster, "list", "pods", "-n", NS, me)
    assert not can_i(cluster, "list", "pods", "-n", "default", me)
    assert not can_i(cluster, "delete", "pods", "-n", NS, me)
    assert not can_i(cluster, "delete", "pods", "-A", me)
    assert can_i(cluster, "patch", "mutatingwebhookconfigurations/virt-api-mutator", me)
    assert not can_i(cluster, "patch", "mutatingwebhookconfigurations/someone-elses", me)
    assert can_i(cluster, "patch", "apiservices.apiregistration.k8s.io/v1.subresources.kubevirt.io", me)
    assert not can_i(cluster, "delete", "virtualmachines.kubevirt.io", "-n", "default", me)


def test_virt_handler_may_do_what_it_does_and_no_more(cluster: Cluster, component_rbac: Path) -> None:
    me = sa("virt-handler")
    assert can_i(cluster, "watch", "virtualmachineinstances.kubevirt.io", "-A", me)
    assert can_i(cluster, "patch", "nodes", me)
    assert not can_i(cluster, "patch", "nodes", "--subresource=status", me)  # devices come from its plugins
    assert not can_i(cluster, "get", "secrets", "-n", NS, me)
    assert not can_i(cluster, "delete", "pods", "-A", me)
    assert not can_i(cluster, "delete", "nodes", me)
    assert not can_i(cluster, "create", "virtualmachineinstances.kubevirt.io", "-n", "default", me)


def test_an_editor_runs_vms_in_their_namespace_only(cluster: Cluster, component_rbac: Path, namespace: str) -> None:
    other = f"t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.kubectl("create", "rolebinding", "jane-edit", "--clusterrole=edit", "--user=jane", "-n", namespace)
        # The aggregation controller copies kubevirt.io:edit into edit asynchronously.
        _wait(
            lambda: can_i(cluster, "create", "virtualmachines.kubevirt.io", "-n", namespace, "--as=jane"),
            "kubevirt.io:edit to be aggregated into edit",
        )
        console = ("get", "subresources.kubevirt.io", "virtualmachineinstances", "console")
        start = ("update", "subresources.kubevirt.io", "virtualmachines", "start")
        forward = ("get", "subresources.kubevirt.io", "virtualmachineinstances", "portforward")
        assert review(cluster, "jane", namespace, *console)
        assert review(cluster, "jane", namespace, *start)
        assert review(cluster, "jane", namespace, *forward)
        assert not review(cluster, "jane", other, *console)
        assert not review(cluster, "jane", other, *forward)
        assert not review(cluster, "jane", other, *start)
        assert not can_i(cluster, "create", "virtualmachines.kubevirt.io", "-n", other, "--as=jane")
        created = cluster.kubectl(
            "create", "--dry-run=server", "-n", namespace, "--as=jane", "-f", "-", input=VM, check=False
        )
        assert created.returncode == 0, created.stderr
        refused = cluster.kubectl(
            "create", "--dry-run=server", "-n", other, "--as=jane", "-f", "-", input=VM, check=False
        )
        assert refused.returncode != 0 and "forbidden" in refused.stderr
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
