"""QEMU never outlives the launcher: a tiny watchdog process, and a last-resort kill on every exit path.

libvirt daemonizes QEMU into its own session, so neither a process-group kill nor PR_SET_PDEATHSIG of
the launcher reaches it. The watchdog is a ``/bin/sh`` in its own session, ignoring SIGTERM/SIGINT/SIGHUP,
blocked reading a pipe whose only writer is the launcher. However the launcher ends (exit, crash,
SIGKILL) the kernel closes that pipe; the watchdog then reads QEMU's pid from libvirt's pidfile and
kills it, but only if that process's command line names this launcher's libvirt root (libvirt puts
``<root>/lib/qemu/domain-<id>-<name>/`` paths on it), so a recycled pid is safe.
It costs ~1 MiB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

WATCHDOG_SCRIPT = r"""
trap '' HUP INT TERM QUIT PIPE
cat >/dev/null
pidfile=$1
[ -r "$pidfile" ] || exit 0
pid=$(cat "$pidfile" 2>/dev/null)  # libvirt writes no trailing newline, which would fail `read`
case $pid in ''|*[!0-9]*) exit 0 ;; esac
if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"; then
    kill -KILL "$pid" 2>/dev/null
fi
"""


def identity_marker(pidfile: Path) -> str:
    """What the command line of the QEMU behind ``<root>/run/qemu/<name>.pid`` must contain."""
    return f"{pidfile.parents[2]}/lib/qemu/domain-"


def qemu_pid(pidfile: Path) -> int | None:
    """QEMU's pid from libvirt's pidfile, if that process still runs with this libvirt root on its command line."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if os.fsencode(identity_marker(pidfile)) in cmdline else None


def kill_qemu(pidfile: Path | None, wait: float = 5.0) -> bool:
    """SIGKILLs the QEMU named by ``pidfile`` and waits for it to go; True when one was killed."""
    if pidfile is None:
        return False
    pid = qemu_pid(pidfile)
    if pid is None:
        return False
    log.warning("killing QEMU (pid %d) that is still running", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        # A zombie still has /proc/<pid>; its state letter says it is gone for good.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    return True


class QemuWatchdog:
    """The watchdog process for the QEMU whose pid libvirt writes to ``pidfile``."""

    def __init__(self, pidfile: Path) -> None:
        self.pidfile = pidfile
        read_end, self._write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", WATCHDOG_SCRIPT, "qemu-watchdog", str(pidfile), identity_marker(pidfile)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._wait_armed()

    def _wait_armed(self, timeout: float = 2.0) -> None:
        """Returns once the shell ignores SIGTERM, so a group kill right after start cannot take it down."""
        status = Path(f"/proc/{self.process.pid}/status")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                ignored = int(status.read_text().split("SigIgn:")[1].split()[0], 16)
                if ignored & (1 << (signal.SIGTERM - 1)):
                    return
            time.sleep(0.002)
        log.warning("the QEMU watchdog did not arm within %.0fs", timeout)

    def disarm(self) -> None:
        """Closes the pipe (the watchdog then checks, and kills what is left) and reaps it."""
        with contextlib.suppress(OSError):
            os.close(self._write_end)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
