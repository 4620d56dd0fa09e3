"""The operations of ``subresources.kubevirt.io/v1`` as virtctl sends them: paths, RBAC names and bodies.

Bodies follow KubeVirt's option types field for field (``StartOptions``, ``StopOptions``,
``RestartOptions``, ``MigrateOptions``, ``PauseOptions``/``UnpauseOptions``); unset fields are left
out, as KubeVirt's Go client leaves them out (``omitempty``). All of this is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from virtctl.errors import SUBRESOURCE_GROUP, Request
from virtctl.kube import subresource_path

DRY_RUN_ALL = ["All"]

Plural = Literal["virtualmachines", "virtualmachineinstances"]
KIND: dict[Plural, str] = {"virtualmachines": "VirtualMachine", "virtualmachineinstances": "VirtualMachineInstance"}


@dataclass(frozen=True)
class Operation:
    """One subresource: where it lives, how it is called, and how to name it to the user."""

    plural: Plural
    subresource: str
    method: Literal["PUT", "GET"]
    action: str
    """The verb users read in messages: "start", "connect to the console of"."""
    past: str = ""
    """The word KubeVirt prints after "was scheduled to": start, stop, pause, soft-reboot..."""

    @property
    def kind(self) -> str:
        return KIND[self.plural]

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource.split('/')[0]}"

    def path(self, namespace: str, name: str) -> str:
        return subresource_path(self.plural, namespace, name, self.subresource)

    def request(self, namespace: str, name: str) -> Request:
        # Websocket streams are GETs; RBAC calls a PUT "update".
        verb = "update" if self.method == "PUT" else "get"
        return Request(verb, SUBRESOURCE_GROUP, self.resource, namespace, name, self.action, self.kind)


VM: Plural = "virtualmachines"
VMI: Plural = "virtualmachineinstances"

START = Operation(VM, "start", "PUT", "start", "start")
STOP = Operation(VM, "stop", "PUT", "stop", "stop")
RESTART = Operation(VM, "restart", "PUT", "restart", "restart")
MIGRATE = Operation(VM, "migrate", "PUT", "migrate", "migrate")
PAUSE = Operation(VMI, "pause", "PUT", "pause", "pause")
UNPAUSE = Operation(VMI, "unpause", "PUT", "unpause", "unpause")
SOFT_REBOOT = Operation(VMI, "softreboot", "PUT", "soft-reboot", "soft-reboot")
RESET = Operation(VMI, "reset", "PUT", "reset", "reset")
GUEST_OS_INFO = Operation(VMI, "guestosinfo", "GET", "read the guest OS information of")
CONSOLE = Operation(VMI, "console", "GET", "connect to the serial console of")
VNC = Operation(VMI, "vnc", "GET", "connect to the VNC display of")


def port_forward(port: int, protocol: str = "tcp") -> Operation:
    """The port-forward stream to ``port`` of a VMI: ``.../virtualmachineinstances/NAME/portforward/PORT/tcp``."""
    return Operation(VMI, f"portforward/{port}/{protocol}", "GET", f"forward {protocol} port {port} of")


def _dry_run(dry_run: bool) -> dict[str, Any]:
    return {"dryRun": DRY_RUN_ALL} if dry_run else {}


def start_options(*, paused: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """KubeVirt's StartOptions: ``paused`` starts the VM with its vCPUs stopped."""
    body = _dry_run(dry_run)
    if paused:
        body["paused"] = True
    return body


def stop_options(*, grace_period: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """KubeVirt's StopOptions: ``gracePeriod`` overrides the VMI's terminationGracePeriodSeconds."""
    body = _dry_run(dry_run)
    if grace_period is not None:
        body["gracePeriod"] = grace_period
    return body


def restart_options(*, grace_period: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """KubeVirt's RestartOptions: note the field is ``gracePeriodSeconds`` here, ``gracePeriod`` in StopOptions."""
    body = _dry_run(dry_run)
    if grace_period is not None:
        body["gracePeriodSeconds"] = grace_period
    return body


def migrate_options(*, added_node_selector: dict[str, str] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """KubeVirt's MigrateOptions: ``addedNodeSelector`` narrows the target nodes of this one migration."""
    body = _dry_run(dry_run)
    if added_node_selector:
        body["addedNodeSelector"] = dict(added_node_selector)
    return body


def dry_run_options(*, dry_run: bool = False) -> dict[str, Any]:
    """PauseOptions, UnpauseOptions: only ``dryRun``."""
    return _dry_run(dry_run)
