"""Forwards QEMU's own log file (libvirt's stdio_handler=file) to the launcher's log, line by line.

So ``kubectl logs`` of the launcher pod says why QEMU refused to start or died, not just that it did.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger("qemu")
MAX_LINE = 4096


class QemuLogFollower:
    def __init__(self, path: Path, poll_interval: float = 0.2) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._offset = 0
        self._partial = b""
        self._thread = threading.Thread(target=self._run, name="qemu-log", daemon=True)

    def start(self) -> None:
        # Only what this QEMU writes: libvirt appends to the same file across starts.
        try:
            self._offset = self.path.stat().st_size
        except FileNotFoundError:
            self._offset = 0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.poll()
        if self._partial:
            log.info("%s", self._partial[:MAX_LINE].decode("utf-8", "replace"))
            self._partial = b""

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.poll()

    def poll(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read(1 << 20)
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                log.info("%s", line[:MAX_LINE].decode("utf-8", "replace"))
