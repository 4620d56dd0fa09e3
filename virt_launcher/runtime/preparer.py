"""Runs the preparation step (``python -m virt_launcher.prepare``) in a child process and reads its result."""

from __future__ import annotations

import json
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

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "virt_launcher.prepare"]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start_early(self, vmi: dict[str, Any]) -> None:
        """Starts preparing ``vmi`` now (while libvirt opens); the next call for the same object collects it."""
        self._early = (vmi, self._spawn())

    def __call__(self, vmi: dict[str, Any]) -> PreparedDomain:
        early, self._early = self._early, None
        process = early[1] if early is not None and early[0] is vmi else self._spawn()
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
