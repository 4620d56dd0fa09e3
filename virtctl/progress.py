"""Progress for long waits, on stderr: a live spinner with elapsed time on a terminal, plain lines otherwise.

stdout stays clean for data (``port-forward --stdio`` carries ssh traffic there).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.status import Status


class Waiting:
    """``with Waiting("Waiting for VMI default/vm1 to run") as w: ... w.update("phase Scheduling")``."""

    def __init__(self, what: str, *, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started = clock()
        self._last_detail: str | None = None
        self._status: Status | None = None

    def _text(self, detail: str) -> str:
        elapsed = int(self._clock() - self._started)
        return f"{self.what} ({elapsed}s){': ' + detail if detail else ''}"

    def update(self, detail: str = "") -> None:
        if self._status is not None:
            self._status.update(self._text(detail))
        elif detail != self._last_detail:
            print(self._text(detail), file=self._stream, flush=True)
        self._last_detail = detail

    def __enter__(self) -> Waiting:
        if self._stream.isatty():
            console = Console(file=self._stream, highlight=False)
            self._status = console.status(self._text(""), spinner="dots")
            self._status.start()
        else:
            self.update()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
