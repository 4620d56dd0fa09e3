"""Shell completion: ``virtctl completion SHELL`` prints the script; ``kubectl_complete-virt`` serves kubectl.

Commands, flags and VM/VMI/namespace names complete (names are listed from the cluster, quietly:
a completion never prints errors into the shell). kubectl (1.26 and later) completes a plugin by
running ``kubectl_complete-virt __complete ARGS... INCOMPLETE`` and reading cobra's protocol: one
candidate per line, then ``:DIRECTIVE``; that executable is :func:`virtctl.cli.kubectl_complete`.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from click.shell_completion import ShellComplete, get_completion_class

from virtctl.framework import command, say

COMPLETE_VAR = "_VIRTCTL_COMPLETE"
COBRA_NO_FILE_COMPLETION = 4
COBRA_DEFAULT = 0


@command(
    "completion",
    short_help="Print the shell completion script.",
    help="Print the completion script for SHELL (bash, zsh or fish). For 'kubectl virt', kubectl 1.26+ "
    "completes through the kubectl_complete-virt executable installed with podvirt; nothing to source.",
    examples="""
# bash, for this shell:
source <({prog} completion bash)

# bash, for good:
{prog} completion bash > ~/.local/share/bash-completion/completions/virtctl

# zsh:
{prog} completion zsh > "${fpath[1]}/_virtctl"
""",
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(ctx: click.Context, shell: str) -> None:
    root = ctx.find_root().command
    complete_class = get_completion_class(shell)
    assert complete_class is not None
    say(complete_class(root, {}, "virtctl", COMPLETE_VAR).source())


def cobra_lines(root: click.Command, args: Sequence[str], *, descriptions: bool = True) -> list[str]:
    """Answer one ``__complete`` request: candidates, then the directive line."""
    words = list(args[:-1])
    incomplete = args[-1] if args else ""
    items = ShellComplete(root, {}, "kubectl virt", COMPLETE_VAR).get_completions(words, incomplete)
    lines = [f"{item.value}\t{item.help}" if descriptions and item.help else str(item.value) for item in items]
    files = any(item.type in ("file", "dir") for item in items)
    lines.append(f":{COBRA_DEFAULT if files else COBRA_NO_FILE_COMPLETION}")
    return lines


COMMANDS = [completion]
