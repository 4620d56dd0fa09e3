"""The ``virt-launcher-capabilities`` command: probes this image's QEMU once and writes libvirt's
capabilities cache files into a directory, for the node's launchers (see :mod:`podvirt_common.qemucaps`).

    virt-launcher-capabilities DIR [--user UID:GID] [--arch ARCH]

virt-handler's DaemonSet runs it as an init container from the launcher image, into a volume the
handler reads; the handler sends the files with every spec hand-over, so launchers skip libvirt's
probe (~1.5 s of CPU each). Run it as the launchers' user with the launchers' view of ``/dev/kvm``:
libvirt records whether KVM was usable and probes again in a launcher where that differs. Started as
root, it probes as ``--user`` (default 107:107, the launchers' user). Exit status 0 when DIR holds the
files, 1 when libvirt could not probe (the message says why).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from podvirt_common import qemucaps
from virt_launcher.cli import DEFAULT_USER, drop_privileges, use_home
from virt_launcher.layout import MAX_UNIX_SOCKET_PATH

#: libvirt's name for an architecture, by ``platform.machine()``.
ARCHES = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="virt-launcher-capabilities", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", type=Path, help="where the capabilities files go")
    p.add_argument("--user", default=DEFAULT_USER, help="UID:GID to probe as when started as root")
    p.add_argument("--arch", default=ARCHES.get(platform.machine(), platform.machine()), help="guest architecture")
    return p.parse_args(argv)


def probe(root: Path, arch: str) -> dict[str, str]:
    """libvirt's capabilities files for ``arch``'s default QEMU binary and every other QEMU binary
    installed, probed in a fresh embedded root."""
    import libvirt  # noqa: PLC0415 - after the privilege drop

    from virt_launcher.runtime.embed import CAPS_SUBDIR, prepare_root  # noqa: PLC0415
    from virt_launcher.runtime.libvirt_backend import start_event_loop  # noqa: PLC0415

    prepare_root(root, None)
    start_event_loop()
    conn = libvirt.open(f"qemu:///embed?root={root}")
    try:
        conn.getDomainCapabilities(None, arch, None, "qemu", 0)
        # The host's capabilities probe every QEMU binary there is (qemu-system-i386 beside x86_64): a
        # launcher's libvirt builds them on its first CPU statistics, seconds without these files.
        conn.getCapabilities()
    finally:
        conn.close()
    return qemucaps.read_dir(root / CAPS_SUBDIR)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory: Path = args.directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Under the output directory: the init container's only writable place, and a short path (libvirt
    # puts QEMU's monitor socket under the root).
    root = Path(tempfile.mkdtemp(prefix=".probe-", dir=directory))
    monitor = root / "lib/qemu/qmp-xxxxxx/qmp.monitor"  # where libvirt talks to the QEMU it probes
    if len(str(monitor).encode()) > MAX_UNIX_SOCKET_PATH:
        root.rmdir()
        print(
            f"virt-launcher-capabilities: {directory} is too long a path for libvirt's socket {monitor}",
            file=sys.stderr,
        )
        return 2
    try:
        if os.geteuid() == 0:
            drop_privileges(args.user, [directory])
        use_home(root / "home")
        try:
            files = probe(root, args.arch)
        except Exception as exc:  # libvirt's errors are reported, not traced
            problem = f"libvirt could not probe QEMU for {args.arch}: {exc}"
            print(f"virt-launcher-capabilities: {problem}", file=sys.stderr)
            return 1
        if not files:
            print(f"virt-launcher-capabilities: libvirt wrote no capabilities for {args.arch}", file=sys.stderr)
            return 1
        written = qemucaps.write_files(directory, files, replace=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"virt-launcher-capabilities: {', '.join(written)} in {directory} ({time.monotonic() - started:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
