"""What every virtctl command shares: the cluster flags, the API client, examples in ``--help``, output helpers.

Every command (not only the root) accepts ``--kubeconfig``, ``--context`` and ``-n/--namespace``,
so ``virtctl start vm1 -n prod`` works like ``virtctl -n prod start vm1``, as with kubectl.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from virtctl.kube import KubeClient, Selection, load_credentials

_SELECTION = "virtctl.selection"
_CLIENT = "virtctl.client"
PROG_PLACEHOLDER = "{prog}"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and param.name is not None:
        ctx.find_root().meta.setdefault(_SELECTION, {})[param.name] = value
    return value


def _complete_namespaces(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return complete_names(ctx, "/api/v1/namespaces", incomplete)


def cluster_params() -> list[click.Parameter]:
    """The kubectl-style flags, fresh objects for each command."""
    return [
        click.Option(
            ["--kubeconfig"],
            metavar="PATH",
            expose_value=False,
            callback=_remember,
            help="Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).",
        ),
        click.Option(
            ["--context"], metavar="NAME", expose_value=False, callback=_remember, help="Kubeconfig context to use."
        ),
        click.Option(
            ["-n", "--namespace"],
            metavar="NS",
            expose_value=False,
            callback=_remember,
            shell_complete=_complete_namespaces,
            help="Namespace (default: the context's namespace, else 'default').",
        ),
    ]


def selection(ctx: click.Context) -> Selection:
    chosen = ctx.find_root().meta.get(_SELECTION, {})
    return Selection(chosen.get("kubeconfig"), chosen.get("context"), chosen.get("namespace"))


def kube_client(ctx: click.Context) -> KubeClient:
    """The API client for this invocation, made on first use."""
    root = ctx.find_root()
    client: KubeClient | None = root.meta.get(_CLIENT)
    if client is None:
        client = KubeClient(load_credentials(selection(ctx)))
        root.meta[_CLIENT] = client
        root.call_on_close(client.close)
    return client


def prog_name(ctx: click.Context) -> str:
    """``virtctl``, or ``kubectl virt`` when run as the kubectl plugin."""
    return ctx.find_root().info_name or "virtctl"


class VirtCommand(click.Command):
    """A command with the cluster flags and an "Examples" section (``{prog}`` becomes the program name)."""

    def __init__(self, *args: Any, examples: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = examples.strip("\n")
        self.params.extend(cluster_params())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, cobra_bool_flags(self.get_params(ctx), args))

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_examples(self.examples, ctx, formatter)
        super().format_epilog(ctx, formatter)


def write_examples(examples: str, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    if not examples:
        return
    formatter.write_paragraph()
    formatter.write_heading("Examples")
    prog = prog_name(ctx)
    for line in examples.splitlines():
        formatter.write(f"  {line.replace(PROG_PLACEHOLDER, prog)}\n" if line else "\n")


_TRUE, _FALSE = {"true", "t", "1"}, {"false", "f", "0"}


def cobra_bool_flags(params: list[click.Parameter], args: list[str]) -> list[str]:
    """Accept KubeVirt's spelling of boolean flags, ``--stdio=true`` / ``--dry-run=false``.

    virtctl (Go, cobra) takes ``--flag``, ``--flag=true`` and ``--flag=false``; ssh configs and
    scripts written for it use the ``=true`` form (``ProxyCommand virtctl port-forward --stdio=true``).
    """
    flags = {opt: p for p in params if isinstance(p, click.Option) and p.is_bool_flag for opt in p.opts}
    normalized: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return normalized + args[i:]
        name, sep, value = arg.partition("=")
        option = flags.get(name) if sep else None
        if option is None or value.lower() not in _TRUE | _FALSE:
            normalized.append(arg)
        elif value.lower() in _TRUE:
            normalized.append(name)
        elif option.secondary_opts:
            normalized.append(option.secondary_opts[0])
    return normalized


class VirtGroup(click.Group):
    """A group whose subcommands are :class:`VirtCommand` and which accepts the cluster flags too.

    Called without a subcommand it prints its help and succeeds, as kubectl and KubeVirt's virtctl do.
    """

    command_class = VirtCommand

    def __init__(self, *args: Any, examples: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("invoke_without_command", True)
        kwargs.setdefault("no_args_is_help", False)
        super().__init__(*args, **kwargs)
        self.examples = examples.strip("\n")
        self.params.extend(cluster_params())
        own = self.callback

        def help_without_subcommand(*cb_args: Any, **cb_kwargs: Any) -> Any:
            ctx = click.get_current_context()
            if ctx.invoked_subcommand is None:
                click.echo(ctx.get_help(), color=ctx.color)
                return None
            return own(*cb_args, **cb_kwargs) if own is not None else None

        self.callback = help_without_subcommand

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_examples(self.examples, ctx, formatter)
        super().format_epilog(ctx, formatter)


VirtGroup.group_class = VirtGroup


def command(name: str, *, examples: str, **kwargs: Any) -> Callable[[Callable[..., Any]], VirtCommand]:
    """``@command("start", examples=...)``: a :class:`VirtCommand` that receives the click context."""

    def decorate(f: Callable[..., Any]) -> VirtCommand:
        cmd = click.command(name, cls=VirtCommand, examples=examples, **kwargs)(click.pass_context(f))
        assert isinstance(cmd, VirtCommand)
        return cmd

    return decorate


def complete_names(ctx: click.Context, path: str, incomplete: str) -> list[CompletionItem]:
    """Names of the objects listed at ``path`` (``{ns}`` is the namespace) that start with ``incomplete``.

    Completion must never print errors into the user's shell: any failure completes nothing.
    """
    try:
        client = KubeClient(load_credentials(selection(ctx)), timeout=3.0)
        try:
            listed = client.raw_request("GET", path.replace("{ns}", client.namespace), timeout=3.0)
        finally:
            client.close()
    except Exception:  # see the docstring
        return []
    names = [item.get("metadata", {}).get("name", "") for item in (listed or {}).get("items", [])]
    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


def complete_vms(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return complete_names(ctx, "/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines", incomplete)


def complete_vmis(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return complete_names(ctx, "/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances", incomplete)


def say(message: str) -> None:
    """A result line for the user (stdout)."""
    click.echo(message)


def note(message: str) -> None:
    """A side remark or warning (stderr), so stdout stays parseable."""
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow", bold=True) + message, err=True, color=sys.stderr.isatty())
