"""virt-operator's pure reconcile: install, status rules, upgrade, configuration, pruning, one KubeVirt per cluster."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from test_operator_fakes import T0, World, condition, kubevirt, operator_install

from virt_operator.installconfig import HANDLER_CA_SECRET, HANDLER_CLIENT_SECRET, HANDLER_SERVER_SECRET, InstallConfig
from virt_operator.kinds import Key
from virt_operator.plan import CERTS_ANNOTATION, FINALIZER, INVENTORY_ANNOTATION, Apply, Delete, Event, SetMetadata
from virt_operator.reconcile import Manifests

pytestmark = pytest.mark.unit

NS = "kubevirt"
VIRT_API = Key("apps/v1", "Deployment", NS, "virt-api")
HANDLER = Key("apps/v1", "DaemonSet", NS, "virt-handler")


def installed(world: World) -> World:
    world.step()
    world.become_ready()
    world.step(1)
    return world


def events(plan: object) -> list[str]:
    return [a.reason for a in plan.actions if isinstance(a, Event)]  # type: ignore[attr-defined]


def test_a_fresh_install_takes_the_finalizer_first_then_applies_everything_and_is_deploying() -> None:
    world = World(kubevirt())
    plan = world.step()
    first = plan.actions[0]
    assert isinstance(first, SetMetadata) and first.finalizers == [FINALIZER]
    applied = {a.key for a in plan.actions if isinstance(a, Apply)}
    assert VIRT_API in applied and HANDLER in applied
    assert {
        Key("v1", "Secret", NS, n) for n in (HANDLER_CA_SECRET, HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET)
    } <= applied
    inventory = {tuple(k) for k in json.loads(first.inventory or "[]")}
    assert all((k.api_version, k.kind, k.namespace, k.name) in inventory for k in applied), "recorded before created"
    status = world.kv["status"]
    assert status["phase"] == "Deploying"
    assert condition(world.kv, "Available")["status"] == "False"
    assert condition(world.kv, "Progressing")["status"] == "True"
    assert condition(world.kv, "Progressing")["reason"] == "DeploymentInProgress"
    assert condition(world.kv, "Degraded")["status"] == "False"
    assert status["targetKubeVirtVersion"] == "v1" and "observedKubeVirtVersion" not in status
    assert status["observedGeneration"] == 1
    assert "ResourcesApplied" in events(plan) and "CertificatesIssued" in events(plan)


def test_available_only_when_every_component_is_ready() -> None:
    world = World(kubevirt())
    world.step()
    world.become_ready("virt-api", "virt-controller")
    world.become_ready("virt-handler", ready=False)
    world.step(1)
    available = condition(world.kv, "Available")
    assert available["status"] == "False" and "virt-handler: 1/2 pods ready" in available["message"]
    assert world.kv["status"]["phase"] == "Deploying"
    world.become_ready("virt-handler")
    plan = world.step(1)
    assert condition(world.kv, "Available")["status"] == "True"
    assert condition(world.kv, "Available")["reason"] == "AllComponentsReady"
    assert condition(world.kv, "Progressing")["status"] == "False"
    assert condition(world.kv, "Degraded")["status"] == "False"
    assert world.kv["status"]["phase"] == "Deployed"
    assert world.kv["status"]["observedKubeVirtVersion"] == "v1"
    assert "Deployed" in events(plan)


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1}, "1/2 replicas ready"),
        ({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2}, "1 updated"),
        ({"observedGeneration": 0, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, "not seen"),
    ],
)
def test_a_deployment_that_is_not_fully_updated_and_ready_is_not_available(status: dict[str, int], why: str) -> None:
    world = installed(World(kubevirt()))
    world.workload("virt-api")["status"] = status
    world.step(1)
    available = condition(world.kv, "Available")
    assert available["status"] == "False" and "virt-api" in available["message"] and why in available["message"]


def test_a_daemonset_with_pods_of_an_old_spec_is_not_available() -> None:
    world = installed(World(kubevirt()))
    ds = world.workload("virt-handler")
    ds["status"] = {**ds["status"], "updatedNumberScheduled": 1}
    world.step(1)
    assert condition(world.kv, "Available")["status"] == "False"
    assert condition(world.kv, "Progressing")["status"] == "True", "a rollout is under way"


def test_a_component_failing_after_deployment_is_unavailable_then_degraded_after_the_grace_period() -> None:
    world = installed(World(kubevirt()))
    world.become_ready("virt-controller", ready=False)
    world.step(1)
    assert world.kv["status"]["phase"] == "Deployed", "a failure later does not undeploy"
    assert condition(world.kv, "Available")["status"] == "False"
    assert condition(world.kv, "Available")["reason"] == "ComponentsNotReady"
    assert condition(world.kv, "Progressing")["status"] == "False"
    assert condition(world.kv, "Degraded")["status"] == "False"
    plan = world.step(30)
    assert condition(world.kv, "Degraded")["status"] == "False"
    assert plan.requeue_after == pytest.approx(30), "looks again when the grace period ends"
    plan = world.step(30)
    degraded = condition(world.kv, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ComponentUnavailable"
    assert (
        f"virt-controller not ready since {(T0 + timedelta(seconds=2)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        in degraded["message"]
    )
    assert "ComponentUnavailable" in events(plan)
    assert world.step(5).status is None, "an unchanged degradation is not written again"
    world.become_ready("virt-controller")
    world.step(1)
    assert condition(world.kv, "Degraded")["status"] == "False"
    assert condition(world.kv, "Available")["status"] == "True"


def test_a_reconcile_of_an_unchanged_installation_writes_nothing() -> None:
    world = installed(World(kubevirt()))
    plan = world.step(5)
    assert plan.actions == [] and plan.status is None


def test_a_restarted_operator_applies_everything_once_without_flapping_available() -> None:
    world = installed(World(kubevirt()))
    world.applied.clear()
    plan = world.step(1)
    assert {a.key for a in plan.actions if isinstance(a, Apply)} >= {VIRT_API, HANDLER}
    assert not any(isinstance(a, Apply) and a.key.kind == "Secret" for a in plan.actions), "certs are kept"
    assert plan.status is None, "still Available: the same spec was re-applied"
    assert world.step(1).actions == []


def test_a_change_made_by_someone_else_is_applied_back() -> None:
    world = installed(World(kubevirt()))
    deployment = world.objects[VIRT_API]
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "evil"
    deployment["metadata"]["generation"] += 1
    plan = world.step(1)
    (apply,) = [a for a in plan.actions if isinstance(a, Apply)]
    assert apply.key == VIRT_API and apply.body["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1")


def test_upgrade_re_renders_at_the_new_tag_and_progresses_until_ready() -> None:
    world = installed(World(kubevirt()))
    world.set_spec(imageTag="v2")
    plan = world.step(1)
    applied = {a.key: a.body for a in plan.actions if isinstance(a, Apply)}
    assert applied[VIRT_API]["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/podvirt/virt-api:v2"
    assert not any(k.kind == "Secret" for k in applied), "the certificates stay"
    status = world.kv["status"]
    assert status["phase"] == "Deploying"
    assert status["targetKubeVirtVersion"] == "v2" and status["observedKubeVirtVersion"] == "v1"
    assert condition(world.kv, "Progressing")["reason"] == "UpdateInProgress"
    assert "from version v1" in condition(world.kv, "Progressing")["message"]
    assert condition(world.kv, "Available")["status"] == "False"
    assert status["observedGeneration"] == 2
    world.become_ready()
    world.step(1)
    assert world.kv["status"]["phase"] == "Deployed"
    assert world.kv["status"]["observedKubeVirtVersion"] == "v2"
    assert condition(world.kv, "Available")["status"] == "True"


def test_configuration_reaches_the_components() -> None:
    world = World(
        kubevirt(configuration={"developerConfiguration": {"useEmulation": True}}, imageRegistry="other.io/x")
    )
    plan = world.step()
    body = next(a.body for a in plan.actions if isinstance(a, Apply) and a.key == VIRT_API)
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--use-emulation"] and container["image"] == "other.io/x/virt-api:v1"
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "virt-operator"


def test_the_pods_mounting_the_handler_certificates_carry_their_digest() -> None:
    world = World(kubevirt())
    plan = world.step()
    bodies = {a.key: a.body for a in plan.actions if isinstance(a, Apply)}
    assert CERTS_ANNOTATION in bodies[HANDLER]["spec"]["template"]["metadata"]["annotations"]
    assert "annotations" not in bodies[VIRT_API]["spec"]["template"]["metadata"]


def test_an_object_the_configuration_no_longer_renders_is_deleted_and_then_forgotten() -> None:
    world = installed(World(kubevirt(configuration={"developerConfiguration": {"featureGates": ["ExtraRole"]}})))
    extra = Key("rbac.authorization.k8s.io/v1", "ClusterRole", "", "extra")
    assert extra in world.objects
    world.set_spec()
    plan = world.step(1)
    deletes = [a for a in plan.actions if isinstance(a, Delete)]
    assert [d.key for d in deletes] == [extra] and deletes[0].uid == "uid-extra"
    assert extra not in world.objects
    assert "extra" in world.kv["metadata"]["annotations"][INVENTORY_ANNOTATION], "kept until seen gone"
    world.step(1)
    assert "extra" not in world.kv["metadata"]["annotations"][INVENTORY_ANNOTATION]


def test_an_object_of_the_operators_own_install_is_never_pruned() -> None:
    world = installed(World(kubevirt()))
    world.kv["metadata"]["annotations"][INVENTORY_ANNOTATION] = json.dumps(
        [["v1", "Namespace", "", "kubevirt"], *json.loads(world.kv["metadata"]["annotations"][INVENTORY_ANNOTATION])]
    )
    world.objects[Key("v1", "Namespace", "", "kubevirt")] = {
        "metadata": {"name": "kubevirt", "labels": {"app.kubernetes.io/part-of": "podvirt"}}
    }
    plan = world.step(1)
    assert not any(isinstance(a, Delete) for a in plan.actions)


def test_an_invalid_spec_is_degraded_with_the_field_named_and_nothing_applied() -> None:
    world = World(kubevirt(imageTag=5))
    plan = world.step()
    assert not any(isinstance(a, Apply) for a in plan.actions)
    degraded = condition(world.kv, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert "spec.imageTag" in degraded["message"]


def test_a_manifests_error_is_told_in_the_status_not_raised() -> None:
    def broken(config: InstallConfig) -> list[dict[str, Any]]:
        raise KeyError("virt-api")

    world = World(kubevirt(), manifests=Manifests(broken, operator_install))
    world.step()
    degraded = condition(world.kv, "Degraded")
    assert degraded["reason"] == "RenderFailed" and "KeyError" in degraded["message"]


def test_a_second_kubevirt_is_ignored_and_says_so() -> None:
    first = kubevirt("kubevirt")
    first["metadata"]["finalizers"] = [FINALIZER]
    world = World(kubevirt("second", "other", created=T0 + timedelta(hours=1)), others=[first])
    plan = world.step()
    assert not any(isinstance(a, Apply | SetMetadata) for a in plan.actions)
    degraded = condition(world.kv, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ExistingDeployment"
    assert "kubevirt/kubevirt" in degraded["message"] and "ignored" in degraded["message"]
    assert condition(world.kv, "Available")["status"] == "False"
    assert world.step(1).actions == [], "told once"


def test_the_oldest_kubevirt_is_the_one_acted_on_when_none_holds_the_finalizer() -> None:
    younger = kubevirt("younger", created=T0 + timedelta(seconds=5))
    world = World(kubevirt("older"), others=[younger])
    plan = world.step()
    assert any(isinstance(a, Apply) for a in plan.actions)
    world = World(younger, others=[kubevirt("older")])
    assert condition({"status": world.plan().status}, "Degraded")["reason"] == "ExistingDeployment"


def test_condition_times_stay_while_nothing_changes() -> None:
    world = installed(World(kubevirt()))
    before = condition(world.kv, "Available")["lastTransitionTime"]
    world.become_ready("virt-api", ready=False)
    world.step(10)
    after = condition(world.kv, "Available")
    assert after["status"] == "False" and after["lastTransitionTime"] != before
