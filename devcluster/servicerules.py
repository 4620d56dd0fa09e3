"""Services and EndpointSlices in, one nftables table definition out: the pure half of the service proxy.

Nothing here touches the kernel or the apiserver; :mod:`devcluster.serviceproxy` feeds these
functions what it watched and hands their text to ``nft -f``. The table has the shape of
kube-proxy's nftables mode, smaller:

- ``service-ports``: a verdict map ``ClusterIP . protocol . port`` -> ``goto svc-<ns>/<name>/<proto>/<port>``,
  consulted from the nat ``prerouting`` hook for traffic that enters on the cluster's bridge (pods)
  and from the nat ``output`` hook for traffic the host makes (the kube-apiserver calling webhooks
  and aggregated APIs, tests, ``curl``);
- one ``svc-`` chain per Service port: ``numgen random mod N vmap`` over its endpoints (plain
  ``goto`` for one endpoint); one ``ep-`` chain per endpoint: ``dnat to IP:PORT``;
- nat ``postrouting``: every connection DNATed to a ClusterIP's endpoint that leaves on the bridge
  is masqueraded to the bridge's address, so replies always come back through the host (the
  hairpin case, a pod reaching itself through its Service, needs that: a pod drops packets from
  its own address), whether or not bridged traffic passes the host's netfilter hooks;
- filter ``output``/``forward``: a Service port without endpoints is rejected (ICMP port
  unreachable: ``connection refused`` at once, as kube-proxy does), anything else in the service
  CIDR that no proxy translated is rejected, packets routed in from the bridge may only go back
  out on it (nothing leaves the machine), and ICMP redirects onto the bridge are dropped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]

#: The label that ties an EndpointSlice to its Service (set by the controller, or by hand).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: Protocols the proxy forwards; SCTP Service ports are ignored.
PROTOCOLS = ("TCP", "UDP")

_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service's ClusterIP, with the endpoints traffic to it may go to."""

    namespace: str
    service: str
    port_name: str
    protocol: str  # "tcp" or "udp", as nft spells it
    cluster_ip: str
    port: int
    endpoints: tuple[Endpoint, ...]

    @property
    def key(self) -> str:
        """Namespace, name, protocol and port name (or number): unique per Service port."""
        return f"{self.namespace}/{self.service}/{self.protocol}/{self.port_name or self.port}"

    @property
    def chain(self) -> str:
        return f"svc-{self.key}"

    def endpoint_chain(self, endpoint: Endpoint) -> str:
        return f"ep-{self.key}__{endpoint.ip}/{endpoint.port}"


def table_name(bridge: str) -> str:
    """The nftables table (family ``ip``) of the cluster whose pods sit on ``bridge``."""
    if not _IDENTIFIER.fullmatch(bridge):
        raise ValueError(f"bridge name {bridge!r} cannot be part of an nftables table name")
    return f"podvirt_svc_{bridge}"


def _ready_endpoints(slices: Iterable[Obj]) -> dict[tuple[str, str, str, str], set[Endpoint]]:
    """(namespace, service, port name, protocol) -> endpoints, from the slices' IPv4 endpoints.

    Ready endpoints (a missing ``ready`` condition counts as ready, as the API says); when a port
    has none, its serving endpoints that are terminating, as kube-proxy falls back to them.
    """
    ready: dict[tuple[str, str, str, str], set[Endpoint]] = {}
    terminating: dict[tuple[str, str, str, str], set[Endpoint]] = {}
    for eps in slices:
        meta = eps.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service or eps.get("addressType") != "IPv4":
            continue
        for endpoint in eps.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready", True) is not False:
                target = ready
            elif conditions.get("serving") and conditions.get("terminating"):
                target = terminating
            else:
                continue
            for port in eps.get("ports") or []:
                if port.get("port") is None:
                    continue
                key = (meta.get("namespace", ""), service, port.get("name") or "", port.get("protocol") or "TCP")
                target.setdefault(key, set()).add(Endpoint(addresses[0], int(port["port"])))
    for key, endpoints in terminating.items():
        if not ready.get(key):
            ready[key] = endpoints
    return ready


def _ipv4_cluster_ips(spec: Obj) -> list[str]:
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    found = []
    for ip in ips:
        try:
            if ipaddress.ip_address(ip).version == 4:
                found.append(str(ip))
        except ValueError:
            continue  # "None": a headless Service
    return found


def service_ports(services: Iterable[Obj], slices: Iterable[Obj]) -> list[ServicePort]:
    """Every TCP/UDP port of every Service with an IPv4 ClusterIP, with its endpoints, in a stable order.

    ExternalName and headless Services are left alone; NodePort and LoadBalancer Services get
    their ClusterIP part only. Endpoints come from the EndpointSlices labelled with the Service's
    name (the controller's, or ones written by hand for a Service without selector), matched by
    port name and protocol as kube-proxy matches them.
    """
    endpoints = _ready_endpoints(slices)
    ports = []
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        for cluster_ip in _ipv4_cluster_ips(spec):
            for port in spec.get("ports") or []:
                protocol = port.get("protocol") or "TCP"
                if protocol not in PROTOCOLS:
                    continue
                port_name = port.get("name") or ""
                targets = endpoints.get((namespace, name, port_name, protocol), set())
                ports.append(
                    ServicePort(
                        namespace,
                        name,
                        port_name,
                        protocol.lower(),
                        cluster_ip,
                        int(port["port"]),
                        tuple(sorted(targets)),
                    )
                )
    return sorted(ports, key=lambda p: (p.namespace, p.service, p.protocol, p.port, p.cluster_ip))


def _elements(items: Iterable[str]) -> list[str]:
    listed = sorted(set(items))
    return [f"\t\telements = {{ {', '.join(listed)} }}"] if listed else []


def _service_chains(port: ServicePort) -> list[str]:
    targets = [port.endpoint_chain(ep) for ep in port.endpoints]
    if len(targets) == 1:
        pick = f"goto {targets[0]}"
    else:
        pick = (
            f"numgen random mod {len(targets)} vmap {{ {', '.join(f'{i} : goto {t}' for i, t in enumerate(targets))} }}"
        )
    lines = ["", f"\tchain {port.chain} {{", f"\t\t{pick}", "\t}"]
    for endpoint, chain in zip(port.endpoints, targets, strict=True):
        lines += [
            "",
            f"\tchain {chain} {{",
            f"\t\tmeta l4proto {port.protocol} dnat to {endpoint.ip}:{endpoint.port}",
            "\t}",
        ]
    return lines


def table_definition(bridge: str, service_cidr: str, ports: Iterable[ServicePort]) -> str:
    """The whole table, in ``nft -f`` syntax (see the module docstring for what each part does)."""
    table = table_name(bridge)
    cidr = ipaddress.ip_network(service_cidr)
    ports = list(ports)
    served = [p for p in ports if p.endpoints]
    br = f'"{bridge}"'
    lines = [
        f"table ip {table} {{",
        f'\tcomment "devcluster service proxy for the pods on bridge {bridge}"',
        "\tset cluster-ips {",
        "\t\ttype ipv4_addr",
        *_elements(p.cluster_ip for p in ports),
        "\t}",
        "",
        "\tset no-endpoints {",
        "\t\ttype ipv4_addr . inet_proto . inet_service",
        *_elements(f"{p.cluster_ip} . {p.protocol} . {p.port}" for p in ports if not p.endpoints),
        "\t}",
        "",
        "\tmap service-ports {",
        "\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
        *_elements(f"{p.cluster_ip} . {p.protocol} . {p.port} : goto {p.chain}" for p in served),
        "\t}",
        "",
        "\tchain services {",
        "\t\tip daddr . meta l4proto . th dport vmap @service-ports",
        "\t}",
        "",
        "\tchain nat-prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        f"\t\tiifname {br} jump services",
        "\t}",
        "",
        "\tchain nat-output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tjump services",
        "\t}",
        "",
        "\tchain nat-postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\toifname {br} ct status dnat ct original ip daddr @cluster-ips masquerade",
        "\t}",
        "",
        "\tchain filter-output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        f"\t\toifname {br} icmp type redirect drop",
        "\t\tip daddr . meta l4proto . th dport @no-endpoints reject",
        f"\t\tip daddr {cidr} reject",
        "\t}",
        "",
        "\tchain filter-forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\tiifname {br} ip daddr . meta l4proto . th dport @no-endpoints reject",
        f"\t\tiifname {br} ip daddr {cidr} reject",
        f"\t\tiifname {br} oifname != {br} reject with icmp type admin-prohibited",
        "\t}",
    ]
    for port in served:
        lines += _service_chains(port)
    lines.append("}")
    return "\n".join(lines) + "\n"


def replace_script(bridge: str, definition: str) -> str:
    """One ``nft -f`` transaction that swaps the table for ``definition`` atomically (creating it if absent)."""
    return delete_script(bridge) + definition


def delete_script(bridge: str) -> str:
    """One ``nft -f`` transaction that deletes the table, and succeeds when it is already gone."""
    table = table_name(bridge)
    return f"table ip {table}\ndelete table ip {table}\n"
