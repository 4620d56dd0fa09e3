"""virtctl's commands, one module per concern; :data:`COMMANDS` is the list the root group registers."""

from virtctl.commands import lifecycle

COMMANDS = [*lifecycle.COMMANDS]

__all__ = ["COMMANDS"]
