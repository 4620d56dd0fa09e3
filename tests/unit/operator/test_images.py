"""``make images``: which tool builds, the command lines it runs (a fake tool records them), and the Containerfiles."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from virt_operator.installconfig import DEFAULT_REGISTRY, InstallConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "build_images.sh"
COMPONENTS = ("virt-api", "virt-controller", "virt-handler", "virt-launcher", "virt-operator")
FAKE_TOOL = '#!/bin/sh\necho "$(basename "$0") $*" >> "$FAKE_LOG"\n'


def run(tmp_path: Path, tools: tuple[str, ...], *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script with only ``tools`` (fakes that log their arguments) and a few utilities on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for utility in ("sed", "head", "dirname", "basename"):
        (bin_dir / utility).symlink_to(next(p for d in ("/usr/bin", "/bin") if (p := Path(d) / utility).exists()))
    for tool in tools:
        fake = bin_dir / tool
        fake.write_text(FAKE_TOOL)
        fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {"PATH": str(bin_dir), "FAKE_LOG": str(log)}
    proc = subprocess.run(["/bin/sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_without_a_tool_it_names_all_three_and_fails(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, ())
    assert proc.returncode != 0 and calls == []
    for tool in ("docker", "podman", "buildah"):
        assert tool in proc.stderr


def test_podman_builds_builder_base_every_component_and_the_bundle(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, ("podman",))
    assert proc.returncode == 0, proc.stderr
    config = InstallConfig()
    builder, base = f"{DEFAULT_REGISTRY}/podvirt-builder:{config.tag}", f"{DEFAULT_REGISTRY}/podvirt-base:{config.tag}"
    assert calls[0] == f"podman build --file {ROOT}/images/builder/Containerfile --tag {builder} {ROOT}"
    assert calls[1] == (
        f"podman build --file {ROOT}/images/base/Containerfile --tag {base} --build-arg BUILDER={builder} {ROOT}"
    )
    for component, call in zip(COMPONENTS, calls[2:7], strict=True):
        image = config.image(component)  # exactly what the manifests reference
        assert call == (
            f"podman build --file {ROOT}/images/{component}/Containerfile --tag {image} --build-arg BASE={base} {ROOT}"
        )
    assert calls[7] == (
        f"podman build --file {ROOT}/bundle.Dockerfile --tag {DEFAULT_REGISTRY}/podvirt-operator-bundle:{config.tag} "
        f"{ROOT}"
    )
    assert len(calls) == 8


def test_docker_is_preferred_and_buildah_uses_bud(tmp_path: Path) -> None:
    proc, calls = run(
        tmp_path / "a", ("docker", "podman", "buildah"), "--registry", "registry.example/pv", "--tag", "v9"
    )
    assert proc.returncode == 0, proc.stderr
    assert all(c.startswith("docker build ") for c in calls)
    assert "--tag registry.example/pv/virt-handler:v9 " in calls[4]
    proc, calls = run(tmp_path / "b", ("buildah",), "--push")
    assert proc.returncode == 0, proc.stderr
    assert calls[0].startswith("buildah bud --file ")
    pushes = [c for c in calls if c.startswith("buildah push ")]
    assert len(pushes) == len(COMPONENTS) + 1


def test_latest_is_refused(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, ("podman",), "--tag", "latest")
    assert proc.returncode != 0 and "latest" in proc.stderr and calls == []


def containerfile(name: str) -> str:
    return (ROOT / "images" / name / "Containerfile").read_text()


def test_the_base_is_pinned_by_digest_and_nothing_else_is_a_floating_base() -> None:
    for name in ("builder", "base"):
        froms = re.findall(r"^FROM (\S+)", containerfile(name), re.MULTILINE)
        pinned = [f for f in froms if f.startswith("debian:")]
        assert pinned and all(re.fullmatch(r"debian:bookworm-slim@sha256:[0-9a-f]{64}", f) for f in pinned)
    for component in COMPONENTS:
        assert re.findall(r"^FROM (\S+)", containerfile(component), re.MULTILINE) == ["${BASE}"]


def test_users_are_non_root_where_the_component_allows() -> None:
    users = {c: re.findall(r"^USER (\S+)", containerfile(c), re.MULTILINE)[-1] for c in COMPONENTS}
    assert users == {
        "virt-api": "1001:1001",
        "virt-controller": "1001:1001",
        "virt-operator": "1001:1001",
        "virt-launcher": "107:107",
        "virt-handler": "0:0",
    }
    assert "privileged" in containerfile("virt-handler")  # the reason is written beside it


def test_images_stay_small() -> None:
    for name in ("builder", "base", *COMPONENTS):
        text = containerfile(name)
        if "apt-get install" in text:
            assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists/*" in text, name
    base = containerfile("base")
    installs = re.findall(r"apt-get install[^&]*", base)
    assert installs and not any(word in i for i in installs for word in ("gcc", "-dev", "pip"))
    assert "libvirt0" in containerfile("virt-launcher") and "qemu-system-x86" in containerfile("virt-launcher")


def test_the_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
