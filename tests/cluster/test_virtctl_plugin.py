"""virtctl as the kubectl plugin ``kubectl virt``, run by the real kubectl, with kubectl's plugin completion.

The executables are written the way pip writes console scripts (a Python file named after the
command that calls the entry point), so ``sys.argv[0]`` is what kubectl executes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import binaries
from devcluster.cluster import Cluster

pytestmark = pytest.mark.cluster


def console_script(path: Path, entry_point: str) -> None:
    module, function = entry_point.split(":")
    path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    path.chmod(0o755)


@pytest.fixture
def plugin_path(tmp_path: Path) -> str:
    console_script(tmp_path / "kubectl-virt", "virtctl.cli:main")
    console_script(tmp_path / "kubectl_complete-virt", "virtctl.cli:kubectl_complete")
    return f"{tmp_path}:{os.environ['PATH']}"


def kubectl(cluster: Cluster, plugin_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": plugin_path, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run(
        [str(binaries.binary("kubectl")), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_kubectl_runs_the_plugin_under_its_name(cluster: Cluster, plugin_path: str) -> None:
    listed = kubectl(cluster, plugin_path, "plugin", "list")
    assert "kubectl-virt" in listed.stdout, listed.stderr
    helped = kubectl(cluster, plugin_path, "virt", "start", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: kubectl virt start [OPTIONS] NAME")
    assert "  kubectl virt start myvm\n" in helped.stdout


def test_the_plugins_exit_code_reaches_the_caller(cluster: Cluster, plugin_path: str) -> None:
    # The CRDs may or may not be installed by another module; a wrong flag is a usage error either way.
    done = kubectl(cluster, plugin_path, "virt", "stop", "vm1", "--force")
    assert done.returncode == 2
    assert "--force and --grace-period go together" in done.stderr


def test_kubectl_completes_the_plugins_commands(cluster: Cluster, plugin_path: str) -> None:
    done = kubectl(cluster, plugin_path, "__complete", "virt", "st")
    assert done.returncode == 0, done.stderr
    candidates = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert candidates[:2] == ["start", "stop"]
    assert candidates[-1].startswith(":")
