"""``expose``: a Service for a VM, VMI or VMI replica set, with the selector KubeVirt's virtctl builds.

The selector is the labels the VMI's launcher pod carries: a VMI's own labels (minus
``kubevirt.io/nodeName``, which moves with migrations), a VM's template labels, a replica set's
``selector.matchLabels`` (a replica set selecting with expressions cannot be exposed). Without
``--port`` the ports declared on the pod-network interface are reused.
"""

from __future__ import annotations

from typing import Any

import click

from virtctl.errors import KUBEVIRT_GROUP, Request, VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.framework import command, complete_names, kube_client, say
from virtctl.kube import kubevirt_path

KINDS = {
    "vm": ("virtualmachines", "VirtualMachine"),
    "vms": ("virtualmachines", "VirtualMachine"),
    "virtualmachine": ("virtualmachines", "VirtualMachine"),
    "virtualmachines": ("virtualmachines", "VirtualMachine"),
    "vmi": ("virtualmachineinstances", "VirtualMachineInstance"),
    "vmis": ("virtualmachineinstances", "VirtualMachineInstance"),
    "virtualmachineinstance": ("virtualmachineinstances", "VirtualMachineInstance"),
    "virtualmachineinstances": ("virtualmachineinstances", "VirtualMachineInstance"),
    "vmirs": ("virtualmachineinstancereplicasets", "VirtualMachineInstanceReplicaSet"),
    "vmirss": ("virtualmachineinstancereplicasets", "VirtualMachineInstanceReplicaSet"),
    "virtualmachineinstancereplicaset": ("virtualmachineinstancereplicasets", "VirtualMachineInstanceReplicaSet"),
    "virtualmachineinstancereplicasets": ("virtualmachineinstancereplicasets", "VirtualMachineInstanceReplicaSet"),
}
SERVICE_TYPES = ["ClusterIP", "NodePort", "LoadBalancer"]
NODE_NAME_LABEL = "kubevirt.io/nodeName"


def _usage(message: str) -> VirtctlError:
    return VirtctlError(message, ExitCode.USAGE)


def selector_and_spec(kind: str, obj: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The Service selector for ``obj`` and the VMI spec whose interfaces declare its ports."""
    plural = KINDS[kind][0]
    spec = obj.get("spec") or {}
    if plural == "virtualmachineinstances":
        labels = dict(obj.get("metadata", {}).get("labels") or {})
        labels.pop(NODE_NAME_LABEL, None)
        return labels, spec
    template = spec.get("template") or {}
    if plural == "virtualmachines":
        return dict((template.get("metadata") or {}).get("labels") or {}), template.get("spec") or {}
    selector = spec.get("selector") or {}
    if selector.get("matchExpressions"):
        raise VirtctlError(
            "cannot expose a VirtualMachineInstanceReplicaSet whose selector uses matchExpressions: "
            "a Service selects by labels only",
            ExitCode.ERROR,
        )
    return dict(selector.get("matchLabels") or {}), template.get("spec") or {}


def pod_network_ports(vmi_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Service ports for the ports declared on the interface attached to the pod network."""
    pod_network = next((n.get("name") for n in vmi_spec.get("networks") or [] if "pod" in n), None)
    if pod_network is None:
        return []
    interfaces = (vmi_spec.get("domain") or {}).get("devices", {}).get("interfaces") or []
    for interface in interfaces:
        if interface.get("name") == pod_network:
            return [
                {"name": f"port-{i}", "protocol": port.get("protocol") or "TCP", "port": port["port"]}
                for i, port in enumerate(interface.get("ports") or [], start=1)
            ]
    return []


def build_service(
    *,
    name: str,
    namespace: str,
    selector: dict[str, str],
    declared_ports: list[dict[str, Any]],
    port: int | None,
    target_port: str | None,
    protocol: str = "TCP",
    port_name: str | None = None,
    service_type: str = "ClusterIP",
    cluster_ip: str | None = None,
    external_ip: str | None = None,
    described: str = "",
) -> dict[str, Any]:
    """The Service to create (pure)."""
    if not selector:
        raise VirtctlError(
            f"{described} has no labels to select its pod with; add labels to it "
            "(for a VM: spec.template.metadata.labels) and expose it again",
            ExitCode.ERROR,
        )
    if port is not None:
        entry: dict[str, Any] = {"protocol": protocol, "port": port}
        if port_name:
            entry["name"] = port_name
        if target_port:
            entry["targetPort"] = int(target_port) if target_port.isdigit() else target_port
        ports = [entry]
    elif declared_ports:
        ports = declared_ports
    else:
        raise _usage(f"{described} declares no ports on its pod-network interface: give --port")
    spec: dict[str, Any] = {"type": service_type, "selector": selector, "ports": ports}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if external_ip:
        spec["externalIPs"] = [external_ip]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _complete_exposable(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    plural = KINDS.get(str(ctx.params.get("kind") or "").lower(), ("virtualmachines", ""))[0]
    return complete_names(ctx, f"/apis/kubevirt.io/v1/namespaces/{{ns}}/{plural}", incomplete)


@command(
    "expose",
    short_help="Expose a VM, VMI or VMI replica set as a Service.",
    help="Create a Service that selects the pod of a VM, VMI or VMI replica set (KIND: vm, vmi, vmirs), "
    "on --port, or on the ports its pod-network interface declares.",
    examples="""
# Expose SSH of the VM 'myvm' on every node (NodePort):
{prog} expose vm myvm --name=myvm-ssh --port=22 --type=NodePort

# Expose port 8080 of a replica set's VMIs as port 80:
{prog} expose vmirs myvmirs --name=web --port=80 --target-port=8080
""",
)
@click.argument("kind", metavar="vm|vmi|vmirs", type=click.Choice(sorted(KINDS), case_sensitive=False))
@click.argument("object_name", metavar="NAME", shell_complete=_complete_exposable)
@click.option("--name", "service_name", required=True, help="Name of the Service to create.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port the Service serves on.")
@click.option("--target-port", metavar="PORT|NAME", help="Port in the guest to send traffic to (default: --port).")
@click.option("--type", "service_type", type=click.Choice(SERVICE_TYPES), default="ClusterIP", show_default=True)
@click.option("--protocol", type=click.Choice(["TCP", "UDP", "SCTP"]), default="TCP", show_default=True)
@click.option("--port-name", help="Name of the Service port.")
@click.option("--cluster-ip", help="Cluster IP to ask for ('None': a headless Service).")
@click.option("--external-ip", help="Additional external IP the Service accepts traffic on.")
def expose(
    ctx: click.Context,
    kind: str,
    object_name: str,
    service_name: str,
    port: int | None,
    target_port: str | None,
    service_type: str,
    protocol: str,
    port_name: str | None,
    cluster_ip: str | None,
    external_ip: str | None,
) -> None:
    kind = kind.lower()
    client = kube_client(ctx)
    ns = client.namespace
    plural, kind_name = KINDS[kind]
    reading = Request("get", KUBEVIRT_GROUP, plural, ns, object_name, "read", kind_name)
    obj = client.request("GET", kubevirt_path(plural, ns, object_name), reading) or {}
    selector, vmi_spec = selector_and_spec(kind, obj)
    service = build_service(
        name=service_name,
        namespace=ns,
        selector=selector,
        declared_ports=pod_network_ports(vmi_spec),
        port=port,
        target_port=target_port,
        protocol=protocol,
        port_name=port_name,
        service_type=service_type,
        cluster_ip=cluster_ip,
        external_ip=external_ip,
        described=f"{kind_name} {ns}/{object_name}",
    )
    creating = Request("create", "", "services", ns, service_name, "create", "Service")
    client.request("POST", f"/api/v1/namespaces/{ns}/services", creating, body=service)
    say(f"Service {service_name} successfully exposed for {kind} {object_name}")


COMMANDS = [expose]
