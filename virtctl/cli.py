"""The ``virtctl`` command (and the kubectl plugin ``kubectl virt``): its command tree, errors and exit codes.

Console scripts: ``virtctl = "virtctl.cli:main"``, ``kubectl-virt = "virtctl.cli:main"`` and
``kubectl_complete-virt = "virtctl.cli:kubectl_complete"`` (shell completion for the plugin).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from virtctl import __version__
from virtctl.commands import COMMANDS
from virtctl.completion import COBRA_NO_FILE_COMPLETION, COMPLETE_VAR, cobra_lines
from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode, describe
from virtctl.framework import VirtGroup
from virtctl.terminal import Terminated, signals_raise

ROOT_HELP = f"""virtctl controls podvirt's (KubeVirt-compatible) virtual machines: start and stop them, open
their serial console or VNC display, forward ports, ssh into them, and create manifests.

It talks only to the Kubernetes API, with your kubeconfig, like kubectl. Installed as
kubectl-virt on your PATH it is also the kubectl plugin 'kubectl virt'.

\b
Exit codes:
{describe()}
"""


@click.group(
    cls=VirtGroup,
    help=ROOT_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    examples="""
# Start a VM and open its serial console (leave with Ctrl+]):
{prog} start myvm
{prog} console myvm

# ssh into it through the Kubernetes API (no Service needed):
{prog} ssh fedora@vm/myvm
""",
)
@click.version_option(__version__, "--version", prog_name="virtctl (podvirt)", message="%(prog)s %(version)s")
def root() -> None:
    """The root of the command tree; subcommands do the work."""


for _command in COMMANDS:
    root.add_command(_command)


def program_name(argv0: str) -> str:
    """``kubectl virt`` when started as the kubectl plugin, else ``virtctl``."""
    return "kubectl virt" if os.path.basename(argv0).startswith("kubectl-virt") else "virtctl"


def run(args: Sequence[str] | None = None, prog_name: str | None = None) -> int:
    """Run one command line and return its exit status (errors are printed on stderr)."""
    prog = prog_name or program_name(sys.argv[0])
    try:
        with signals_raise():
            result = root.main(
                args=list(args) if args is not None else None,
                prog_name=prog,
                complete_var=COMPLETE_VAR,
                standalone_mode=False,
            )
    except VirtctlError as e:
        _error(e.message)
        return int(e.exit_code)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return int(ExitCode.USAGE if isinstance(e, click.UsageError) else ExitCode.ERROR)
    except (click.exceptions.Abort, KeyboardInterrupt, Terminated):
        click.echo("", err=True)
        return int(ExitCode.INTERRUPTED)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)


def _error(message: str) -> None:
    prefix = click.style("error: ", fg="red", bold=True)
    click.echo(prefix + message, err=True, color=sys.stderr.isatty())


def main() -> NoReturn:
    """Console-script entry point of ``virtctl`` and ``kubectl-virt``."""
    sys.exit(run())


def kubectl_complete() -> NoReturn:
    """Console-script entry point of ``kubectl_complete-virt`` (kubectl's plugin completion)."""
    args = sys.argv[1:]
    descriptions = True
    if args and args[0] in ("__complete", "__completeNoDesc"):
        descriptions = args[0] == "__complete"
        args = args[1:]
    try:
        lines = cobra_lines(root, args, descriptions=descriptions)
    except Exception:  # a completion must never break the user's shell
        lines = [f":{COBRA_NO_FILE_COMPLETION}"]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.exit(0)
