"""virt-operator's pure reconcile of a deleted KubeVirt: blocked while VMs exist, then everything it installed goes."""

from __future__ import annotations

import pytest
from test_operator_fakes import World, condition, kubevirt

from virt_operator.kinds import Key
from virt_operator.plan import FINALIZER, Delete, Event, SetMetadata

pytestmark = pytest.mark.unit

NS = "kubevirt"
MUTATOR = Key("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "virt-api-mutator")
API_CERTS = Key("v1", "Secret", NS, "virt-api-certs")
NAMESPACE = Key("v1", "Namespace", "", NS)
PRIORITY = Key("scheduling.k8s.io/v1", "PriorityClass", "", "kubevirt-cluster-critical")


def deployed() -> World:
    world = World(kubevirt())
    world.step()
    world.become_ready()
    world.step(1)
    labels = {"app.kubernetes.io/part-of": "podvirt"}
    world.objects[MUTATOR] = {"metadata": {"name": "virt-api-mutator", "uid": "m", "labels": labels}}
    world.objects[API_CERTS] = {"metadata": {"name": "virt-api-certs", "namespace": NS, "uid": "s"}}
    world.objects[NAMESPACE] = {"metadata": {"name": NS, "labels": labels}}
    return world


def test_deletion_is_refused_while_vms_or_vmis_exist_and_says_how_many_and_where() -> None:
    world = deployed()
    world.workloads = {"team-a": (1, 1), "team-b": (0, 2), "empty": (0, 0)}
    world.delete_kv()
    plan = world.step(1)
    assert not any(isinstance(a, Delete | SetMetadata) for a in plan.actions), "nothing removed, finalizer kept"
    assert world.kv["metadata"]["finalizers"] == [FINALIZER]
    assert world.kv["status"]["phase"] == "Deleting"
    degraded = condition(world.kv, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "DeletionBlocked"
    assert "1 VirtualMachine and 3 VirtualMachineInstances" in degraded["message"]
    assert "namespaces: team-a, team-b" in degraded["message"]
    assert condition(world.kv, "Available")["status"] == "True", "the components still run"
    assert [a.reason for a in plan.actions if isinstance(a, Event)] == ["DeletionBlocked"]
    assert plan.requeue_after, "VMs are not watched: look again"
    assert world.step(5).actions == [], "told once"


def test_once_no_vm_remains_everything_installed_goes_then_the_finalizer() -> None:
    world = deployed()
    installed = {k for k in world.objects if k not in (MUTATOR, API_CERTS, NAMESPACE)}
    world.workloads = {"team-a": (1, 0)}
    world.delete_kv()
    world.step(1)
    world.workloads = {}
    plan = world.step(1)
    deleted = [a for a in plan.actions if isinstance(a, Delete)]
    assert {d.key for d in deleted} == installed - {PRIORITY}, "operator_install's objects stay"
    assert all(d.propagation == "Foreground" for d in deleted if d.key.kind in ("Deployment", "DaemonSet"))
    assert MUTATOR in world.objects, "virt-api's own registrations go after its pods"
    assert world.kv["status"]["phase"] == "Deleting"
    assert condition(world.kv, "Progressing")["reason"] == "DeletionInProgress"
    assert "waiting for" in condition(world.kv, "Progressing")["message"]
    # Foreground deletions still under way: nothing is deleted twice, the finalizer stays.
    plan = world.step(1)
    assert not any(isinstance(a, Delete) for a in plan.actions)
    assert world.kv["metadata"]["finalizers"] == [FINALIZER]
    world.finish_foreground_deletions()
    plan = world.step(1)
    assert {a.key for a in plan.actions if isinstance(a, Delete)} == {MUTATOR, API_CERTS}
    plan = world.step(1)
    assert world.kv["status"]["phase"] == "Deleted"
    assert plan.after_status == [SetMetadata(plan.after_status[0].resource_version, finalizers=[])]  # type: ignore[union-attr]
    assert world.gone
    assert NAMESPACE in world.objects and PRIORITY in world.objects


def test_a_deleted_kubevirt_without_the_finalizer_is_left_alone() -> None:
    world = World(kubevirt())
    world.delete_kv()
    plan = world.step()
    assert plan.actions == [] and plan.status is None


def test_an_object_without_podvirts_label_is_never_deleted() -> None:
    world = deployed()
    sa = Key("v1", "ServiceAccount", NS, "virt-api")
    del world.objects[sa]["metadata"]["labels"]["app.kubernetes.io/part-of"]
    world.delete_kv()
    plan = world.step(1)
    assert sa not in {a.key for a in plan.actions if isinstance(a, Delete)}


def test_an_ignored_kubevirt_being_deleted_drops_a_finalizer_it_should_not_hold() -> None:
    first = kubevirt("kubevirt")
    first["metadata"]["finalizers"] = [FINALIZER]
    second = kubevirt("second", "other")
    second["metadata"]["finalizers"] = [FINALIZER, "someone-elses"]
    second["metadata"]["creationTimestamp"] = "2999-01-01T00:00:00Z"
    world = World(second, others=[first])
    world.delete_kv()
    plan = world.step()
    (meta,) = [a for a in plan.actions if isinstance(a, SetMetadata)]
    assert meta.finalizers == ["someone-elses"]
    assert not any(isinstance(a, Delete) for a in plan.actions)
