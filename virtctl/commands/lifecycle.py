"""start, stop, restart, migrate, migrate-cancel, pause, unpause, soft-reboot, reset, guestosinfo.

Each is one call to the subresource API (``migrate-cancel`` deletes the active migration object,
as KubeVirt's virtctl does). Messages follow KubeVirt's: "VM vm1 was scheduled to start".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from virtctl import subresources as sub
from virtctl.errors import KUBEVIRT_GROUP, Request, VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.framework import command, complete_vmis, complete_vms, kube_client, say
from virtctl.kube import KubeClient, kubevirt_path

FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)
DRY_RUN_HELP = "Ask the server to check the request without changing anything (dryRun: [All])."
VM_KINDS = {
    "vm": "vm",
    "vms": "vm",
    "virtualmachine": "vm",
    "virtualmachines": "vm",
    "vmi": "vmi",
    "vmis": "vmi",
    "virtualmachineinstance": "vmi",
    "virtualmachineinstances": "vmi",
}


def call(client: KubeClient, operation: sub.Operation, name: str, body: dict[str, Any] | None = None) -> Any:
    namespace = client.namespace
    return client.request(
        operation.method, operation.path(namespace, name), operation.request(namespace, name), body=body
    )


def scheduled(short_kind: str, name: str, what: str, dry_run: bool = False) -> None:
    say(f"{short_kind} {name} was scheduled to {what}{' (dry run: nothing was changed)' if dry_run else ''}")


dry_run_option = click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)


def _grace_period_option(what: str) -> Callable[[FC], FC]:
    return click.option(
        "--grace-period",
        type=click.IntRange(min=0),
        metavar="SECONDS",
        help=f"Seconds the guest gets to shut down before it is killed, for this {what} only "
        "(overrides terminationGracePeriodSeconds; 0 kills at once). Needs --force.",
    )


def _force_option(what: str) -> Callable[[FC], FC]:
    return click.option(
        "--force",
        is_flag=True,
        help=f"Force the {what} with the given --grace-period instead of the VMI's own grace period.",
    )


def _check_force(force: bool, grace_period: int | None) -> None:
    if force != (grace_period is not None):
        raise click.UsageError("--force and --grace-period go together: e.g. --force --grace-period=0")


@command(
    "start",
    short_help="Start a virtual machine.",
    help="Start the VirtualMachine NAME (its runStrategy decides how: Halted becomes Always; "
    "Manual and RerunOnFailure record a start request).",
    examples="""
# Start the VM 'myvm':
{prog} start myvm

# Start it with its vCPUs paused (unpause it later with '{prog} unpause vm myvm'):
{prog} start myvm --paused
""",
)
@click.argument("name", shell_complete=complete_vms)
@click.option("--paused", is_flag=True, help="Start the VM paused: the guest does not run until unpaused.")
@dry_run_option
def start(ctx: click.Context, name: str, paused: bool, dry_run: bool) -> None:
    call(kube_client(ctx), sub.START, name, sub.start_options(paused=paused, dry_run=dry_run))
    scheduled("VM", name, "start", dry_run)


@command(
    "stop",
    short_help="Stop a virtual machine.",
    help="Stop the VirtualMachine NAME: the guest is asked to shut down (ACPI) and killed after the grace period.",
    examples="""
# Stop the VM 'myvm':
{prog} stop myvm

# Stop it now, without waiting for the guest to shut down:
{prog} stop myvm --force --grace-period=0
""",
)
@click.argument("name", shell_complete=complete_vms)
@_grace_period_option("stop")
@_force_option("stop")
@dry_run_option
def stop(ctx: click.Context, name: str, grace_period: int | None, force: bool, dry_run: bool) -> None:
    _check_force(force, grace_period)
    call(kube_client(ctx), sub.STOP, name, sub.stop_options(grace_period=grace_period, dry_run=dry_run))
    scheduled("VM", name, "stop", dry_run)


@command(
    "restart",
    short_help="Restart a virtual machine.",
    help="Restart the VirtualMachine NAME: its running VMI is stopped and a new one is started.",
    examples="""
# Restart the VM 'myvm':
{prog} restart myvm

# Restart it without waiting for the guest to shut down:
{prog} restart myvm --force --grace-period=0
""",
)
@click.argument("name", shell_complete=complete_vms)
@_grace_period_option("restart")
@_force_option("restart")
@dry_run_option
def restart(ctx: click.Context, name: str, grace_period: int | None, force: bool, dry_run: bool) -> None:
    _check_force(force, grace_period)
    call(kube_client(ctx), sub.RESTART, name, sub.restart_options(grace_period=grace_period, dry_run=dry_run))
    scheduled("VM", name, "restart", dry_run)


def _node_selector(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for value in values:
        for pair in filter(None, value.split(",")):
            key, sep, label = pair.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{pair!r} is not KEY=VALUE")
            selector[key] = label
    return selector


@command(
    "migrate",
    short_help="Migrate a virtual machine to another node.",
    help="Live-migrate the running VirtualMachine NAME to another node chosen by the scheduler.",
    examples="""
# Migrate the VM 'myvm':
{prog} migrate myvm

# Migrate it to a node with the label disk=ssd:
{prog} migrate myvm --addedNodeSelector disk=ssd
""",
)
@click.argument("name", shell_complete=complete_vms)
@click.option(
    "--addedNodeSelector",
    "--added-node-selector",
    "added_node_selector",
    multiple=True,
    metavar="KEY=VALUE[,...]",
    callback=_node_selector,
    help="Extra node labels the target must have, for this migration only (repeatable).",
)
@dry_run_option
def migrate(ctx: click.Context, name: str, added_node_selector: dict[str, str], dry_run: bool) -> None:
    body = sub.migrate_options(added_node_selector=added_node_selector, dry_run=dry_run)
    call(kube_client(ctx), sub.MIGRATE, name, body)
    scheduled("VM", name, "migrate", dry_run)


FINAL_MIGRATION_PHASES = {"Succeeded", "Failed"}


def active_migration(migrations: list[dict[str, Any]], vmi_name: str) -> str | None:
    """The name of the unfinished migration of ``vmi_name``, if any (there is at most one)."""
    for migration in migrations:
        if migration.get("spec", {}).get("vmiName") != vmi_name:
            continue
        if migration.get("status", {}).get("phase") in FINAL_MIGRATION_PHASES:
            continue
        return str(migration.get("metadata", {}).get("name"))
    return None


@command(
    "migrate-cancel",
    short_help="Cancel the migration of a virtual machine.",
    help="Cancel the running live migration of the VirtualMachine NAME (deletes its active "
    "VirtualMachineInstanceMigration).",
    examples="""
# Cancel the migration of the VM 'myvm':
{prog} migrate-cancel myvm
""",
)
@click.argument("name", shell_complete=complete_vms)
@dry_run_option
def migrate_cancel(ctx: click.Context, name: str, dry_run: bool) -> None:
    client = kube_client(ctx)
    ns = client.namespace
    plural = "virtualmachineinstancemigrations"
    listing = Request("list", KUBEVIRT_GROUP, plural, ns, None, "list", "VirtualMachineInstanceMigration")
    migrations = client.request("GET", kubevirt_path(plural, ns), listing) or {}
    migration = active_migration(migrations.get("items", []), name)
    if migration is None:
        raise VirtctlError(f"found no migration to cancel for VirtualMachine {ns}/{name}", ExitCode.NOT_FOUND)
    deleting = Request("delete", KUBEVIRT_GROUP, plural, ns, migration, "cancel", "VirtualMachineInstanceMigration")
    query = {"dryRun": "All"} if dry_run else None
    client.request("DELETE", kubevirt_path(plural, ns, migration), deleting, query=query)
    scheduled("VM", name, "migrate-cancel", dry_run)


def _pause_or_unpause(ctx: click.Context, operation: sub.Operation, kind: str, name: str, dry_run: bool) -> None:
    client = kube_client(ctx)
    try:
        call(client, operation, name, sub.dry_run_options(dry_run=dry_run))
    except VirtctlError as e:
        if VM_KINDS[kind] == "vm" and e.exit_code == ExitCode.NOT_FOUND:
            _explain_vm_without_vmi(client, name, operation.action)
        raise
    scheduled("VMI", name, operation.past, dry_run)


def _explain_vm_without_vmi(client: KubeClient, name: str, action: str) -> None:
    """A VM's VMI is missing: say whether the VM itself is missing or merely stopped."""
    ns = client.namespace
    request = Request("get", KUBEVIRT_GROUP, "virtualmachines", ns, name, "read", "VirtualMachine")
    vm = client.request("GET", kubevirt_path("virtualmachines", ns, name), request) or {}
    strategy = vm.get("spec", {}).get("runStrategy") or ("Always" if vm.get("spec", {}).get("running") else "Halted")
    raise VirtctlError(
        f"cannot {action} VirtualMachine {ns}/{name}: it is not running (runStrategy {strategy}, no "
        f"VirtualMachineInstance); start it first",
        ExitCode.CONFLICT,
    )


kind_argument = click.argument(
    "kind",
    metavar="vm|vmi",
    type=click.Choice(sorted(VM_KINDS), case_sensitive=False),
    callback=lambda _c, _p, v: v.lower(),
)


def _complete_by_kind(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    kind = VM_KINDS.get(str(ctx.params.get("kind") or "").lower(), "vm")
    return complete_vms(ctx, param, incomplete) if kind == "vm" else complete_vmis(ctx, param, incomplete)


@command(
    "pause",
    short_help="Pause a virtual machine.",
    help="Pause the guest of a VM or VMI: its vCPUs stop, its memory stays. KIND is vm or vmi "
    "(also virtualmachine, virtualmachineinstance and the plurals).",
    examples="""
# Pause the VM 'myvm':
{prog} pause vm myvm

# Pause the VMI 'myvmi':
{prog} pause vmi myvmi
""",
)
@kind_argument
@click.argument("name", shell_complete=_complete_by_kind)
@dry_run_option
def pause(ctx: click.Context, kind: str, name: str, dry_run: bool) -> None:
    _pause_or_unpause(ctx, sub.PAUSE, kind, name, dry_run)


@command(
    "unpause",
    short_help="Unpause a virtual machine.",
    help="Let the guest of a paused VM or VMI run again. KIND is vm or vmi.",
    examples="""
# Unpause the VM 'myvm':
{prog} unpause vm myvm
""",
)
@kind_argument
@click.argument("name", shell_complete=_complete_by_kind)
@dry_run_option
def unpause(ctx: click.Context, kind: str, name: str, dry_run: bool) -> None:
    _pause_or_unpause(ctx, sub.UNPAUSE, kind, name, dry_run)


@command(
    "soft-reboot",
    short_help="Soft-reboot a virtual machine instance.",
    help="Ask the guest of the VMI NAME to reboot itself (through the guest agent, else ACPI).",
    examples="""
# Soft-reboot the VMI 'myvmi':
{prog} soft-reboot myvmi
""",
)
@click.argument("name", shell_complete=complete_vmis)
def soft_reboot(ctx: click.Context, name: str) -> None:
    call(kube_client(ctx), sub.SOFT_REBOOT, name, {})
    scheduled("VMI", name, "soft-reboot")


@command(
    "reset",
    short_help="Reset a virtual machine instance.",
    help="Hard-reset the VMI NAME, like pressing the reset button: the guest gets no warning.",
    examples="""
# Reset the VMI 'myvmi':
{prog} reset myvmi
""",
)
@click.argument("name", shell_complete=complete_vmis)
def reset(ctx: click.Context, name: str) -> None:
    call(kube_client(ctx), sub.RESET, name, {})
    scheduled("VMI", name, "reset")


@command(
    "guestosinfo",
    short_help="Show the guest OS of a virtual machine instance.",
    help="Print, as JSON, what the guest agent of the VMI NAME reports: OS, kernel, hostname, timezone.",
    examples="""
# Show the guest OS of the VMI 'myvmi':
{prog} guestosinfo myvmi
""",
)
@click.argument("name", shell_complete=complete_vmis)
def guestosinfo(ctx: click.Context, name: str) -> None:
    info = call(kube_client(ctx), sub.GUEST_OS_INFO, name)
    say(json.dumps(info, indent=2))


COMMANDS = [start, stop, restart, migrate, migrate_cancel, pause, unpause, soft_reboot, reset, guestosinfo]
