"""``port-forward``: TCP to a port of a VMI through the API server (``portforward`` websocket subresource).

Each local connection gets its own websocket to
``/apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachineinstances/NAME/portforward/PORT/tcp``
(subprotocol ``plain.kubevirt.io``, raw bytes both ways). ``--stdio`` joins one such stream to
stdin/stdout, which makes virtctl an ssh ``ProxyCommand``. A ``vm/NAME`` target uses the VMI of the
same name (a VM's VMI is always named after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys

import click

from virtctl.errors import KUBEVIRT_GROUP, ApiError, Request, VirtctlError, is_missing_api
from virtctl.exitcodes import ExitCode
from virtctl.framework import command, kube_client, note, say, warn
from virtctl.kube import KubeClient, kubevirt_path
from virtctl.streams import pump_fds, pump_socket
from virtctl.subresources import Operation, port_forward
from virtctl.targets import ForwardedPort, Target, parse_port, parse_target


def check_running(client: KubeClient, target: Target, namespace: str) -> None:
    """Fail early and clearly when the VMI is missing or not running.

    Someone allowed to forward ports may not be allowed to read VMIs: then skip the check and let
    the stream itself report.
    """
    vmi_request = Request(
        "get", KUBEVIRT_GROUP, "virtualmachineinstances", namespace, target.name, "read", "VirtualMachineInstance"
    )
    try:
        vmi = client.raw_request("GET", kubevirt_path("virtualmachineinstances", namespace, target.name))
    except ApiError as e:
        if e.code == 403:
            return
        if e.code == 404 and target.kind == "vm" and not is_missing_api(e):
            vm_request = Request(
                "get", KUBEVIRT_GROUP, "virtualmachines", namespace, target.name, "read", "VirtualMachine"
            )
            client.request("GET", kubevirt_path("virtualmachines", namespace, target.name), vm_request)
            raise VirtctlError(
                f"VirtualMachine {namespace}/{target.name} is not running (it has no VirtualMachineInstance)",
                ExitCode.CONFLICT,
            ) from None
        raise client.explain(e, vmi_request) from None
    phase = (vmi or {}).get("status", {}).get("phase")
    if phase != "Running":
        raise VirtctlError(
            f"VirtualMachineInstance {namespace}/{target.name} is not running (phase {phase or 'unknown'})",
            ExitCode.CONFLICT,
        )


async def forward_stdio(client: KubeClient, name: str, namespace: str, port: ForwardedPort) -> int:
    operation = port_forward(port.remote, port.protocol)
    try:
        async with client.websocket(operation.path(namespace, name)) as ws:
            end = await pump_fds(ws, sys.stdin.fileno(), sys.stdout.fileno(), linger=True)
    except ApiError as e:
        raise client.explain(e, operation.request(namespace, name)) from None
    if end.why == "lost":
        raise VirtctlError(f"lost the forwarded connection to port {port.remote}: {end.detail}", ExitCode.ERROR)
    return int(ExitCode.OK)


async def forward_tcp(client: KubeClient, name: str, namespace: str, ports: list[ForwardedPort], address: str) -> None:
    servers = []
    for port in ports:
        handler = functools.partial(_forward_one, client, name, namespace, port_forward(port.remote, port.protocol))
        server = await asyncio.start_server(handler, address, port.local)
        servers.append(server)
        bound = server.sockets[0].getsockname()[1]
        say(f"Forwarding from {address}:{bound} -> {port.remote}")
    sys.stdout.flush()
    try:
        await asyncio.gather(*(server.serve_forever() for server in servers))
    finally:
        for server in servers:
            server.close()


async def _forward_one(
    client: KubeClient,
    name: str,
    namespace: str,
    operation: Operation,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        async with client.websocket(operation.path(namespace, name)) as ws:
            end = await pump_socket(ws, reader, writer)
        if end.why == "lost":
            note(f"the forwarded connection to {namespace}/{name} {operation.subresource} ended: {end.detail}")
    except ApiError as e:
        note(f"error: {client.explain(e, operation.request(namespace, name)).message}")
    except VirtctlError as e:
        note(f"error: {e.message}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@command(
    "port-forward",
    short_help="Forward local ports to a virtual machine (instance).",
    help="Forward local TCP ports to ports of a VM or VMI, through the Kubernetes API server. TARGET is "
    "vm/NAME or vmi/NAME, optionally followed by /NAMESPACE. Each PORT is LOCAL, LOCAL:REMOTE or :REMOTE "
    "(any free local port). Usage can be restricted with RBAC on virtualmachineinstances/portforward.",
    examples="""
# Forward local port 8080 to port 8080 of the VMI 'myvmi':
{prog} port-forward vmi/myvmi 8080

# Forward local port 2222 to port 22 of the VM 'myvm' in namespace 'dev':
{prog} port-forward vm/myvm/dev 2222:22

# As an ssh ProxyCommand (see also '{prog} ssh'):
ssh -o 'ProxyCommand={prog} port-forward --stdio=true vmi/myvmi/default 22' fedora@vmi.myvmi.default
""",
)
@click.argument("target", metavar="TARGET")
@click.argument("ports", metavar="PORT...", nargs=-1, required=True)
@click.option("--stdio", is_flag=True, help="Join one forwarded port to stdin/stdout (ssh ProxyCommand).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Local address to listen on.")
def port_forward_command(ctx: click.Context, target: str, ports: tuple[str, ...], stdio: bool, address: str) -> int:
    client = kube_client(ctx)
    parsed = parse_target(target)
    if parsed.legacy_syntax:
        warn(f"{target!r} uses the old KIND/NAME.NAMESPACE form; write {parsed.kind}/{parsed.name}/{parsed.namespace}")
    namespace = parsed.in_namespace(client.namespace)
    forwarded = [parse_port(p) for p in ports]
    check_running(client, parsed, namespace)
    if stdio:
        if len(forwarded) != 1:
            raise click.UsageError("--stdio forwards exactly one port")
        return asyncio.run(forward_stdio(client, parsed.name, namespace, forwarded[0]))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forward_tcp(client, parsed.name, namespace, forwarded, address))
    return int(ExitCode.OK)


COMMANDS = [port_forward_command]
