"""The cloud guest image boots under QEMU TCG: cloud-init applies a NoCloud seed and a password logs in.

The image comes from images/cloudguest/build.sh (cached; a cold build takes minutes). The guest runs on a
throwaway qcow2 overlay through libvirt's embedded QEMU driver, with its serial console on a unix socket
and the seed on an ISO labelled cidata, written by the launcher's own ISO code.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree

from virt_launcher.prepare.iso import write_iso
from virt_launcher.runtime.libvirt_backend import start_event_loop

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "images/cloudguest/build.sh"
USER, PASSWORD = "podvirt", "cloud-guest-test-pw"
DONE_MARKER = "PODVIRT-CLOUDINIT-DONE"
QEMU_CONF = 'stdio_handler = "file"\nuser = "root"\ngroup = "root"\n'


@pytest.fixture(scope="module")
def cloudguest() -> Path:
    """The directory build.sh prints (building the image the first time, which takes minutes)."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=3000)
    return Path(out.stdout.strip().splitlines()[-1])


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
                raise AssertionError(
                    f"console never showed {pattern!r} in {timeout:.0f} s; last output:\n{self.text[-3000:]}"
                )
            time.sleep(0.1)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r")

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Runs a shell command at the logged-in prompt; its exit status and output."""
        trailer = '; echo "@@RC=$?@@"'
        self.send(command + trailer)
        # The terminal echoes the command line with `$?` unexpanded: only the shell's output matches.
        echoed = self.expect(re.escape(trailer), timeout)
        status = self.expect(r"@@RC=(\d+)@@", timeout)
        return int(status.group(1)), self.text[echoed.end() : status.start()]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


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


def ssh_public_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " podvirt-test"


def domain_xml(name: str, disk: Path, seed: Path, console: Path) -> str:
    domain = etree.Element("domain", type="qemu")
    etree.SubElement(domain, "name").text = name
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


def agent_command(dom: libvirt.virDomain, command: str, timeout: float) -> dict[str, object]:
    """A guest agent command through libvirt, retried until the agent answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply: dict[str, object] = json.loads(
                libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": command}), 10, 0)
            )
            return reply
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pvcg", dir="/tmp"))  # short: unix socket paths are limited
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(3600)
def test_cloudguest_boots_applies_nocloud_seed_and_accepts_a_password_login(cloudguest: Path, scratch: Path) -> None:
    manifest = json.loads((cloudguest / "manifest.json").read_text())
    disk = scratch / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(cloudguest / manifest["disk"]), str(disk)],
        check=True,
    )
    seed = scratch / "seed.iso"
    meta = 'instance-id: "cloudguest-test"\nlocal-hostname: "cloudguest"\n'
    write_iso(seed, "cidata", {"meta-data": meta.encode(), "user-data": user_data(ssh_public_key()).encode()}, "test")
    root = scratch / "libvirt"
    (root / "etc").mkdir(parents=True)
    (root / "etc/qemu.conf").write_text(QEMU_CONF)

    start_event_loop()
    conn = libvirt.open(f"qemu:///embed?root={root}")
    dom = None
    console = None
    try:
        dom = conn.defineXML(domain_xml("cloudguest-test", disk, seed, scratch / "console.sock"))
        started = time.monotonic()
        dom.create()
        console = SerialConsole(scratch / "console.sock")

        console.expect(r"cloudguest login:", timeout=600)
        to_login = time.monotonic() - started
        console.expect(DONE_MARKER, timeout=600)
        to_cloudinit = time.monotonic() - started
        print(f"\nTCG boot: login prompt after {to_login:.1f} s, cloud-init runcmd after {to_cloudinit:.1f} s")

        console.send(USER)
        console.expect(r"Password:", timeout=60)
        console.send(PASSWORD)
        rc, out = console.run("id -un")
        assert (rc, out.split()[-1]) == (0, USER), out

        rc, out = console.run("cloud-init status --long", timeout=120)
        assert rc == 0, out
        assert re.search(r"status: done", out), out
        assert re.search(r"detail:\s*\n?\s*DataSourceNoCloud", out), out

        rc, out = console.run("systemctl is-active ssh qemu-guest-agent systemd-networkd")
        assert rc == 0, out
        rc, out = console.run(f"cat /home/{USER}/.ssh/authorized_keys")
        assert rc == 0 and "podvirt-test" in out, out
        # Made on this first boot, not baked into the image.
        rc, out = console.run("test -s /etc/machine-id && ls /etc/ssh/ssh_host_ed25519_key.pub && sudo -n true")
        assert rc == 0, out

        assert agent_command(dom, "guest-ping", timeout=60) == {"return": {}}
        addresses = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
        ipv4 = [a["addr"] for iface in addresses.values() for a in iface["addrs"] or [] if a["type"] == 0]
        assert "10.0.2.15" in ipv4, addresses  # QEMU user networking's DHCP answer
    finally:
        if console is not None:
            console.close()
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
        conn.close()
