"""``ssh`` and ``scp``: the local OpenSSH client, tunnelled through ``virtctl port-forward --stdio``.

virtctl builds the ssh (or scp) command line and replaces itself with it, so ssh owns the terminal
and its exit status is the command's exit status. The host name ssh sees (and records in
known_hosts) is ``KIND.NAME.NAMESPACE``, e.g. ``vmi.myvmi.default``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.framework import command, kube_client, selection, warn
from virtctl.kube import Selection
from virtctl.targets import ScpLocation, SshTarget, Target, parse_scp_location, parse_ssh_target

FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)


def self_command(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """How to run this virtctl again from a shell (the ProxyCommand)."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    if os.path.basename(argv0) == "__main__.py":  # python -m virtctl
        return [executable or sys.executable, "-m", "virtctl"]
    if os.sep not in argv0:
        argv0 = shutil.which(argv0) or argv0
    return [os.path.abspath(argv0)]


@dataclass(frozen=True)
class Tunnel:
    """What every ssh/scp invocation needs: the target, the remote port and the cluster flags."""

    target: Target
    namespace: str
    port: int = 22
    selection: Selection = field(default_factory=Selection)
    virtctl: tuple[str, ...] = ("virtctl",)

    def proxy_command(self) -> str:
        argv = [*self.virtctl]
        if self.selection.kubeconfig:
            argv += ["--kubeconfig", os.path.abspath(os.path.expanduser(self.selection.kubeconfig))]
        if self.selection.context:
            argv += ["--context", self.selection.context]
        argv += ["port-forward", "--stdio=true", self.target.spec(self.namespace), str(self.port)]
        # ssh runs the ProxyCommand through a shell and expands %-tokens in it first.
        return shlex.join(argv).replace("%", "%%")

    def host(self, user: str | None) -> str:
        alias = self.target.host_alias(self.namespace)
        return f"{user}@{alias}" if user else alias


@dataclass(frozen=True)
class SshOptions:
    identity_file: str | None = None
    known_hosts: str | None = None
    local_options: tuple[str, ...] = ()


def _common(tunnel: Tunnel, options: SshOptions) -> list[str]:
    argv = ["-o", f"ProxyCommand={tunnel.proxy_command()}"]
    if options.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={options.known_hosts}"]
    if options.identity_file:
        argv += ["-i", options.identity_file]
    for option in options.local_options:
        argv += shlex.split(option)
    return argv


def ssh_argv(
    tunnel: Tunnel, user: str | None, options: SshOptions, command: str | None, extra: Sequence[str] = ()
) -> list[str]:
    """``ssh -o ProxyCommand=... [options] [user@]kind.name.namespace [command]``."""
    argv = ["ssh", *_common(tunnel, options), tunnel.host(user)]
    if command:
        argv.append(command)
    return argv + list(extra)


def scp_argv(
    tunnel: Tunnel,
    user: str | None,
    options: SshOptions,
    source: ScpLocation,
    destination: ScpLocation,
    *,
    recursive: bool = False,
    preserve: bool = False,
) -> list[str]:
    """``scp -o ProxyCommand=... [-r] [-p] [options] SRC DST`` with the remote side as ``[user@]host:path``."""
    argv = ["scp", *_common(tunnel, options)]
    if recursive:
        argv.append("-r")
    if preserve:
        argv.append("-p")
    for location in (source, destination):
        argv.append(f"{tunnel.host(user)}:{location.path}" if location.remote else location.path)
    return argv


def _exec(argv: list[str]) -> None:
    program = shutil.which(argv[0])
    if program is None:
        raise VirtctlError(f"{argv[0]} is not installed (or not on PATH); install the OpenSSH client", ExitCode.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, argv)  # noqa: S606 - ssh must own the terminal; its exit status is ours


def ssh_options(f: FC) -> FC:
    decorators = [
        click.option(
            "-i", "--identity-file", metavar="PATH", help="Private key for the guest (default: ssh's own choice)."
        ),
        click.option(
            "-l", "--username", metavar="USER", help="User in the guest (default: USER@ in the target, else ssh's)."
        ),
        click.option("-p", "--port", type=click.IntRange(1, 65535), default=22, show_default=True, help="SSH port."),
        click.option("--known-hosts", metavar="PATH", help="known_hosts file to use (default: ssh's own)."),
        click.option(
            "-t",
            "--local-ssh-opts",
            "local_ssh_opts",
            multiple=True,
            metavar="OPT",
            help="Extra option for the local ssh/scp, e.g. -t '-o StrictHostKeyChecking=no' (repeatable).",
        ),
        click.option(
            "--local-ssh/--no-local-ssh",
            default=True,
            hidden=True,
            help="Use the local ssh client (podvirt has no built-in one).",
        ),
    ]
    for decorate in reversed(decorators):
        f = decorate(f)
    return f


def _tunnel(ctx: click.Context, target: SshTarget, port: int) -> Tunnel:
    if target.target.legacy_syntax:
        warn("the KIND/NAME.NAMESPACE form is deprecated; write KIND/NAME/NAMESPACE")
    if not ctx.params.get("local_ssh", True):
        raise click.UsageError("podvirt's virtctl has no built-in SSH client; it always uses the local ssh")
    namespace = target.target.namespace or kube_client(ctx).namespace
    return Tunnel(target.target, namespace, port, selection(ctx), tuple(self_command()))


@command(
    "ssh",
    short_help="Open an SSH connection to a virtual machine (instance).",
    help="Run the local ssh client against a VM or VMI through the Kubernetes API (no Service needed). "
    "TARGET is [USER@]vm/NAME or [USER@]vmi/NAME, optionally followed by /NAMESPACE. Arguments after "
    "'--' go to ssh. The exit status is ssh's.",
    examples="""
# Log into the VMI 'myvmi' as fedora:
{prog} ssh fedora@vmi/myvmi

# Run a command on the VM 'myvm' in namespace 'dev', with a given key:
{prog} ssh -i ~/.ssh/id_ed25519 -c 'uname -a' fedora@vm/myvm/dev

# Pass options to ssh:
{prog} ssh -t '-o StrictHostKeyChecking=no' fedora@vm/myvm
""",
)
@click.argument("target", metavar="[USER@]TARGET")
@click.argument("ssh_args", nargs=-1, type=click.UNPROCESSED)
@click.option("-c", "--command", "remote_command", metavar="CMD", help="Command to run in the guest.")
@ssh_options
def ssh(
    ctx: click.Context,
    target: str,
    ssh_args: tuple[str, ...],
    remote_command: str | None,
    identity_file: str | None,
    username: str | None,
    port: int,
    known_hosts: str | None,
    local_ssh_opts: tuple[str, ...],
    local_ssh: bool,
) -> None:
    parsed = parse_ssh_target(target)
    tunnel = _tunnel(ctx, parsed, port)
    options = SshOptions(identity_file, known_hosts, local_ssh_opts)
    _exec(ssh_argv(tunnel, parsed.user or username, options, remote_command, ssh_args))


@command(
    "scp",
    short_help="Copy files to or from a virtual machine (instance).",
    help="Run the local scp client through the Kubernetes API. One of SOURCE and DESTINATION is "
    "[USER@]TARGET:PATH, where TARGET is vm/NAME or vmi/NAME, optionally followed by /NAMESPACE. "
    "The exit status is scp's.",
    examples="""
# Copy a local file into the VMI 'myvmi':
{prog} scp ./notes.txt fedora@vmi/myvmi:/tmp/

# Copy a directory out of the VM 'myvm' in namespace 'dev':
{prog} scp -r fedora@vm/myvm/dev:/etc/cloud ./cloud
""",
)
@click.argument("source")
@click.argument("destination")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively.")
@click.option("--preserve", is_flag=True, help="Keep modification times and modes.")
@ssh_options
def scp(
    ctx: click.Context,
    source: str,
    destination: str,
    recursive: bool,
    preserve: bool,
    identity_file: str | None,
    username: str | None,
    port: int,
    known_hosts: str | None,
    local_ssh_opts: tuple[str, ...],
    local_ssh: bool,
) -> None:
    src, dst = parse_scp_location(source), parse_scp_location(destination)
    remotes = [loc.remote for loc in (src, dst) if loc.remote is not None]
    if len(remotes) != 1:
        raise click.UsageError("exactly one of SOURCE and DESTINATION must be remote: [USER@]vmi/NAME:PATH")
    tunnel = _tunnel(ctx, remotes[0], port)
    options = SshOptions(identity_file, known_hosts, local_ssh_opts)
    argv = scp_argv(tunnel, remotes[0].user or username, options, src, dst, recursive=recursive, preserve=preserve)
    _exec(argv)


COMMANDS = [ssh, scp]
