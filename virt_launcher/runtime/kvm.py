"""Is KVM really usable here? Opening /dev/kvm is not enough (nested KVM can exist and still fail).

The probe creates a VM with one vCPU, runs a ``hlt`` in real mode, and round-trips the host's
feature MSRs into the vCPU the way QEMU does at start (this is where broken nested setups fail,
e.g. "failed to set MSR 0x10a"). It runs in a child process with a timeout, because a broken
KVM_RUN may also just hang. Run directly: ``python -m virt_launcher.runtime.kvm``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_MSR_FEATURE_INDEX_LIST = 0xC004AE0A
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_GET_MSRS = 0xC008AE88
KVM_SET_MSRS = 0x4008AE89
KVM_EXIT_HLT = 5
PROBE_TIMEOUT = 3.0
DEV_KVM = "/dev/kvm"


def _feature_msrs(kvm: int) -> list[tuple[int, int]]:
    count = bytearray(struct.pack("I", 0))
    try:
        fcntl.ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, count, True)
    except OSError as exc:
        if exc.errno != errno.E2BIG:
            return []
    n = struct.unpack_from("I", count)[0]
    buf = bytearray(struct.pack("I", n) + bytes(4 * n))
    fcntl.ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, buf, True)
    indices = struct.unpack_from(f"{n}I", buf, 4)
    msrs = bytearray(struct.pack("II", n, 0) + b"".join(struct.pack("IIQ", i, 0, 0) for i in indices))
    got = fcntl.ioctl(kvm, KVM_GET_MSRS, msrs, True)
    return [struct.unpack_from("IIQ", msrs, 8 + 16 * k)[::2] for k in range(got)]


def probe_in_process() -> str | None:
    """None when KVM ran a guest instruction and accepted the host's feature MSRs, else why not."""
    kvm = os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC)
    if fcntl.ioctl(kvm, KVM_GET_API_VERSION) != 12:
        return "unexpected KVM API version"
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, 0x1000)
    memory[0:1] = b"\xf4"  # hlt
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("IIQQQ", 0, 0, 0, 0x1000, address))
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs, True)
    struct.pack_into("QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base 0, selector 0
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = bytearray(144)
    struct.pack_into("QQ", regs, 16 * 8, 0, 2)  # rip 0, rflags 2
    fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
    features = _feature_msrs(kvm)
    if features:
        entries = b"".join(struct.pack("IIQ", index, 0, value) for index, value in features)
        accepted = fcntl.ioctl(vcpu, KVM_SET_MSRS, bytearray(struct.pack("II", len(features), 0) + entries), True)
        if accepted != len(features):
            index = features[accepted][0]
            return f"the vCPU refuses the host's feature MSR {index:#x} (broken nested virtualization)"
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    exit_reason = struct.unpack_from("I", run, 8)[0]
    if exit_reason != KVM_EXIT_HLT:
        return f"a test guest exited with reason {exit_reason}, not HLT"
    return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def kvm_usable(cache_dir: Path | None = None) -> tuple[bool, str]:
    """(usable, why). Cheap when /dev/kvm is absent or not ours; otherwise a ~0.1 s child-process probe,
    cached per boot in ``cache_dir``."""
    try:
        os.close(os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return False, f"{DEV_KVM}: {exc.strerror}"
    cache = cache_dir / "kvm-probe.json" if cache_dir else None
    if cache is not None:
        try:
            cached = json.loads(cache.read_text())
            if cached.get("bootId") == _boot_id():
                return bool(cached["usable"]), str(cached["why"])
        except (OSError, ValueError, KeyError):
            pass
    started = time.monotonic()
    try:
        argv = [sys.executable, "-m", "virt_launcher.runtime.kvm"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
        usable, why = result.returncode == 0, result.stdout.strip() or result.stderr.strip()[-200:]
    except subprocess.TimeoutExpired:
        usable, why = False, f"a test guest did not finish within {PROBE_TIMEOUT}s"
    why = why or f"probed in {time.monotonic() - started:.2f}s"
    if cache is not None:
        with contextlib.suppress(OSError):
            cache.write_text(json.dumps({"bootId": _boot_id(), "usable": usable, "why": why}))
    return usable, why


def main() -> int:
    try:
        problem = probe_in_process()
    except OSError as exc:
        problem = f"KVM ioctl failed: {exc}"
    print(problem or "KVM works")
    return 0 if problem is None else 1


if __name__ == "__main__":
    sys.exit(main())
