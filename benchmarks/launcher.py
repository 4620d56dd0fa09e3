"""virt-launcher start -> domain running -> first guest console byte, cold and warm; the launcher's memory.

python -m benchmarks launcher [--warm-runs 5]

Boots the tiny test guest (images/guest, kernel boot, 96 MiB, QEMU TCG here) through a real launcher
process, started with ``--vmi`` as a pod would be when the VMI is known up front. Times are taken from
just before the launcher process is spawned (so Python's own start-up counts):

- running: the domain's ``Started`` event, pushed by the launcher to a notify socket this benchmark serves
  (the event carries the launcher's wall-clock time);
- first console byte: the first byte a client of the launcher's console socket receives;
- guest marker: the guest's ``PODVIRT-GUEST-BOOT`` line (its init has started).

"Cold" has an empty libvirt capabilities cache (libvirt probes QEMU, seconds); "warm" runs reuse the
cache dir the cold run filled, as launchers on one node do. Memory: the launcher's RSS and PSS while the
guest runs (QEMU excluded; it is a separate process), and the watchdog shell's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import _results
from virt_launcher.runtime.client import LauncherClient
from virt_launcher.runtime.httpd import Request, Response, UnixHTTPServer

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_UID = 107


def _vmi(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "bench", "uid": f"uid-{name}"},
        "spec": {
            "domain": {
                "memory": {"guest": "96Mi"},
                "devices": {"autoattachGraphicsDevice": False},
                "firmware": {
                    "kernelBoot": {
                        "kernelArgs": "console=ttyS0 quiet",
                        "container": {"image": "tiny", "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.img"},
                    }
                },
            },
            "terminationGracePeriodSeconds": 5,
        },
    }


def _memory(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(status.split("VmRSS:")[1].split()[0])
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(rollup.split("\nPss:")[1].split()[0])
    return {"rssMiB": round(rss / 1024, 1), "pssMiB": round(pss / 1024, 1)}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Run:
    def __init__(self, guest: Path, cache: Path, name: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pvb", dir="/tmp"))
        self.base.chmod(0o755)
        boot = self.base / "v/.kernel-boot/boot"
        boot.mkdir(parents=True)
        shutil.copy(guest / "vmlinuz", boot / "vmlinuz")
        shutil.copy(guest / "initrd.img", boot / "initrd.img")
        (self.base / "vmi.json").write_text(json.dumps(_vmi(name)))
        self.cache = cache
        self.started_event = threading.Event()
        self.started_at: float | None = None
        self.first_byte_at: float | None = None
        self.marker_at: float | None = None

    def _on_events(self, request: Request) -> Response:
        for event in request.body.get("events", []):
            if event["type"] == "Started" and self.started_at is None:
                self.started_at = datetime.fromisoformat(event["time"]).timestamp()
                self.started_event.set()
        return Response(200, {})

    def _watch_console(self, path: Path, deadline: float) -> None:
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        sock.settimeout(1)
        data = b""
        while time.monotonic() < deadline and b"PODVIRT-GUEST-BOOT" not in data:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            if not data:
                self.first_byte_at = time.time()
            data += chunk
            if b"PODVIRT-GUEST-BOOT" in data:
                self.marker_at = time.time()
        sock.close()

    def measure(self) -> dict[str, Any]:
        notify = UnixHTTPServer(self.base / "notify.sock", self._on_events)
        notify.start()
        if os.geteuid() == 0:
            os.chown(self.base / "notify.sock", LAUNCHER_UID, LAUNCHER_UID)  # the launcher drops to 107
        argv = [
            sys.executable, "-m", "virt_launcher", "--sockets-dir", str(self.base / "s"), "--private-dir",
            str(self.base / "p"), "--volumes-dir", str(self.base / "v"), "--cache-dir", str(self.cache),
            "--vmi", str(self.base / "vmi.json"), "--notify-socket", str(self.base / "notify.sock"),
            "--log-format", "json",
        ]  # fmt: skip
        deadline = time.monotonic() + 120
        console = threading.Thread(target=self._watch_console, args=(self.base / "s/console.sock", deadline))
        log = (self.base / "launcher.log").open("wb")
        t0 = time.time()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        console.start()
        try:
            if not self.started_event.wait(120):
                raise RuntimeError(f"the domain never started; see {self.base / 'launcher.log'}")
            console.join(120)
            time.sleep(0.5)  # let the launcher settle (capabilities saved, helpers idle)
            memory = _memory(process.pid)
            helpers = {}
            for child in _children(process.pid):
                comm = Path(f"/proc/{child}/comm").read_text().strip()
                helpers[comm] = _memory(child)["rssMiB"]
            client = LauncherClient(self.base / "s/launcher.sock")
            ping = client.ping()
            client.command("kill")
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            notify.stop()
            log.close()
        assert self.started_at is not None
        result = {
            "runningSeconds": round(self.started_at - t0, 3),
            "firstConsoleByteSeconds": round(self.first_byte_at - t0, 3) if self.first_byte_at else None,
            "guestMarkerSeconds": round(self.marker_at - t0, 3) if self.marker_at else None,
            "launcher": memory,
            "helpersRssMiB": helpers,
            "runtime": ping["runtime"],
            "domainType": ping["domainType"],
        }
        shutil.rmtree(self.base, ignore_errors=True)
        return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks launcher", description=__doc__.split("\n")[0])
    parser.add_argument("--warm-runs", type=int, default=5)
    args = parser.parse_args(argv)
    build = subprocess.run([str(REPO / "images/guest/build.sh")], check=True, capture_output=True, text=True)
    guest = Path(build.stdout.strip().splitlines()[-1])
    cache = Path(tempfile.mkdtemp(prefix="pvb-cache-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(cache, LAUNCHER_UID, LAUNCHER_UID)
    try:
        cold = Run(guest, cache, "cold").measure()
        print(f"cold: {cold}", flush=True)
        warm = []
        for i in range(args.warm_runs):
            warm.append(Run(guest, cache, f"warm{i}").measure())
            print(f"warm {i}: {warm[-1]}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    def median(key: str) -> float | None:
        values = [w[key] for w in warm if w[key] is not None]
        return round(statistics.median(values), 3) if values else None

    figures = {
        "guest": "tiny (Debian kernel + busybox initramfs), kernel boot, 96 MiB, 1 vCPU",
        "domainType": cold["domainType"],
        "libvirtRuntime": cold["runtime"],
        "cold": {k: cold[k] for k in ("runningSeconds", "firstConsoleByteSeconds", "guestMarkerSeconds")},
        "warm": {
            "runs": len(warm),
            "runningSeconds": _results.summary([w["runningSeconds"] for w in warm]) if warm else None,
            "firstConsoleByteSecondsP50": median("firstConsoleByteSeconds"),
            "guestMarkerSecondsP50": median("guestMarkerSeconds"),
        },
        "launcherRssMiB": max(w["launcher"]["rssMiB"] for w in [cold, *warm]),
        "launcherPssMiB": max(w["launcher"]["pssMiB"] for w in [cold, *warm]),
        "helpersRssMiB": cold["helpersRssMiB"],
        "aims": {"warmRunningSeconds": 0.5, "launcherRssMiB": 40, "kubevirtOverheadEstimateMiB": 240},
    }
    _results.write("launcher", figures)
    return 0
