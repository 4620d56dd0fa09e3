"""``version``: this virtctl's version and the server's (virt-api's ``version`` subresource); warns on a mismatch."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import click
import yaml

from virtctl import __version__
from virtctl.errors import SUBRESOURCE_GROUP, Request
from virtctl.framework import command, kube_client, say, warn
from virtctl.kube import SUBRESOURCE_API

_MACHINES = {"x86_64": "amd64", "aarch64": "arm64"}


def client_info() -> dict[str, str]:
    """The client's version in the shape of the server's (KubeVirt's version.Info)."""
    machine = platform.machine()
    return {
        "gitVersion": f"v{__version__}",
        "pythonVersion": platform.python_version(),
        "platform": f"{sys.platform}/{_MACHINES.get(machine, machine)}",
    }


def info_line(label: str, info: dict[str, Any]) -> str:
    """``Client Version: version.Info{GitVersion:"v0.1.0", ...}`` like KubeVirt, so old greps keep working."""
    fields = ", ".join(f'{key[:1].upper()}{key[1:]}:"{value}"' for key, value in info.items())
    return f"{label} Version: version.Info{{{fields}}}"


def differ(client: dict[str, Any], server: dict[str, Any]) -> bool:
    return str(client.get("gitVersion", "")).lstrip("v") != str(server.get("gitVersion", "")).lstrip("v")


@command(
    "version",
    short_help="Print the client and server version.",
    help="Print virtctl's version and, unless --client, the version of the cluster's virt-api. "
    "A warning on stderr says when they differ.",
    examples="""
# Both versions:
{prog} version

# Only this virtctl (no cluster needed), as JSON:
{prog} version --client -o json
""",
)
@click.option("-c", "--client", "client_only", is_flag=True, help="Only the client version; no cluster needed.")
@click.option("-o", "--output", type=click.Choice(["json", "yaml"]), help="Print as JSON or YAML.")
def version(ctx: click.Context, client_only: bool, output: str | None) -> None:
    client = client_info()
    server: dict[str, Any] | None = None
    if not client_only:
        request = Request("get", SUBRESOURCE_GROUP, "version", None, None, "read the version of", "virt-api")
        server = kube_client(ctx).request("GET", f"{SUBRESOURCE_API}/version", request) or {}
    if output:
        document: dict[str, Any] = {"clientVersion": client}
        if server is not None:
            document["serverVersion"] = server
        say(json.dumps(document, indent=2) if output == "json" else yaml.safe_dump(document, sort_keys=False).rstrip())
    else:
        say(info_line("Client", client))
        if server is not None:
            say(info_line("Server", server))
    if server is not None and differ(client, server):
        warn(
            f"virtctl {client['gitVersion']} and the server's virt-api {server.get('gitVersion', '(unknown)')} "
            "differ; some commands may not work as described"
        )


COMMANDS = [version]
