"""The install manifests: fresh, labelled, least-privilege RBAC the operator can hand out, flags the components take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import kubevirt_types as kt
from kubevirt_types.crdgen import KINDS
from virt_api import main as api_main
from virt_api import registration
from virt_controller import main as controller_main
from virt_handler import main as handler_main
from virt_operator.installconfig import (
    COMPONENT_LABEL,
    HANDLER_CLIENT_SECRET,
    HANDLER_SERVER_SECRET,
    PART_OF,
    PART_OF_LABEL,
    InstallConfig,
)
from virt_operator.manifests import components, covers, operator_install, stale_files, write_all
from virt_operator.manifests.__main__ import main
from virt_operator.manifests.meta import rule
from virt_operator.manifests.rbac import (
    API_SERVICES,
    AUTH_CONFIGMAP,
    MUTATING_WEBHOOK,
    VALIDATING_WEBHOOK,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CONFIG = InstallConfig()
PLURALS = {
    "Namespace": ("", "namespaces"),
    "ServiceAccount": ("", "serviceaccounts"),
    "Service": ("", "services"),
    "Secret": ("", "secrets"),
    "Deployment": ("apps", "deployments"),
    "DaemonSet": ("apps", "daemonsets"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "PriorityClass": ("scheduling.k8s.io", "priorityclasses"),
    "ClusterRole": ("rbac.authorization.k8s.io", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "clusterrolebindings"),
    "Role": ("rbac.authorization.k8s.io", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "CustomResourceDefinition": ("apiextensions.k8s.io", "customresourcedefinitions"),
}


def find(objects: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    for o in objects:
        meta = o["metadata"]
        if o["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return o
    raise AssertionError(f"no {kind} {namespace}/{name}")


def operator_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    install = operator_install(CONFIG)
    return find(install, "ClusterRole", "podvirt:virt-operator")["rules"], find(
        install, "Role", "virt-operator", CONFIG.namespace
    )["rules"]


def rules_of(component: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    objects = components(CONFIG)
    cluster = find(objects, "ClusterRole", f"podvirt:{component}")["rules"]
    try:
        namespaced = find(objects, "Role", component, CONFIG.namespace)["rules"]
    except AssertionError:
        namespaced = []
    return cluster, namespaced


def can(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return covers(rules, rule([group], [resource], [verb], "test", names=[name] if name else None))


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# --- files ---------------------------------------------------------------------------------------------


def test_committed_files_are_not_stale() -> None:
    stale = stale_files(ROOT)
    assert not stale, f"regenerate with `make manifests`: {stale}"


def test_the_staleness_check_notices_an_edit_and_a_leftover(tmp_path: Path) -> None:
    write_all(tmp_path)
    assert stale_files(tmp_path) == []
    (tmp_path / "deploy" / "podvirt-operator.yaml").write_text("# edited\n")
    (tmp_path / "bundle" / "manifests" / "old.yaml").write_text("{}\n")
    assert stale_files(tmp_path) == ["bundle/manifests/old.yaml", "deploy/podvirt-operator.yaml"]
    assert main([str(tmp_path), "--check"]) == 1
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0
    assert not (tmp_path / "bundle" / "manifests" / "old.yaml").exists()


def test_the_example_install_resource_is_a_valid_kubevirt() -> None:
    [cr] = list(yaml.safe_load_all((ROOT / "deploy" / "kubevirt-cr.yaml").read_text()))
    kv = kt.KubeVirt.model_validate(cr)
    assert (cr["metadata"]["name"], cr["metadata"]["namespace"]) == ("kubevirt", "kubevirt")
    assert kv.spec is not None


def test_the_install_manifest_holds_every_crd_and_the_operator() -> None:
    install = operator_install(CONFIG)
    crds = {o["spec"]["names"]["kind"] for o in install if o["kind"] == "CustomResourceDefinition"}
    assert crds == {kind.kind for kind in KINDS}
    deployment = find(install, "Deployment", "virt-operator", CONFIG.namespace)
    assert container(deployment)["command"] == ["virt-operator"]
    assert container(deployment)["image"] == CONFIG.image("virt-operator")
    assert install[0]["kind"] == "Namespace"


# --- labels, security ----------------------------------------------------------------------------------


def test_every_object_is_labelled_as_part_of_podvirt_with_its_component() -> None:
    for o in [*operator_install(CONFIG), *components(CONFIG)]:
        labels = o["metadata"]["labels"]
        assert labels[PART_OF_LABEL] == PART_OF, o["metadata"]["name"]
        assert labels[COMPONENT_LABEL], o["metadata"]["name"]


def test_pods_are_non_root_except_the_handler_with_probes_and_requests() -> None:
    workloads = [
        o for o in [*operator_install(CONFIG), *components(CONFIG)] if o["kind"] in ("Deployment", "DaemonSet")
    ]
    assert {o["metadata"]["name"] for o in workloads} == {
        "virt-operator",
        "virt-api",
        "virt-controller",
        "virt-handler",
    }
    for o in workloads:
        pod = o["spec"]["template"]["spec"]
        c = container(o)
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert pod["priorityClassName"] == "kubevirt-cluster-critical"
        assert o["spec"]["selector"]["matchLabels"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
        if o["metadata"]["name"] == "virt-handler":
            assert c["securityContext"]["privileged"] is True and pod["hostPID"] is True
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    api = container(find(components(CONFIG), "Deployment", "virt-api", CONFIG.namespace))
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz" and api["readinessProbe"]["httpGet"]["port"] == 8443


# --- the components' flags -----------------------------------------------------------------------------


def test_the_components_accept_their_arguments() -> None:
    objects = components(
        InstallConfig(use_emulation=True, controller_replicas=3, api_replicas=1, cpu_allocation_ratio=20)
    )
    controller = find(objects, "Deployment", "virt-controller", CONFIG.namespace)
    args = controller_main.parse_args(container(controller)["args"])
    assert args.launcher_image == CONFIG.image("virt-launcher") and args.use_emulation
    assert args.cpu_allocation_ratio == 20
    assert args.leader_elect and args.lease_namespace == CONFIG.namespace
    assert controller["spec"]["replicas"] == 3
    api = find(objects, "Deployment", "virt-api", CONFIG.namespace)
    assert api["spec"]["replicas"] == 1
    api_args = api_main._parser().parse_args(container(api)["args"])
    assert api_args.handler_cert and api_args.handler_key and api_args.handler_ca
    handler = find(objects, "DaemonSet", "virt-handler", CONFIG.namespace)
    handler_args = handler_main._parser().parse_args(container(handler)["args"])
    assert str(handler_args.kubelet_root) == CONFIG.kubelet_root
    assert handler_args.kvm == "no"
    probe_port = container(handler)["readinessProbe"]["httpGet"]["port"]
    [metrics] = [p for p in container(handler)["ports"] if p["name"] == probe_port]
    assert handler_args.metrics_address == f"0.0.0.0:{metrics['containerPort']}"
    plain = container(find(components(CONFIG), "Deployment", "virt-controller", CONFIG.namespace))
    assert "--use-emulation" not in plain["args"]


def mounted_secrets(obj: dict[str, Any]) -> dict[str, str]:
    """Secret name -> mount path in the workload's container."""
    pod = obj["spec"]["template"]["spec"]
    by_volume = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    return {by_volume[m["name"]]: m["mountPath"] for m in container(obj)["volumeMounts"] if m["name"] in by_volume}


def test_the_handler_certificates_are_mounted_where_the_flags_point() -> None:
    objects = components(CONFIG)
    api = find(objects, "Deployment", "virt-api", CONFIG.namespace)
    path = mounted_secrets(api)[HANDLER_CLIENT_SECRET]
    assert f"--handler-cert={path}/tls.crt" in container(api)["args"]
    assert f"--handler-ca={path}/ca.crt" in container(api)["args"]
    handler = find(objects, "DaemonSet", "virt-handler", CONFIG.namespace)
    path = mounted_secrets(handler)[HANDLER_SERVER_SECRET]
    assert f"--tls-key={path}/tls.key" in container(handler)["args"]
    assert f"--client-ca={path}/ca.crt" in container(handler)["args"]


def test_the_handler_reads_the_qemu_capabilities_its_init_container_probed_with_the_launcher_image() -> None:
    for emulation in (True, False):
        config = InstallConfig(use_emulation=emulation)
        handler = find(components(config), "DaemonSet", "virt-handler", config.namespace)
        pod = handler["spec"]["template"]["spec"]
        [probe] = pod["initContainers"]
        assert probe["image"] == config.image("virt-launcher")
        assert probe["command"][0] == "virt-launcher-capabilities"
        [written] = probe["volumeMounts"]
        [read] = [m for m in container(handler)["volumeMounts"] if m["name"] == written["name"]]
        assert read["readOnly"] is True and "readOnly" not in written
        assert probe["command"][1] == written["mountPath"]
        args = handler_main._parser().parse_args(container(handler)["args"])
        assert str(args.qemu_capabilities_dir) == read["mountPath"]
        assert {"name": written["name"], "emptyDir": {"sizeLimit": "8Mi"}} in pod["volumes"]
        security = probe["securityContext"]
        assert security["runAsUser"] == 107, "as the launchers run"
        # libvirt records whether /dev/kvm was usable: the probe sees what launchers see.
        if emulation:
            assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
        else:
            assert security["privileged"] is True


def test_the_handler_sees_the_kubelet_directory_at_the_same_path() -> None:
    config = InstallConfig(kubelet_root="/srv/kubelet")
    handler = find(components(config), "DaemonSet", "virt-handler", config.namespace)
    [host] = [v for v in handler["spec"]["template"]["spec"]["volumes"] if "hostPath" in v]
    [mount] = [m for m in container(handler)["volumeMounts"] if m["name"] == host["name"]]
    assert host["hostPath"]["path"] == mount["mountPath"] == "/srv/kubelet"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(handler)["env"]}
    assert env["NODE_NAME"] == "spec.nodeName"


def test_virt_api_has_its_service_and_both_deployments_a_budget() -> None:
    objects = components(CONFIG)
    service = find(objects, "Service", "virt-api", CONFIG.namespace)
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]
    for name in ("virt-api", "virt-controller"):
        budget = find(objects, "PodDisruptionBudget", name, CONFIG.namespace)
        assert budget["spec"]["selector"] == find(objects, "Deployment", name, CONFIG.namespace)["spec"]["selector"]
    reader = find(objects, "RoleBinding", "podvirt:virt-api-auth-reader", "kube-system")
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"


# --- RBAC ----------------------------------------------------------------------------------------------


def test_names_match_what_virt_api_registers() -> None:
    assert MUTATING_WEBHOOK == registration.MUTATOR and VALIDATING_WEBHOOK == registration.VALIDATOR
    services = registration.api_services(registration.RegistrationSettings(namespace="kubevirt"), b"ca")
    assert sorted(API_SERVICES) == sorted(s["metadata"]["name"] for s in services)
    assert registration.LABELS[PART_OF_LABEL] == PART_OF


def test_the_components_hold_what_their_code_calls_and_not_more() -> None:
    cluster, namespaced = rules_of("virt-controller")
    assert can(cluster, "", "pods", "create") and can(cluster, "kubevirt.io", "virtualmachineinstances/status", "patch")
    assert can(namespaced, "coordination.k8s.io", "leases", "patch", "virt-controller")
    assert not can(cluster, "", "secrets", "get") and not can(cluster, "", "nodes", "patch")
    assert not can(cluster, "kubevirt.io", "virtualmachines", "delete")
    cluster, namespaced = rules_of("virt-api")
    assert can(cluster, "authorization.k8s.io", "subjectaccessreviews", "create")
    assert can(cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", MUTATING_WEBHOOK)
    assert not can(cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", "other")
    assert can(namespaced, "", "secrets", "update", "virt-api-certs") and not can(namespaced, "", "secrets", "get")
    assert not can(cluster + namespaced, "", "pods", "delete")
    cluster, namespaced = rules_of("virt-handler")
    assert namespaced == []
    assert can(cluster, "", "nodes", "patch") and can(cluster, "kubevirt.io", "virtualmachineinstances", "watch")
    assert not can(cluster, "", "secrets", "get") and not can(
        cluster, "kubevirt.io", "virtualmachineinstances", "delete"
    )


def test_the_operator_holds_every_permission_it_hands_out() -> None:
    """RBAC escalation prevention: creating a role or binding needs each of its rules at the same scope."""
    cluster, namespaced = operator_rules()
    for o in components(CONFIG):
        if o["kind"] == "ClusterRole":
            for r in o["rules"]:
                assert covers(cluster, r), (o["metadata"]["name"], r)
        elif o["kind"] == "Role":
            for r in o["rules"]:
                assert covers(cluster + namespaced, r), (o["metadata"]["name"], r)
    reader = rule([""], ["configmaps"], ["get", "list", "watch"], "the reader role", names=[AUTH_CONFIGMAP])
    assert covers(cluster, reader)


def test_the_operator_can_create_update_and_delete_every_object_it_installs() -> None:
    cluster, namespaced = operator_rules()
    for o in components(CONFIG):
        group, plural = PLURALS[o["kind"]]
        ns = o["metadata"].get("namespace")
        rules = cluster + (namespaced if ns == CONFIG.namespace else [])
        name = o["metadata"]["name"]
        assert can(rules, group, plural, "create"), (o["kind"], name)
        for verb in ("get", "patch", "update", "delete"):
            assert can(rules, group, plural, verb, name), (o["kind"], name, verb)
    assert can(cluster, "admissionregistration.k8s.io", "validatingwebhookconfigurations", "delete", VALIDATING_WEBHOOK)
    assert can(cluster, "apiregistration.k8s.io", "apiservices", "delete", API_SERVICES[0])
    assert not can(namespaced, "", "secrets", "get", "someone-elses")
    assert not can(cluster, "", "secrets", "get")


def test_users_roles_aggregate_into_admin_edit_view() -> None:
    objects = components(CONFIG)
    for level in ("admin", "edit", "view"):
        role = find(objects, "ClusterRole", f"kubevirt.io:{level}")
        assert role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{level}"] == "true"
    edit = find(objects, "ClusterRole", "kubevirt.io:edit")["rules"]
    view = find(objects, "ClusterRole", "kubevirt.io:view")["rules"]
    for sub in ("virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart"):
        assert can(edit, "subresources.kubevirt.io", sub, "update")
    for sub in ("virtualmachineinstances/pause", "virtualmachineinstances/unpause"):
        assert can(edit, "subresources.kubevirt.io", sub, "update")
    assert can(edit, "subresources.kubevirt.io", "virtualmachineinstances/console", "get")
    assert can(edit, "kubevirt.io", "virtualmachines", "create")
    assert can(view, "kubevirt.io", "virtualmachines", "list")
    assert not can(view, "subresources.kubevirt.io", "virtualmachineinstances/console", "get")
    assert not can(view, "kubevirt.io", "virtualmachines", "create")


def test_every_rule_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        rule([""], ["pods"], ["get"], "")
