"""``create vm``: print a VirtualMachine manifest built from flags (nothing is sent to the cluster)."""

from __future__ import annotations

import click

from virtctl.framework import VirtGroup, command, say, selection
from virtctl.manifest import DEFAULT_GRACE_PERIOD, DEFAULT_MEMORY, VMFlags, build_vm, to_yaml


@click.group("create", cls=VirtGroup, short_help="Create a manifest for a VM.")
def create() -> None:
    """Print manifests for podvirt objects, ready for 'kubectl apply -f -'."""


@command(
    "vm",
    short_help="Create a VirtualMachine manifest.",
    help="Print a VirtualMachine manifest built from the flags (to standard output; nothing is created). "
    "Volume flags take KEY:VALUE pairs separated by commas and can be repeated. Each volume gets a "
    "virtio disk; bootorder picks the boot disk.",
    examples="""
# A VM with a random name, 512Mi of memory and no disks:
{prog} create vm

# A VM booting a container disk, with 1Gi of memory, applied right away:
{prog} create vm --name=myvm --memory=1Gi \\
    --volume-containerdisk=src:quay.io/containerdisks/fedora:40 | kubectl apply -f -

# With cloud-init user data (base64-encoded, as KubeVirt's virtctl wants it):
{prog} create vm --name=myvm --volume-containerdisk=src:quay.io/containerdisks/fedora:40 \\
    --cloud-init-user-data="$(base64 -w0 user-data.yaml)"

# Two disks, booting from the PVC:
{prog} create vm --volume-containerdisk=src:example.com/tools:1 --volume-pvc=src:root-disk,bootorder:1
""",
)
@click.option("--name", help="Name of the VM (default: vm-xxxxx, random).")
@click.option(
    "--run-strategy",
    default="Always",
    show_default=True,
    metavar="STRATEGY",
    help="Always, RerunOnFailure, Manual, Halted or Once.",
)
@click.option(
    "--termination-grace-period",
    type=int,
    default=DEFAULT_GRACE_PERIOD,
    show_default=True,
    metavar="SECONDS",
    help="Seconds the guest gets to shut down.",
)
@click.option("--memory", default=DEFAULT_MEMORY, show_default=True, help="Guest memory (a quantity, e.g. 2Gi).")
@click.option(
    "--volume-containerdisk",
    "containerdisks",
    multiple=True,
    metavar="src:IMAGE[,name:NAME][,bootorder:N]",
    help="A disk from a container image; changes are lost when the VM stops (repeatable).",
)
@click.option(
    "--volume-pvc",
    "pvcs",
    multiple=True,
    metavar="src:CLAIM[,name:NAME][,bootorder:N]",
    help="A PersistentVolumeClaim in the VM's namespace used as a disk (repeatable).",
)
@click.option("--cloud-init-user-data", metavar="BASE64", help="cloud-init user data, base64-encoded.")
@click.option("--cloud-init-network-data", metavar="BASE64", help="cloud-init network data, base64-encoded.")
def vm(
    ctx: click.Context,
    name: str | None,
    run_strategy: str,
    termination_grace_period: int,
    memory: str,
    containerdisks: tuple[str, ...],
    pvcs: tuple[str, ...],
    cloud_init_user_data: str | None,
    cloud_init_network_data: str | None,
) -> None:
    flags = VMFlags(
        name=name,
        # Like KubeVirt: the namespace goes into the manifest only when given with -n.
        namespace=selection(ctx).namespace,
        run_strategy=run_strategy,
        termination_grace_period=termination_grace_period,
        memory=memory,
        containerdisks=list(containerdisks),
        pvcs=list(pvcs),
        cloud_init_user_data=cloud_init_user_data,
        cloud_init_network_data=cloud_init_network_data,
    )
    say(to_yaml(build_vm(flags)).rstrip("\n"))


create.add_command(vm)

COMMANDS = [create]
