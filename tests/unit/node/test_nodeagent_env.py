"""Container environments: $(VAR) expansion, fieldRef, ConfigMap/Secret references, envFrom."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from devcluster.node.env import (
    ContainerConfigError,
    command_line,
    container_env,
    expand,
    field_value,
    referenced_objects,
    resource_value,
    service_env,
)

pytestmark = pytest.mark.unit

POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"b": "2", "a": "1"},
        "annotations": {"x": "y"},
    },
    "spec": {"nodeName": "node-1", "serviceAccountName": "sa"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "one-$(B)"),
        ("$$(A)", "$(A)"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("trailing $", "trailing $"),
        ("$(A)$(A)", "oneone"),
    ],
)
def test_expansion_matches_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "one"}) == expected


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "p"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "u-1"),
        ("spec.nodeName", "node-1"),
        ("spec.serviceAccountName", "sa"),
        ("status.podIP", "10.0.0.5"),
        ("status.hostIP", "10.0.0.1"),
        ("metadata.labels['a']", "1"),
        ("metadata.labels", 'a="1"\nb="2"'),
        ("metadata.annotations['x']", "y"),
    ],
)
def test_field_refs(path: str, value: str) -> None:
    assert field_value(POD, path, "10.0.0.5", "10.0.0.1") == value


def test_unknown_field_ref_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match=r"spec\.bogus"):
        field_value(POD, "spec.bogus", None, "")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_env_from_every_source_in_kubelet_order() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hi $(NAME) on $(KUBERNETES_SERVICE_HOST)"},
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "color"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pass"}}},
            {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}},
        ],
    }
    env = container_env(
        POD,
        container,
        pod_ip="10.0.0.5",
        host_ip="10.0.0.1",
        base=service_env("127.0.0.1", 6443),
        configmaps={"cm": {"data": {"color": "blue", "bad key": "x"}}, "absent": None},
        secrets={"sec": {"data": {"pass": b64("s3cret")}}},
        allocatable={},
    )
    assert env["GREETING"] == "hi p on 127.0.0.1"
    assert env["COLOR"] == env["CM_color"] == "blue"
    assert env["PASS"] == env["pass"] == "s3cret"
    assert "CM_bad key" not in env and "MAYBE" not in env
    assert env["KUBERNETES_PORT_6443_TCP_ADDR"] == "127.0.0.1"
    assert command_line({"command": ["echo", "$(COLOR)"], "args": ["$$(COLOR)"]}, env) == ["echo", "blue", "$(COLOR)"]
    assert referenced_objects(container) == ({"cm", "absent"}, {"sec"})


@pytest.mark.parametrize(
    ("configmaps", "message"),
    [({}, 'configmap "cm" not found'), ({"cm": {"data": {}}}, "couldn't find key color in ConfigMap ns/cm")],
)
def test_missing_references_are_config_errors(configmaps: dict[str, Any], message: str) -> None:
    container = {"name": "c", "env": [{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "color"}}}]}
    with pytest.raises(ContainerConfigError, match=message):
        container_env(
            POD, container, pod_ip=None, host_ip="", base={}, configmaps=configmaps, secrets={}, allocatable={}
        )


def test_resource_field_refs_use_divisors_and_default_to_allocatable() -> None:
    container = {"resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}}}
    assert resource_value(container, {"resource": "limits.memory", "divisor": "1Mi"}, {}) == "1024"
    assert resource_value(container, {"resource": "requests.cpu", "divisor": "1m"}, {}) == "250"
    assert resource_value(container, {"resource": "limits.cpu"}, {"cpu": "4"}) == "4"
