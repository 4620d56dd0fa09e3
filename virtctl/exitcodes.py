"""virtctl's exit codes: a documented contract that scripts can rely on (also shown by ``virtctl --help``)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a virtctl exit status means. The values never change once released."""

    OK = 0
    """The request was accepted (or the session ended the way the user asked)."""
    ERROR = 1
    """Anything not listed below: the server refused the request as invalid, an unexpected failure."""
    USAGE = 2
    """The command line is wrong: unknown flag, missing argument, conflicting options."""
    NOT_FOUND = 3
    """The VM, VMI, replica set or migration does not exist in that namespace."""
    FORBIDDEN = 4
    """Not allowed: credentials missing or rejected (401), or RBAC denies the request (403)."""
    CONFLICT = 5
    """The object is not in a state that allows the request, e.g. starting a running VM, pausing a stopped one."""
    UNAVAILABLE = 6
    """The subresource API (virt-api) is not installed, not reachable, or too old for this request."""
    TIMEOUT = 7
    """A wait ran out of time, e.g. ``console --timeout`` before the VMI was running."""
    CONFIG = 8
    """No usable kubeconfig, unknown context, or the Kubernetes API server cannot be reached."""
    TAKEN_OVER = 9
    """A console or VNC session was ended because another client connected to the same VMI."""
    INTERRUPTED = 130
    """Stopped by Ctrl+C (SIGINT) or SIGTERM/SIGHUP before finishing."""


def describe() -> str:
    """The exit codes as a help-text table."""
    return "\n".join(f"  {code.value:>3}  {_DOCS[code]}" for code in ExitCode)


_DOCS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "other error (invalid request, unexpected failure)",
    ExitCode.USAGE: "wrong command line",
    ExitCode.NOT_FOUND: "VM/VMI/replica set/migration not found",
    ExitCode.FORBIDDEN: "not authenticated, or RBAC forbids the request",
    ExitCode.CONFLICT: "object not in a state that allows the request (e.g. not running)",
    ExitCode.UNAVAILABLE: "subresource API (virt-api) absent, unavailable or too old",
    ExitCode.TIMEOUT: "gave up waiting (e.g. console --timeout)",
    ExitCode.CONFIG: "no usable kubeconfig/context, or the API server is unreachable",
    ExitCode.TAKEN_OVER: "console/VNC session taken over by another client",
    ExitCode.INTERRUPTED: "interrupted (Ctrl+C, SIGTERM, SIGHUP)",
}
