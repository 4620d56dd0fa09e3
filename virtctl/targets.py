"""The target syntaxes of port-forward, ssh and scp, parsed (pure functions).

- target: ``vm/NAME``, ``vmi/NAME``, optionally ``/NAMESPACE`` (KubeVirt's kinds and plurals are
  accepted; a bare ``NAME`` means a VMI); KubeVirt's older ``vmi/NAME.NAMESPACE`` still works.
- port: ``[tcp/]LOCAL[:REMOTE]``; ``:REMOTE`` picks a free local port.
- ssh: ``[USER@]TARGET``; scp: ``[USER@]TARGET:PATH`` for the remote side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode

Kind = Literal["vm", "vmi"]
KINDS: dict[str, Kind] = {
    "vm": "vm",
    "vms": "vm",
    "virtualmachine": "vm",
    "virtualmachines": "vm",
    "vmi": "vmi",
    "vmis": "vmi",
    "virtualmachineinstance": "vmi",
    "virtualmachineinstances": "vmi",
}


def _usage(message: str) -> VirtctlError:
    return VirtctlError(message, ExitCode.USAGE)


@dataclass(frozen=True)
class Target:
    """A VM or VMI; ``namespace`` None means the namespace from the command line or context."""

    kind: Kind
    name: str
    namespace: str | None = None
    legacy_syntax: bool = False
    """Written as KubeVirt's deprecated ``kind/name.namespace``."""

    def in_namespace(self, default: str) -> str:
        return self.namespace or default

    def spec(self, namespace: str) -> str:
        """The canonical ``kind/name/namespace`` form, e.g. for a ProxyCommand."""
        return f"{self.kind}/{self.name}/{namespace}"

    def host_alias(self, namespace: str) -> str:
        """What ssh sees as the host name (and records in known_hosts): ``vmi.NAME.NAMESPACE``."""
        return f"{self.kind}.{self.name}.{namespace}"


def parse_target(text: str) -> Target:
    """``[kind/]name[/namespace]``."""
    if not text:
        raise _usage("the target is empty; write vm/NAME or vmi/NAME")
    parts = text.split("/")
    if len(parts) == 1:
        return Target("vmi", _name(parts[0], text))
    if len(parts) > 3:
        raise _usage(f"target {text!r} has too many '/': write KIND/NAME or KIND/NAME/NAMESPACE")
    kind = KINDS.get(parts[0].lower())
    if kind is None:
        raise _usage(f"unsupported kind {parts[0]!r} in {text!r}: use vm or vmi")
    name = _name(parts[1], text)
    if len(parts) == 3:
        if not parts[2]:
            raise _usage(f"the namespace in {text!r} is empty")
        return Target(kind, name, parts[2])
    if "." in name:
        name, _, namespace = name.partition(".")
        return Target(kind, _name(name, text), namespace, legacy_syntax=True)
    return Target(kind, name)


def _name(name: str, text: str) -> str:
    if not name:
        raise _usage(f"the name in {text!r} is empty")
    return name


@dataclass(frozen=True)
class ForwardedPort:
    local: int
    """0: any free port."""
    remote: int
    protocol: str = "tcp"


def parse_port(text: str) -> ForwardedPort:
    """``[protocol/]local[:remote]``."""
    protocol, sep, ports = text.rpartition("/")
    protocol = protocol.lower() if sep else "tcp"
    if protocol == "udp":
        raise _usage(f"{text!r}: UDP forwarding is not supported by podvirt; only TCP")
    if protocol != "tcp":
        raise _usage(f"{text!r}: unknown protocol {protocol!r}; only tcp is supported")
    local_text, colon, remote_text = ports.partition(":")
    try:
        remote = int(remote_text if colon else local_text)
        local = int(local_text) if local_text else 0
    except ValueError:
        raise _usage(f"{text!r} is not a port: write LOCAL, LOCAL:REMOTE or :REMOTE") from None
    if not 0 <= local <= 65535 or not 1 <= remote <= 65535:
        raise _usage(f"{text!r}: ports go from 1 to 65535")
    return ForwardedPort(local, remote, protocol)


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    target: Target


def parse_ssh_target(text: str) -> SshTarget:
    """``[user@]target``."""
    user, at, rest = text.rpartition("@")
    if at and not user:
        raise _usage(f"the user name in {text!r} is empty")
    return SshTarget(user or None, parse_target(rest))


@dataclass(frozen=True)
class ScpLocation:
    path: str
    remote: SshTarget | None = None
    """None: a local path."""


def parse_scp_location(text: str) -> ScpLocation:
    """``[user@]target:path`` is remote; anything else (``/x``, ``./a:b``, ``file``) is a local path."""
    if text.startswith(("/", "./", "../", "~")) or ":" not in text:
        return ScpLocation(text)
    target, _, path = text.partition(":")
    return ScpLocation(path, parse_ssh_target(target))
