"""Runs a real virt-launcher (and so a real QEMU guest) in a scratch pod layout, and makes sure it is gone after.

Every QEMU a test starts is recorded by pid (from libvirt's pidfile in that launcher's private dir);
``close()`` kills the launcher and then fails loudly if any recorded QEMU is still alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from virt_launcher.runtime.client import LauncherClient
from virt_launcher.runtime.guard import qemu_pid

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "images/guest/build.sh"
KERNEL_ARGS = "console=ttyS0 quiet"


def build_guest_image() -> Path:
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=900)
    return Path(out.stdout.strip().splitlines()[-1])


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Console:
    """A client of the launcher's console socket that keeps everything it has read."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.2)
        self.data = b""
        self.closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                self.data += chunk
        self.closed = True

    @property
    def text(self) -> str:
        with self._lock:
            return self.data.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 60.0, count: int = 1) -> re.Match[str]:
        """The ``count``-th match of ``pattern`` in the console output, waiting for it."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            matches = list(regex.finditer(self.text))
            if len(matches) >= count:
                return matches[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"console never showed {pattern!r} x{count}; last output:\n{self.text[-1500:]}")
            time.sleep(0.05)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class LauncherRun:
    """One launcher in its own scratch directories (short paths: unix sockets are limited to 107 bytes)."""

    def __init__(self, guest: Path, cache_dir: Path) -> None:
        self.guest = guest
        self.cache_dir = cache_dir
        self.base = Path(tempfile.mkdtemp(prefix="pvt", dir="/tmp"))
        self.base.chmod(0o755)
        self.sockets = self.base / "s"
        self.private = self.base / "p"
        self.volumes = self.base / "v"
        self.volumes.mkdir()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / "launcher.log"
        self.qemu_pids: set[int] = set()
        self.domain_name: str | None = None
        self.consoles: list[Console] = []
        self.client = LauncherClient(self.sockets / "launcher.sock")

    # --- pod volumes --------------------------------------------------------------------------------------

    def add_kernel_boot(self) -> None:
        boot = self.volumes / ".kernel-boot/boot"
        boot.mkdir(parents=True)
        shutil.copy(self.guest / "vmlinuz", boot / "vmlinuz")
        shutil.copy(self.guest / "initrd.img", boot / "initrd.img")

    def add_container_disk(self, volume: str) -> None:
        disk = self.volumes / volume / "disk"
        disk.mkdir(parents=True)
        shutil.copy(self.guest / "tiny.qcow2", disk / "tiny.qcow2")

    # --- the process --------------------------------------------------------------------------------------

    def start(self, vmi: dict[str, Any] | None = None, *extra: str, netns: str | None = None) -> None:
        argv = [
            sys.executable, "-m", "virt_launcher", "--sockets-dir", str(self.sockets), "--private-dir",
            str(self.private), "--volumes-dir", str(self.volumes), "--cache-dir", str(self.cache_dir),
            "--log-format", "text", *extra,
        ]  # fmt: skip
        if vmi is not None:
            vmi_file = self.base / "vmi.json"
            vmi_file.write_text(json.dumps(vmi))
            argv += ["--vmi", str(vmi_file)]
            meta = vmi.get("metadata", {})
            self.domain_name = f"{meta.get('namespace', 'default')}_{meta.get('name', 'vmi')}"
        if netns is not None:
            # Like a pod given the tun device: the launcher's user may open /dev/net/tun (0600 on this host),
            # through a node of its own bound over it in a private mount namespace; the host's stays as it is.
            devdir = self.base / "dev"
            devdir.mkdir()
            script = (
                'mount -t tmpfs none "$1" && mknod -m 666 "$1/tun" c 10 200 && mount --bind "$1/tun" /dev/net/tun'
                ' && shift && exec "$@"'
            )
            argv = ["ip", "netns", "exec", netns, "unshare", "-m", "sh", "-c", script, "sh", str(devdir), *argv]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.wait_for_socket()

    def wait_for_socket(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.sockets / "launcher.sock").exists():
                with contextlib.suppress(OSError):
                    self.client.ping()
                    return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"launcher exited {self.process.returncode}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"command socket never appeared:\n{self.log}")

    def sync(self, vmi: dict[str, Any], qemu_capabilities: dict[str, str] | None = None) -> dict[str, Any]:
        meta = vmi.get("metadata", {})
        self.domain_name = f"{meta.get('namespace', 'default')}_{meta.get('name', 'vmi')}"
        return self.client.sync(vmi, qemu_capabilities=qemu_capabilities)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pidfile(self) -> Path | None:
        if self.domain_name is None:
            return None
        return self.private / "libvirt/run/qemu" / f"{self.domain_name}.pid"

    def remember_qemu(self) -> int | None:
        pid = qemu_pid(self.pidfile) if self.pidfile else None
        if pid is not None:
            self.qemu_pids.add(pid)
        return pid

    def wait_running(self, timeout: float = 60.0) -> int:
        """Waits for the domain to run and returns QEMU's pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"launcher exited {self.process.returncode}:\n{self.log}")
            try:
                phase = self.client.domain()["phase"]
            except OSError:
                phase = None  # the launcher may be exiting; the poll above tells on the next round
            if phase == "Running":
                pid = self.remember_qemu()
                if pid is not None:
                    return pid
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"launcher exited {self.process.returncode}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"domain never ran:\n{self.log}")

    def console(self) -> Console:
        console = Console(self.sockets / "console.sock")
        self.consoles.append(console)
        return console

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.remember_qemu()
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        self.remember_qemu()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher did not exit within {timeout}s:\n{self.log}") from None

    def events(self) -> list[dict[str, Any]]:
        return list(self.client.events()["events"])

    def qemus_of_this_run(self) -> set[int]:
        """QEMUs whose command line names this run's libvirt root (a path no other run shares)."""
        marker = f"{self.private}/libvirt/lib/qemu/domain-".encode()
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        found.add(int(entry.name))
        return found

    def close(self) -> None:
        """Kills whatever is left and fails if a QEMU this run started survived."""
        self.remember_qemu()
        self.qemu_pids |= self.qemus_of_this_run()
        for console in self.consoles:
            console.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        survivors = self.wait_qemus_gone(10.0)
        survivors += [pid for pid in self.qemus_of_this_run() if pid not in survivors and pid_alive(pid)]
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not survivors:
            shutil.rmtree(self.base, ignore_errors=True)
        assert not survivors, f"QEMU {survivors} outlived its launcher (files kept in {self.base})"

    def wait_qemus_gone(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            alive = [pid for pid in self.qemu_pids if pid_alive(pid)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)


def tiny_vmi(name: str, **spec: Any) -> dict[str, Any]:
    """A VMI of the tiny guest: 96 MiB, one vCPU, kernel boot; ``domain=`` replaces the whole domain spec."""
    domain: dict[str, Any] = {
        "memory": {"guest": "96Mi"},
        "devices": {"autoattachGraphicsDevice": False},
        "firmware": {
            "kernelBoot": {
                "kernelArgs": KERNEL_ARGS,
                "container": {"image": "tiny-kernel", "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.img"},
            }
        },
    }
    domain = spec.pop("domain", domain)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "vmtest", "uid": f"uid-{name}"},
        "spec": {"domain": domain, "terminationGracePeriodSeconds": 10, **spec},
    }
