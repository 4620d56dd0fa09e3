"""The tiny guest boots through virt-launcher and obeys it: console, seeds, lifecycle commands, exit codes.

Each test boots a real QEMU (TCG here) and checks what the guest itself prints on its serial console.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from virt_launcher.runtime.client import LauncherClientError

from .harness import REPO, LauncherRun, pid_alive, tiny_vmi

pytestmark = pytest.mark.vm

MakeLauncher = Callable[[], LauncherRun]


def event_types(run: LauncherRun) -> list[str]:
    return [f"{e['type']}/{e['reason']}" for e in run.events()]


def test_kernel_boot_console_shows_output_and_runs_typed_commands(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("kboot"))
    run.wait_running()
    console = run.console()
    console.wait_for("PODVIRT-GUEST-READY")
    console.send("echo typed-$((6 * 7))")
    console.wait_for("typed-42")
    assert "PODVIRT-GUEST-BOOT" in run.client.console_log()
    info = run.client.domain()
    assert (info["phase"], info["state"], info["name"]) == ("Running", "Running", "vmtest_kboot")
    assert run.client.stats()["cpu"]["timeNs"] > 0
    assert "Started/Booted" in event_types(run)


def test_vnc_socket_speaks_rfb_and_a_guest_without_agent_says_so(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    vmi = tiny_vmi("vnc")
    vmi["spec"]["domain"]["devices"]["autoattachGraphicsDevice"] = True
    run.start(vmi)
    run.wait_running()
    with socket.socket(socket.AF_UNIX) as vnc:
        vnc.settimeout(10)
        vnc.connect(str(run.sockets / "vnc.sock"))
        assert vnc.recv(12).startswith(b"RFB 003.")
    with pytest.raises(LauncherClientError) as exc:
        run.client.guest_info()
    assert (exc.value.status, exc.value.reason) == (503, "AgentUnavailable")


def test_launcher_shuts_the_guest_down_when_its_parent_dies(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    vmi_file = run.base / "vmi.json"
    vmi_file.write_text(json.dumps(tiny_vmi("orphaned", terminationGracePeriodSeconds=2)))
    run.domain_name = "vmtest_orphaned"
    # A parent that starts the launcher and then sleeps, standing in for the container runtime.
    argv = [sys.executable, "-m", "virt_launcher", "--sockets-dir", str(run.sockets), "--private-dir",
            str(run.private), "--volumes-dir", str(run.volumes), "--cache-dir", str(run.cache_dir), "--vmi",
            str(vmi_file)]  # fmt: skip
    script = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(600)"
    parent = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=REPO)
    try:
        run.wait_for_socket()
        qemu = run.wait_running()
        launcher_pid = run.client.ping()["pid"]
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while pid_alive(launcher_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(launcher_pid), "the launcher outlived its parent"
    assert run.wait_qemus_gone(10) == [] and not pid_alive(qemu)


def test_a_new_console_client_replaces_the_old_one(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("twoconsoles"))
    run.wait_running()
    first = run.console()
    first.wait_for("PODVIRT-GUEST-READY")
    second = run.console()
    deadline = time.monotonic() + 5
    while not first.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.closed
    second.send("echo second-$((1 + 1))")
    second.wait_for("second-2")


def test_container_disk_with_nocloud_seed_sets_hostname_and_runs_user_data(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_container_disk("rootdisk")
    vmi = tiny_vmi(
        "cdisk",
        domain={
            "memory": {"guest": "96Mi"},
            "devices": {
                "autoattachGraphicsDevice": False,
                "disks": [
                    {"name": "rootdisk", "disk": {"bus": "virtio"}, "bootOrder": 1},
                    {"name": "seed", "cdrom": {"bus": "sata"}},
                ],
                "interfaces": [{"name": "default", "masquerade": {}}],
            },
        },
        hostname="seeded-guest",
        volumes=[
            {"name": "rootdisk", "containerDisk": {"image": "tiny-disk"}},
            {"name": "seed", "cloudInitNoCloud": {"userData": "#!/bin/sh\necho user-data-ran-$((20 + 1))\n"}},
        ],
        networks=[{"name": "default", "pod": {}}],
    )
    run.start(vmi)
    run.wait_running()
    console = run.console()
    console.wait_for("PODVIRT-GUEST-READY", timeout=90)
    text = console.text
    assert "PODVIRT-SEED=nocloud" in text
    assert "PODVIRT-HOSTNAME=seeded-guest" in text
    assert "user-data-ran-21" in text
    # No privileged network setup ran here, so the interface falls back to QEMU user networking.
    console.wait_for(r"PODVIRT-IP=10\.0\.2\.15")
    # The guest writes to its overlay, never to the (read-only) container image.
    assert (run.private / "disks/rootdisk.qcow2").exists()


def test_config_drive_seed_on_a_kernel_boot_guest(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    vmi = tiny_vmi("cfgdrive")
    vmi["spec"]["domain"]["devices"]["disks"] = [{"name": "seed", "disk": {"bus": "virtio"}}]
    vmi["spec"]["volumes"] = [
        {"name": "seed", "cloudInitConfigDrive": {"userDataBase64": "IyEvYmluL3NoCmVjaG8gY29uZmlnLWRyaXZlLW9rCg=="}}
    ]
    run.start(vmi)
    run.wait_running()
    console = run.console()
    console.wait_for("PODVIRT-GUEST-READY")
    assert "PODVIRT-SEED=configdrive" in console.text
    assert "PODVIRT-HOSTNAME=cfgdrive" in console.text
    assert "config-drive-ok" in console.text


def test_sync_over_the_command_socket_then_pause_and_unpause(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start()
    assert run.client.domain()["phase"] == "WaitingForSpec"
    vmi = tiny_vmi("paused")
    run.sync(vmi)
    assert run.sync(vmi)["phase"] == "Running", "a repeated sync of the same spec is a no-op"
    other = tiny_vmi("paused")
    other["spec"]["domain"]["memory"]["guest"] = "128Mi"
    with pytest.raises(LauncherClientError) as conflict:
        run.client.sync(other)
    assert conflict.value.status == 409
    run.wait_running()
    console = run.console()
    console.wait_for("PODVIRT-GUEST-READY")
    assert run.client.command("pause")["state"] == "Paused"
    console.send("echo while-paused")
    time.sleep(1.5)
    assert "while-paused\r\n" not in console.text.split("echo while-paused")[-1]
    assert run.client.command("unpause")["state"] == "Running"
    console.wait_for("while-paused\r\n")
    assert {"Paused/Paused", "Resumed/Unpaused"} <= set(event_types(run))


def test_soft_reboot_and_reset_restart_the_guest_inside_the_same_qemu(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("reboots"))
    qemu = run.wait_running()
    console = run.console()
    console.wait_for("PODVIRT-GUEST-READY")
    run.client.command("softreboot")  # ACPI power button; libvirt restarts the guest instead of stopping it
    console.wait_for("PODVIRT-GUEST-BOOT", count=2, timeout=90)
    console.wait_for("PODVIRT-GUEST-READY", count=2, timeout=90)
    run.client.command("reset")
    console.wait_for("PODVIRT-GUEST-BOOT", count=3, timeout=90)
    assert run.remember_qemu() == qemu
    assert run.client.domain()["state"] == "Running"


def test_graceful_shutdown_exits_succeeded(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    # A grace period a loaded machine cannot overrun: expiry has its own test; this one is about the guest.
    run.start(tiny_vmi("graceful", terminationGracePeriodSeconds=90))
    qemu = run.wait_running()
    run.console().wait_for("PODVIRT-ACPI=handled")
    assert run.client.shutdown()["phase"] == "Stopping"
    assert run.wait_exit(120) == 0, run.log
    assert "domain finished (the guest shut down): exit code 0" in run.log
    assert not pid_alive(qemu)


def test_guest_poweroff_from_its_console_exits_succeeded(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("poweroff"))
    run.wait_running()
    console = run.console()
    console.wait_for("PODVIRT-GUEST-READY")
    console.send("poweroff -f")
    assert run.wait_exit(60) == 0


def test_kill_exits_failed(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("killed"))
    qemu = run.wait_running()
    run.client.command("kill")
    assert run.wait_exit(30) == 1
    assert not pid_alive(qemu)


def test_qemu_dying_under_the_guest_fails_the_vmi_and_says_why(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("crashed"))
    qemu = run.wait_running()
    os.kill(qemu, signal.SIGKILL)
    assert run.wait_exit(30) == 1
    assert "domain finished (the domain stopped: Failed): exit code 1" in run.log
    assert "domain event Stopped (Failed)" in run.log


def test_sigterm_destroys_a_guest_that_ignores_acpi_after_the_grace_period(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    vmi = tiny_vmi("stubborn", terminationGracePeriodSeconds=3)
    vmi["spec"]["domain"]["firmware"]["kernelBoot"]["kernelArgs"] += " podvirt.noacpi"
    run.start(vmi)
    qemu = run.wait_running()
    run.console().wait_for("PODVIRT-ACPI=ignored")
    started = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait_exit(30) == 1
    assert time.monotonic() - started >= 3, "destroyed before the grace period ended"
    assert "did not shut down within its grace period" in run.log
    assert not pid_alive(qemu)


def test_qemu_dies_with_a_sigkilled_launcher(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    run.start(tiny_vmi("orphan"))
    qemu = run.wait_running()
    run.signal(signal.SIGKILL)
    run.wait_exit(10)
    assert run.wait_qemus_gone(10) == [], "the watchdog did not kill QEMU"
    assert not pid_alive(qemu)


def test_efi_firmware_boots_a_kernel(launcher: MakeLauncher) -> None:
    run = launcher()
    run.add_kernel_boot()
    vmi = tiny_vmi("efi")
    vmi["spec"]["domain"]["firmware"]["bootloader"] = {"efi": {"secureBoot": False}}
    vmi["spec"]["domain"]["memory"]["guest"] = "256Mi"  # OVMF faults with less
    run.start(vmi)
    run.wait_running()
    assert (run.private / "nvram/vmtest_efi_VARS.fd").exists()
    run.console().wait_for("PODVIRT-GUEST-BOOT", timeout=240)
