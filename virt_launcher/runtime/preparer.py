"""Runs the preparation step (``python -m virt_launcher.prepare``) in a child process and reads its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from virt_launcher.errors import LauncherError
from virt_launcher.layout import PodLayout

from .controller import PreparedDomain

PREPARE_TIMEOUT = 120.0


@dataclass
class SubprocessPreparer:
    layout: PodLayout
    domain_type: str
    network_mode: str = "auto"
    timeout: float = PREPARE_TIMEOUT

    def request(self, vmi: dict[str, Any]) -> dict[str, Any]:
        return {
            "vmi": vmi,
            "socketsDir": str(self.layout.sockets_dir),
            "privateDir": str(self.layout.private_dir),
            "volumesDir": str(self.layout.volumes_dir),
            "domainType": self.domain_type,
            "networkMode": self.network_mode,
        }

    _early: tuple[dict[str, Any], subprocess.Popen[bytes]] | None = None
    _spare: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "virt_launcher.prepare"]
        env = {**os.environ, "PODVIRT_FIELD_DOCS": "0"}  # it validates; descriptions would cost CPU per VM
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def start_early(self, vmi: dict[str, Any]) -> None:
        """Starts preparing ``vmi`` now (while libvirt opens); the next call for the same object collects it."""
        self._early = (vmi, self._spawn())

    def start_spare(self) -> None:
        """Starts a preparation child before there is a request: it imports its modules (a quarter of a
        second) and waits on stdin, so the spec the handler hands over later is prepared without that wait."""
        self._spare = self._spawn()

    def _take(self, vmi: dict[str, Any]) -> subprocess.Popen[bytes]:
        early, self._early = self._early, None
        if early is not None:
            if early[0] is vmi:
                return early[1]
            _discard(early[1])
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            return spare
        return self._spawn()

    def close(self) -> None:
        """Ends a child that was started and never used."""
        for process in (self._early[1] if self._early is not None else None, self._spare):
            if process is not None:
                _discard(process)
        self._early = self._spare = None

    def __call__(self, vmi: dict[str, Any]) -> PreparedDomain:
        process = self._take(vmi)
        try:
            stdout, stderr = process.communicate(json.dumps(self.request(vmi)).encode(), timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            raise LauncherError(f"preparing the domain took longer than {self.timeout:.0f}s") from exc
        try:
            result = json.loads(stdout)
        except ValueError:
            tail = stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
            raise LauncherError(
                f"the preparation step failed (exit {process.returncode}): {' | '.join(tail)}"
            ) from None
        if not result.get("ok"):
            raise LauncherError.from_dict(result.get("error") or {})
        return PreparedDomain(
            xml=result["domainXML"],
            name=result["domainName"],
            uuid=result["domainUUID"],
            vmi_uid=result.get("vmiUID"),
            start_paused=bool(result["startPaused"]),
            grace_seconds=int(result["terminationGracePeriodSeconds"]),
            serial_console=bool(result["serialConsole"]),
            warnings=tuple(result.get("warnings", [])),
        )


def _discard(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()
