"""The user's terminal during a console session: raw while connected, restored on every way out.

Raw mode turns off echo, line editing and signal keys, so Ctrl+C, Ctrl+Z and arrow keys reach the
guest's serial console. The saved settings are put back by :meth:`RawTerminal.restore`, which the
caller runs in a ``finally`` around the whole session; SIGTERM and SIGHUP are turned into
exceptions (see :func:`signals_raise`) so that ``finally`` blocks run for them too. A stop signal
(SIGTSTP from ``kill``) restores the terminal before the process stops and re-enters raw mode when
it continues. Only SIGKILL leaves a raw terminal behind; ``reset`` repairs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Any

ESCAPE = b"\x1d"
"""Ctrl+] (also sent by Ctrl+5 on many terminals): leaves the console, like telnet's escape."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; raised from the signal handler so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread, and SIGINT
    ``KeyboardInterrupt`` even when virtctl was started with it ignored (a shell's background job): as
    Go's ``signal.Notify`` does for kubectl and KubeVirt's virtctl, so ``kill -INT`` always stops it."""
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class RawTerminal:
    """Raw mode on ``fd`` if it is a terminal; a no-op otherwise (stdin from a pipe or file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None
        self._previous_tstp: Any = None

    @property
    def is_tty(self) -> bool:
        return os.isatty(self.fd)

    @property
    def active(self) -> bool:
        return self._saved is not None

    def enable(self) -> None:
        """Save the current settings and switch to raw mode (idempotent)."""
        if self._saved is not None or not self.is_tty:
            return
        self._saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSADRAIN)
        self._previous_tstp = signal.signal(signal.SIGTSTP, self._on_stop)

    def restore(self) -> None:
        """Put the saved settings back (idempotent; safe to call from any cleanup path)."""
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
        if self._previous_tstp is not None:
            signal.signal(signal.SIGTSTP, self._previous_tstp)
            self._previous_tstp = None

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        # Stopped from outside (kill -TSTP): never leave the shell with a raw terminal.
        saved = self._saved
        self.restore()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        previous_cont = signal.signal(signal.SIGCONT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        # Execution continues here after SIGCONT.
        signal.signal(signal.SIGCONT, previous_cont)
        if saved is not None:
            self.enable()

    def __enter__(self) -> RawTerminal:
        self.enable()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore()
