"""The service proxy's pure half: Services and EndpointSlices in, an nftables table definition out."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from devcluster.servicerules import (
    Endpoint,
    ServicePort,
    delete_script,
    replace_script,
    service_ports,
    table_definition,
    table_name,
)

pytestmark = pytest.mark.unit

CIDR = "10.96.0.0/16"


def service(name: str, cluster_ip: str | None = "10.96.1.1", ns: str = "ns", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}], **spec}
    if cluster_ip is not None:
        body.setdefault("clusterIP", cluster_ip)
        body.setdefault("clusterIPs", [cluster_ip])
    return {"metadata": {"namespace": ns, "name": name}, "spec": body}


def endpoint_slice(
    service_name: str, *endpoints: dict[str, Any], ports: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": extra.pop("ns", "ns"),
            "name": f"{service_name}-{len(endpoints)}",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": extra.pop("addressType", "IPv4"),
        "endpoints": list(endpoints),
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def ep(ip: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions} if conditions else {"addresses": [ip]}


def test_ready_endpoints_of_the_matching_port_are_used() -> None:
    slices = [endpoint_slice("web", ep("10.1.0.5", ready=True), ep("10.1.1.7"), ep("10.1.0.9", ready=False))]
    assert service_ports([service("web")], slices) == [
        ServicePort(
            "ns", "web", "http", "tcp", "10.96.1.1", 80, (Endpoint("10.1.0.5", 8080), Endpoint("10.1.1.7", 8080))
        )
    ]


def test_serving_terminating_endpoints_are_a_fallback_only() -> None:
    leaving = ep("10.1.0.6", ready=False, serving=True, terminating=True)
    only_leaving = service_ports([service("web")], [endpoint_slice("web", leaving)])
    assert only_leaving[0].endpoints == (Endpoint("10.1.0.6", 8080),)
    with_ready = service_ports([service("web")], [endpoint_slice("web", leaving, ep("10.1.0.7"))])
    assert with_ready[0].endpoints == (Endpoint("10.1.0.7", 8080),)


def test_ports_match_by_name_and_protocol_across_slices() -> None:
    svc = service(
        "multi",
        ports=[
            {"name": "web", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "sig", "port": 9, "protocol": "SCTP"},
        ],
    )
    slices = [
        endpoint_slice("multi", ep("10.1.0.5"), ports=[{"name": "web", "port": 8080, "protocol": "TCP"}]),
        endpoint_slice(
            "multi",
            ep("10.1.0.5"),
            ep("10.1.0.6"),
            ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "web", "port": 8080}],
        ),
    ]
    by_port = {p.port: p for p in service_ports([svc], slices)}
    assert set(by_port) == {80, 53}  # SCTP is not forwarded
    assert by_port[80].endpoints == (Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 8080))  # no duplicate
    assert by_port[53].protocol == "udp"
    assert by_port[53].endpoints == (Endpoint("10.1.0.5", 5353), Endpoint("10.1.0.6", 5353))


def test_services_the_proxy_leaves_alone() -> None:
    services = [
        service("ext", None, type="ExternalName", externalName="example.invalid"),
        service("headless", "None"),
        service("v6", "fd00::10"),
        service("other-ns-slice", "10.96.1.2"),
    ]
    slices = [
        endpoint_slice("headless", ep("10.1.0.5")),
        endpoint_slice("v6", ep("fd00::5"), addressType="IPv6"),
        endpoint_slice("other-ns-slice", ep("10.1.0.5"), ns="elsewhere"),
    ]
    ports = service_ports(services, slices)
    assert [(p.service, p.endpoints) for p in ports] == [("other-ns-slice", ())]


def test_a_node_port_service_gets_its_cluster_ip_part() -> None:
    svc = service("np", type="NodePort")
    svc["spec"]["ports"][0]["nodePort"] = 30080
    ports = service_ports([svc], [endpoint_slice("np", ep("10.1.0.5"))])
    assert [(p.cluster_ip, p.port) for p in ports] == [("10.96.1.1", 80)]


def test_the_table_dispatches_balances_and_translates() -> None:
    two = ServicePort(
        "ns", "web", "http", "tcp", "10.96.1.1", 80, (Endpoint("10.1.0.5", 8080), Endpoint("10.1.1.7", 8080))
    )
    one = ServicePort("ns", "dns", "", "udp", "10.96.1.2", 53, (Endpoint("10.1.0.5", 5353),))
    none = ServicePort("ns", "idle", "", "tcp", "10.96.1.3", 443, ())
    text = table_definition("pvt1234", CIDR, [two, one, none])
    assert text.startswith("table ip podvirt_svc_pvt1234 {")
    assert "10.96.1.1 . tcp . 80 : goto svc-ns/web/tcp/http" in text
    assert "10.96.1.2 . udp . 53 : goto svc-ns/dns/udp/53" in text
    assert (
        "numgen random mod 2 vmap { 0 : goto ep-ns/web/tcp/http__10.1.0.5/8080, "
        "1 : goto ep-ns/web/tcp/http__10.1.1.7/8080 }" in text
    )
    assert "\t\tgoto ep-ns/dns/udp/53__10.1.0.5/5353\n" in text
    assert "meta l4proto tcp dnat to 10.1.1.7:8080" in text
    assert "meta l4proto udp dnat to 10.1.0.5:5353" in text
    # No endpoints: refused, not translated; still a ClusterIP of the cluster.
    assert "elements = { 10.96.1.3 . tcp . 443 }" in text
    assert "svc-ns/idle" not in text
    assert "elements = { 10.96.1.1, 10.96.1.2, 10.96.1.3 }" in text
    # Pods enter on the bridge; the host's own connections pass the output hook; replies come back.
    assert 'iifname "pvt1234" jump services' in text
    assert "type nat hook output priority -100; policy accept;\n\t\tjump services" in text
    assert 'oifname "pvt1234" ct status dnat ct original ip daddr @cluster-ips masquerade' in text
    assert f"ip daddr {CIDR} reject" in text
    assert 'iifname "pvt1234" oifname != "pvt1234" reject' in text


def test_an_empty_cluster_gets_a_table_without_empty_element_lists() -> None:
    text = table_definition("pvbr0", CIDR, [])
    assert "elements" not in text
    assert "chain svc-" not in text
    assert text.count("{") == text.count("}")


def test_the_table_is_replaced_and_deleted_in_one_transaction_each() -> None:
    definition = table_definition("pvbr0", CIDR, [])
    assert delete_script("pvbr0") == "table ip podvirt_svc_pvbr0\ndelete table ip podvirt_svc_pvbr0\n"
    assert replace_script("pvbr0", definition) == delete_script("pvbr0") + definition


def test_a_bridge_name_nft_cannot_carry_is_refused() -> None:
    assert table_name("pvt0a1b2c3d") == "podvirt_svc_pvt0a1b2c3d"
    with pytest.raises(ValueError, match="table name"):
        table_name('br"; flush ruleset')


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft --check needs root and nft")
def test_nft_accepts_the_rendered_transaction() -> None:
    slices = [endpoint_slice("web", ep("10.1.0.5"), ep("10.1.1.7"))]
    services = [service("web"), service("idle", "10.96.1.9", ports=[{"port": 53, "protocol": "UDP"}])]
    script = replace_script("pvtcheck", table_definition("pvtcheck", CIDR, service_ports(services, slices)))
    proc = subprocess.run(["nft", "--check", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
