"""virtctl's commands, one module per concern; :data:`COMMANDS` is the list the root group registers."""

from virtctl import completion
from virtctl.commands import console, create, expose, lifecycle, portforward, ssh, version, vnc

COMMANDS = [
    *lifecycle.COMMANDS,
    *console.COMMANDS,
    *vnc.COMMANDS,
    *portforward.COMMANDS,
    *ssh.COMMANDS,
    *expose.COMMANDS,
    *create.COMMANDS,
    *version.COMMANDS,
    *completion.COMMANDS,
]

__all__ = ["COMMANDS"]
