"""``expose`` selects the launcher pod the way KubeVirt's virtctl does."""

from __future__ import annotations

from typing import Any

import pytest

from virtctl.commands.expose import build_service, pod_network_ports, selector_and_spec
from virtctl.errors import VirtctlError

pytestmark = pytest.mark.unit

VMI_SPEC: dict[str, Any] = {
    "domain": {
        "devices": {
            "interfaces": [
                {"name": "default", "masquerade": {}, "ports": [{"port": 22}, {"port": 53, "protocol": "UDP"}]}
            ]
        }
    },
    "networks": [{"name": "default", "pod": {}}],
}


def test_vmi_selector_drops_the_node_label() -> None:
    vmi = {"metadata": {"labels": {"app": "web", "kubevirt.io/nodeName": "node-1"}}, "spec": VMI_SPEC}
    assert selector_and_spec("vmi", vmi) == ({"app": "web"}, VMI_SPEC)


def test_vm_selector_is_the_template_labels() -> None:
    vm = {
        "metadata": {"labels": {"not": "this"}},
        "spec": {"template": {"metadata": {"labels": {"app": "db"}}, "spec": VMI_SPEC}},
    }
    assert selector_and_spec("vm", vm) == ({"app": "db"}, VMI_SPEC)


def test_replica_set_selector_is_match_labels_only() -> None:
    rs = {"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": VMI_SPEC}}}
    assert selector_and_spec("vmirs", rs)[0] == {"app": "x"}
    with pytest.raises(VirtctlError, match="matchExpressions"):
        selector_and_spec("vmirs", {"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}})


def test_declared_pod_network_ports_are_reused() -> None:
    assert pod_network_ports(VMI_SPEC) == [
        {"name": "port-1", "protocol": "TCP", "port": 22},
        {"name": "port-2", "protocol": "UDP", "port": 53},
    ]
    assert pod_network_ports({"domain": {"devices": {}}}) == []


def test_service_with_port_and_named_or_numbered_target_port() -> None:
    service = build_service(
        name="ssh",
        namespace="ns",
        selector={"app": "web"},
        declared_ports=[],
        port=22,
        target_port="2222",
        service_type="NodePort",
    )
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ssh", "namespace": "ns"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [{"protocol": "TCP", "port": 22, "targetPort": 2222}],
        },
    }
    named = build_service(name="s", namespace="ns", selector={"a": "b"}, declared_ports=[], port=80, target_port="http")
    assert named["spec"]["ports"][0]["targetPort"] == "http"


def test_no_labels_or_no_ports_are_errors_that_say_what_to_do() -> None:
    with pytest.raises(VirtctlError, match=r"spec\.template\.metadata\.labels"):
        build_service(
            name="s", namespace="ns", selector={}, declared_ports=[], port=80, target_port=None, described="VM"
        )
    with pytest.raises(VirtctlError, match="give --port"):
        build_service(name="s", namespace="ns", selector={"a": "b"}, declared_ports=[], port=None, target_port=None)
