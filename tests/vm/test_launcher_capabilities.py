"""The node's QEMU capabilities, sent with the spec, spare a launcher libvirt's probe; ones that do not
fit this QEMU are probed afresh (libvirt checks them), so a wrong file costs time, never the guest.

Real libvirt and QEMU: ``virt-launcher-capabilities`` probes as virt-handler's init container does, and
the file libvirt keeps afterwards tells whether it used the one it was given (it rewrites a file it
found stale). The files cover every QEMU binary installed, not only the guest's: libvirt probes them
all for the host's capabilities, which it builds on a launcher's first statistics call (the node
handler's first metrics scrape of a VMI took 1.5 s probing qemu-system-i386 without them)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podvirt_common import qemucaps

from .harness import LauncherRun, tiny_vmi

pytestmark = pytest.mark.vm

MARK = "<!-- handed over by the node -->"
CAPS = Path("libvirt/cache/qemu/capabilities")


@pytest.fixture(scope="module")
def node_capabilities() -> Iterator[dict[str, str]]:
    out = Path(tempfile.mkdtemp(prefix="pvt-nc-", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "virt_launcher.capabilities", str(out)], check=True)
        files = qemucaps.read_dir(out)
        # libvirt names each file by the SHA-256 of the binary's path; both x86 emulators are there.
        binaries = ("/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-system-i386")
        assert {hashlib.sha256(b.encode()).hexdigest() + ".xml" for b in binaries} <= set(files)
        yield files
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def empty_cache() -> Iterator[Path]:
    """A launcher cache dir with nothing in it: only what the spec brings can spare the probe."""
    path = Path(tempfile.mkdtemp(prefix="pvt-ec-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(path, 107, 107)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_with(run: LauncherRun, files: dict[str, str]) -> dict[str, str]:
    run.add_kernel_boot()
    run.start()
    run.sync(tiny_vmi("caps"), qemu_capabilities=files)
    run.wait_running()
    # Statistics make libvirt build the host's capabilities, which cover every QEMU binary installed.
    assert run.client.stats()["cpu"]["timeNs"] > 0
    return {name: (run.private / CAPS / name).read_text() for name in files}


def test_a_launcher_uses_the_capabilities_sent_with_its_spec(
    launcher: Callable[..., LauncherRun], node_capabilities: dict[str, str], empty_cache: Path
) -> None:
    marked = {name: text + MARK for name, text in node_capabilities.items()}
    kept = start_with(launcher(empty_cache), marked)
    assert kept == marked, "libvirt probed QEMU again instead of using the node's file"


def test_capabilities_that_do_not_fit_this_qemu_are_probed_afresh(
    launcher: Callable[..., LauncherRun], node_capabilities: dict[str, str], empty_cache: Path
) -> None:
    stale = {
        name: re.sub(r"<qemuctime>\d+<", "<qemuctime>12345<", text) + MARK for name, text in node_capabilities.items()
    }
    kept = start_with(launcher(empty_cache), stale)
    for name, text in kept.items():
        assert MARK not in text and "<qemuctime>12345<" not in text, f"libvirt kept the stale {name}"
