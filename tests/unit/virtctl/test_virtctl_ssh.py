"""ssh and scp run the local client with ``virtctl port-forward --stdio=true`` as ProxyCommand."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_kubeconfig

from virtctl.commands.ssh import SshOptions, Tunnel, scp_argv, self_command, ssh_argv
from virtctl.kube import Selection
from virtctl.targets import ScpLocation, Target, parse_scp_location

pytestmark = pytest.mark.unit

TUNNEL = Tunnel(Target("vmi", "myvmi"), "dev", 22, Selection(), ("/usr/bin/virtctl",))


def test_ssh_command_line() -> None:
    argv = ssh_argv(TUNNEL, "fedora", SshOptions(identity_file="/k/id"), "uname -a")
    assert argv == [
        "ssh",
        "-o",
        "ProxyCommand=/usr/bin/virtctl port-forward --stdio=true vmi/myvmi/dev 22",
        "-i",
        "/k/id",
        "fedora@vmi.myvmi.dev",
        "uname -a",
    ]


def test_proxy_command_carries_the_cluster_flags_quoted_for_the_shell_and_ssh() -> None:
    tunnel = Tunnel(
        Target("vm", "v"),
        "ns",
        2222,
        Selection(kubeconfig="/tmp/my config%1", context="ctx"),
        ("/opt/v env/bin/virtctl",),
    )
    proxy = tunnel.proxy_command()
    assert "%%1" in proxy  # ssh would expand a lone %
    words = shlex.split(proxy.replace("%%", "%"))
    assert words == [
        "/opt/v env/bin/virtctl",
        "--kubeconfig",
        "/tmp/my config%1",
        "--context",
        "ctx",
        "port-forward",
        "--stdio=true",
        "vm/v/ns",
        "2222",
    ]


def test_local_options_known_hosts_and_extra_args() -> None:
    options = SshOptions(known_hosts="/kh", local_options=("-o StrictHostKeyChecking=no",))
    argv = ssh_argv(TUNNEL, None, options, None, ["-v"])
    assert argv[3:] == ["-o", "UserKnownHostsFile=/kh", "-o", "StrictHostKeyChecking=no", "vmi.myvmi.dev", "-v"]


def test_scp_command_line() -> None:
    source, destination = ScpLocation("./notes.txt"), parse_scp_location("vmi/myvmi/dev:/tmp/")
    argv = scp_argv(TUNNEL, "fedora", SshOptions(), source, destination, recursive=True)
    assert argv[0] == "scp"
    assert argv[-3:] == ["-r", "./notes.txt", "fedora@vmi.myvmi.dev:/tmp/"]


def test_self_command() -> None:
    assert self_command("/x/__main__.py", "/py") == ["/py", "-m", "virtctl"]
    assert self_command("/usr/local/bin/kubectl-virt") == ["/usr/local/bin/kubectl-virt"]
    assert self_command("python3")[0].endswith("python3")
    assert self_command(sys.argv[0])


def test_ssh_replaces_itself_with_the_local_client_and_passes_its_status(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_ssh = bin_dir / "ssh"
    fake_ssh.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\nexit 42\n')
    fake_ssh.chmod(0o755)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9", namespace="dev")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "ssh", "fedora@vm/myvm", "-c", "uname -a", "--", "-v"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 42, done.stderr  # ssh's own exit status
    args = (bin_dir / "args").read_text().splitlines()
    assert args[0] == "-o"
    assert (
        args[1]
        == f"ProxyCommand={shlex.join([sys.executable, '-m', 'virtctl'])} port-forward --stdio=true vm/myvm/dev 22"
    )
    assert args[2:] == ["fedora@vm.myvm.dev", "uname -a", "-v"]


def test_there_is_no_built_in_ssh_client(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "virtctl", "ssh", "--local-ssh=false", "vmi/x"],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"no built-in SSH client" in done.stderr
