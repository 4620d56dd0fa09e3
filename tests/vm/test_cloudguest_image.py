"""The cloud guest image boots under QEMU TCG: cloud-init applies a NoCloud seed and a password logs in.

The image comes from images/cloudguest/build.sh (cached; a cold build takes minutes). The guest runs on a
throwaway qcow2 overlay through libvirt's embedded QEMU driver, with its serial console on a unix socket
and the seed on an ISO labelled cidata, written by the launcher's own ISO code.

libvirt's embedded driver refuses to run as root without a ``libvirt-qemu`` user, so when the test runs
as root the libvirt side lives in a child process (this file run as a script) under the launcher's
UID 107, as in a launcher pod; the test talks to it with JSON lines on its stdin and stdout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree

from virt_launcher.prepare.iso import write_iso
from virt_launcher.runtime.guard import kill_qemu, qemu_pid
from virt_launcher.runtime.libvirt_backend import start_event_loop

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "images/cloudguest/build.sh"
DOMAIN = "cloudguest-test"
HOSTNAME = "cloudguest"
USER, PASSWORD = "podvirt", "cloud-guest-test-pw"
DONE_MARKER = "PODVIRT-CLOUDINIT-DONE"
LAUNCHER_UID = 107
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # bash's bracketed-paste switches, colours


@pytest.fixture(scope="module")
def cloudguest() -> Path:
    """The directory build.sh prints (building the image the first time, which takes minutes)."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=3000)
    return Path(out.stdout.strip().splitlines()[-1])


# --- the guest's inputs -------------------------------------------------------------------------------------


def user_data(ssh_key: str) -> str:
    config = {
        "users": [
            {
                "name": USER,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": False,
                "plain_text_passwd": PASSWORD,
                "ssh_authorized_keys": [ssh_key],
            }
        ],
        "ssh_pwauth": True,
        "runcmd": [f"echo {DONE_MARKER} > /dev/ttyS0"],
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def ssh_key_pair() -> tuple[bytes, str]:
    """An OpenSSH private key and its authorized_keys line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " podvirt-test"


def domain_xml(disk: Path, seed: Path, console: Path) -> str:
    """A q35 BIOS guest under TCG: overlay and seed on virtio, user networking, console and agent sockets."""
    domain = etree.Element("domain", type="qemu")
    etree.SubElement(domain, "name").text = DOMAIN
    etree.SubElement(domain, "memory", unit="MiB").text = "1024"
    etree.SubElement(domain, "vcpu").text = "1"
    os_el = etree.SubElement(domain, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    etree.SubElement(os_el, "boot", dev="hd")
    features = etree.SubElement(domain, "features")
    etree.SubElement(features, "acpi")
    etree.SubElement(domain, "on_reboot").text = "destroy"
    devices = etree.SubElement(domain, "devices")
    for path, fmt, target, readonly in ((disk, "qcow2", "vda", False), (seed, "raw", "vdb", True)):
        el = etree.SubElement(devices, "disk", type="file", device="disk")
        etree.SubElement(el, "driver", name="qemu", type=fmt)
        etree.SubElement(el, "source", file=str(path))
        etree.SubElement(el, "target", dev=target, bus="virtio")
        if readonly:
            etree.SubElement(el, "readonly")
    nic = etree.SubElement(devices, "interface", type="user")
    etree.SubElement(nic, "model", type="virtio")
    serial = etree.SubElement(devices, "serial", type="unix")
    etree.SubElement(serial, "source", mode="bind", path=str(console))
    etree.SubElement(serial, "target", port="0")
    channel = etree.SubElement(devices, "channel", type="unix")
    etree.SubElement(channel, "source", mode="bind")
    etree.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    rng = etree.SubElement(devices, "rng", model="virtio")
    etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    etree.SubElement(devices, "memballoon", model="none")
    return etree.tostring(domain, encoding="unicode")


# --- the libvirt side (a child process) ---------------------------------------------------------------------


def serve_domain(root: Path, xml: Path) -> int:
    """Defines and starts the domain, answers agent commands read from stdin, and destroys it at EOF."""

    def reply(message: dict[str, Any]) -> None:
        print(json.dumps(message), flush=True)

    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/qemu.conf").write_text('stdio_handler = "file"\n')  # no virtlogd
    start_event_loop()
    try:
        conn = libvirt.open(f"qemu:///embed?root={root}")
    except libvirt.libvirtError as exc:
        reply({"error": str(exc)})
        return 1
    dom = None
    try:
        dom = conn.defineXML(xml.read_text())
        dom.create()
        reply({"started": True})
        for line in sys.stdin:
            try:
                answer = libvirt_qemu.qemuAgentCommand(dom, line.strip(), 10, 0)
                reply({"reply": json.loads(answer)})
            except libvirt.libvirtError as exc:
                reply({"error": str(exc)})
    except libvirt.libvirtError as exc:
        reply({"error": str(exc)})
        return 1
    finally:
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
        conn.close()
    return 0


class DomainProcess:
    """The test's handle on the child running ``serve_domain``."""

    def __init__(self, root: Path, xml: Path, uid: int | None) -> None:
        self.pidfile = root / "run/qemu" / f"{DOMAIN}.pid"
        ids: dict[str, Any] = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
        # libvirt keeps per-user state under $HOME and the XDG directories: all of it inside ``root``.
        home = {"HOME": str(root), "XDG_CACHE_HOME": str(root / "cache"), "XDG_CONFIG_HOME": str(root / "config")}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-domain", str(root), str(xml)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **home},
            **ids,
        )

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the libvirt child exited ({self.process.wait()})"
        message: dict[str, Any] = json.loads(line)
        return message

    def wait_started(self) -> None:
        message = self._read()
        assert message.get("started"), message

    def agent(self, command: str, timeout: float) -> dict[str, Any]:
        """An agent command's reply, retried until the agent answers or ``timeout`` passes."""
        assert self.process.stdin is not None
        deadline = time.monotonic() + timeout
        while True:
            self.process.stdin.write(json.dumps({"execute": command}) + "\n")
            self.process.stdin.flush()
            message = self._read()
            if "reply" in message or time.monotonic() > deadline:
                return message
            time.sleep(1)

    def stop(self) -> None:
        """Ends the child (which destroys the domain); QEMU is killed here if it outlived it."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        kill_qemu(self.pidfile)
        assert qemu_pid(self.pidfile) is None, "QEMU outlived the test"


class SerialConsole:
    """Reads a unix-socket serial console on a thread and keeps everything; expectations search forward."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self._data = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.pos = 0

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._data += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return self._data.decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` after the previous match; the console is read past it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match
            if time.monotonic() > deadline:
                tail = self.text[-3000:]
                raise AssertionError(f"console never showed {pattern!r} in {timeout:.0f} s; last output:\n{tail}")
            time.sleep(0.1)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r")

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Runs a shell command at the logged-in prompt; its exit status and output."""
        trailer = '; echo "@@RC=$?@@"'
        self.send(command + trailer)
        # The terminal echoes the command line with `$?` unexpanded: only the shell's output matches.
        # Match only the unexpanded marker: a slow serial line may redraw the echo with extra spaces.
        echoed = self.expect(re.escape('"@@RC=$?@@"'), timeout)
        status = self.expect(r"@@RC=(\d+)@@", timeout)
        output = ANSI_ESCAPE.sub("", self.text[echoed.end() : status.start()]).replace("\r", "")
        return int(status.group(1)), output

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


# --- the test -----------------------------------------------------------------------------------------------


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short path (unix socket paths are limited), owned by the UID the libvirt child runs as."""
    path = Path(tempfile.mkdtemp(prefix="pvcg", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(path, LAUNCHER_UID, LAUNCHER_UID)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, LAUNCHER_UID, LAUNCHER_UID)


@pytest.mark.timeout(3600)
def test_cloudguest_boots_applies_nocloud_seed_and_accepts_a_password_login(cloudguest: Path, scratch: Path) -> None:
    manifest = json.loads((cloudguest / "manifest.json").read_text())
    # The cache may sit in a home directory the child cannot enter: link (or copy) the image in.
    base = scratch / "base.qcow2"
    try:
        os.link(cloudguest / manifest["disk"], base)
    except OSError:
        shutil.copyfile(cloudguest / manifest["disk"], base)
    disk = scratch / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)], check=True)
    seed = scratch / "seed.iso"
    meta = f'instance-id: "{DOMAIN}"\nlocal-hostname: "{HOSTNAME}"\n'
    private_key, public_key = ssh_key_pair()
    write_iso(seed, "cidata", {"meta-data": meta.encode(), "user-data": user_data(public_key).encode()}, "test")
    xml = scratch / "domain.xml"
    xml.write_text(domain_xml(disk, seed, scratch / "console.sock"))
    (scratch / "libvirt").mkdir()
    for path in (disk, seed, xml, scratch / "libvirt"):
        give(path)

    domain = DomainProcess(scratch / "libvirt", xml, LAUNCHER_UID if os.geteuid() == 0 else None)
    console = None
    try:
        domain.wait_started()
        started = time.monotonic()
        console = SerialConsole(scratch / "console.sock")

        console.expect(rf"{HOSTNAME} login:", timeout=600)
        to_login = time.monotonic() - started
        console.expect(DONE_MARKER, timeout=600)
        to_cloudinit = time.monotonic() - started
        print(f"\nTCG boot after QEMU started: login prompt {to_login:.1f} s, cloud-init runcmd {to_cloudinit:.1f} s")

        console.send(USER)
        console.expect(r"Password:", timeout=60)
        console.send(PASSWORD)
        # login(1) discards typeahead once it has checked the password: type only at the shell's prompt.
        console.expect(rf"{USER}@{HOSTNAME}:~\$ ", timeout=120)
        rc, out = console.run("id -un")
        assert rc == 0 and re.search(rf"^{USER}$", out, re.MULTILINE), out

        rc, out = console.run("cloud-init status --long", timeout=120)
        assert rc == 0, out
        assert "status: done" in out, out
        assert "DataSourceNoCloud" in out, out
        rc, out = console.run("systemctl is-active ssh qemu-guest-agent systemd-networkd")
        assert rc == 0, out
        # The seed's key logs in through sshd (the guest to itself: QEMU user networking forwards no port).
        key_b64 = base64.b64encode(private_key).decode()
        rc, out = console.run(f"umask 077; echo {key_b64} | base64 -d > ~/.ssh/test_key")
        assert rc == 0, out
        ssh = "ssh -i ~/.ssh/test_key -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
        rc, out = console.run(f"{ssh} {USER}@localhost 'echo ssh-as-$(id -un)-ok'", timeout=120)
        assert rc == 0 and f"ssh-as-{USER}-ok" in out, out
        # Made on this first boot, not baked into the image.
        rc, out = console.run("test -s /etc/machine-id && ls /etc/ssh/ssh_host_ed25519_key.pub && sudo -n true")
        assert rc == 0, out

        assert domain.agent("guest-ping", timeout=60) == {"reply": {"return": {}}}
        interfaces = domain.agent("guest-network-get-interfaces", timeout=10)["reply"]["return"]
        addresses = [a["ip-address"] for i in interfaces for a in i.get("ip-addresses", [])]
        assert "10.0.2.15" in addresses, interfaces  # what QEMU user networking's DHCP hands out
    finally:
        if console is not None:
            console.close()
        domain.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-domain"]:
    sys.exit(serve_domain(Path(sys.argv[2]), Path(sys.argv[3])))
