"""Builds and caches the control-plane binaries (Kubernetes and etcd) from the Go module proxy.

The wrapper Go modules live in ``devcluster/gomod``; their ``go.mod`` files are generated
here, because Kubernetes' own go.mod replaces its staging modules (``k8s.io/api`` and the
rest) with local paths that do not exist in a module download. We read that replace block
from the downloaded go.mod and point every staging module at its published ``v0.X.Y``.

Binaries land in ``<cache>/cluster-bin/k8s-<ver>-etcd-<ver>/`` and are rebuilt only when a
pinned version changes. Standard library only: this runs before the virtualenv exists.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = (*K8S_COMMANDS, "etcd")

_GOMOD_DIR = Path(__file__).resolve().parent / "gomod"
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)


def cache_root() -> Path:
    """Where podvirt caches what it builds or downloads (outside the repository)."""
    env = os.environ.get("PODVIRT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "podvirt"


def bin_dir() -> Path:
    return cache_root() / "cluster-bin" / f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"


def binary(name: str) -> Path:
    if name not in ALL_BINARIES:
        raise ValueError(f"unknown cluster binary {name!r}; known: {', '.join(ALL_BINARIES)}")
    return bin_dir() / name


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """Module paths that k8s.io/kubernetes' go.mod replaces with ./staging directories."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_gomod)))


def staging_version(kubernetes_version: str) -> str:
    """k8s.io/kubernetes v1.X.Y publishes its staging modules as v0.X.Y."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r}")
    return f"v0.{match.group(1)}.{match.group(2)}"


def kubernetes_wrapper_gomod(kubernetes_gomod: str, kubernetes_version: str) -> str:
    go_line = re.search(r"^go\s+(\S+)", kubernetes_gomod, re.MULTILINE)
    go_version = go_line.group(1) if go_line else "1.24"
    replaced = staging_version(kubernetes_version)
    lines = [
        "module podvirt.dev/devcluster/k8s",
        "",
        f"go {go_version}",
        "",
        f"require k8s.io/kubernetes {kubernetes_version}",
        "",
        "replace (",
        *(f"\t{mod} => {mod} {replaced}" for mod in staging_modules(kubernetes_gomod)),
        ")",
        "",
    ]
    return "\n".join(lines)


def etcd_wrapper_gomod(etcd_gomod: str, etcd_version: str) -> str:
    go_line = re.search(r"^go\s+(\S+)", etcd_gomod, re.MULTILINE)
    go_version = go_line.group(1) if go_line else "1.24"
    # etcd's server module replaces its sibling modules with ../api etc.; require the
    # published siblings at the same version instead.
    siblings = sorted(set(re.findall(r"^\s*(go\.etcd\.io/etcd/[\w/.-]+)\s*=>\s*\.\./", etcd_gomod, re.MULTILINE)))
    lines = [
        "module podvirt.dev/devcluster/etcd",
        "",
        f"go {go_version}",
        "",
        "require (",
        f"\tgo.etcd.io/etcd/server/v3 {etcd_version}",
        *(f"\t{mod} {etcd_version}" for mod in siblings if mod != "go.etcd.io/etcd/server/v3"),
        ")",
        "",
    ]
    return "\n".join(lines)


def _go(args: list[str], cwd: Path, log: Path) -> None:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    with log.open("ab") as out:
        out.write(f"$ go {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.run(["go", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"go {' '.join(args)} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail))


def _download_gomod(module: str, version: str, workdir: Path, log: Path) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    log.open("a").write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"cannot download {module}@{version} from the Go module proxy: {out.stdout}{out.stderr}")
    return Path(json.loads(out.stdout)["GoMod"]).read_text()


@dataclass(frozen=True)
class BuildReport:
    bin_dir: Path
    built: bool
    seconds: float
    versions: dict[str, str]


def _check_versions(target: Path) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in ALL_BINARIES:
        args = [str(target / name), "version", "--client"] if name == "kubectl" else [str(target / name), "--version"]
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
        text = (out.stdout + out.stderr).strip()
        expected = ETCD_VERSION.lstrip("v") if name == "etcd" else KUBERNETES_VERSION
        if out.returncode != 0 or expected not in text:
            raise RuntimeError(f"{name} --version printed {text!r}; expected it to mention {expected}")
        versions[name] = text.splitlines()[0]
    return versions


def ensure_binaries(force: bool = False) -> BuildReport:
    """Build the pinned binaries unless the cache already has them (checked by --version).

    A lock file serialises concurrent callers (two test runs, or setup beside a benchmark).
    """
    target = bin_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(target, force)


def _ensure_locked(target: Path, force: bool) -> BuildReport:
    if not force and all((target / n).is_file() for n in ALL_BINARIES):
        try:
            return BuildReport(target, False, 0.0, _check_versions(target))
        except (RuntimeError, OSError):
            pass
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is required to build the cluster binaries; install golang")
    start = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    log = target.parent / f"{target.name}.build.log"
    log.write_text("")
    work = staging / "src"
    shutil.copytree(_GOMOD_DIR, work)
    k8s_dir, etcd_dir = work / "k8s", work / "etcd"

    k8s_gomod = _download_gomod("k8s.io/kubernetes", KUBERNETES_VERSION, k8s_dir, log)
    (k8s_dir / "go.mod").write_text(kubernetes_wrapper_gomod(k8s_gomod, KUBERNETES_VERSION))
    _go(["mod", "tidy", "-e"], k8s_dir, log)
    out_dir = staging / "bin"
    out_dir.mkdir()
    ldflags = _k8s_ldflags(KUBERNETES_VERSION)
    for cmd in K8S_COMMANDS:
        _go(
            ["build", "-trimpath", "-ldflags", ldflags, "-o", str(out_dir / cmd), f"k8s.io/kubernetes/cmd/{cmd}"],
            k8s_dir,
            log,
        )

    etcd_gomod = _download_gomod("go.etcd.io/etcd/server/v3", ETCD_VERSION, etcd_dir, log)
    (etcd_dir / "go.mod").write_text(etcd_wrapper_gomod(etcd_gomod, ETCD_VERSION))
    _go(["mod", "tidy", "-e"], etcd_dir, log)
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out_dir / "etcd"), "."], etcd_dir, log)

    versions = _check_versions(out_dir)
    if target.exists():
        shutil.rmtree(target)
    out_dir.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return BuildReport(target, True, time.monotonic() - start, versions)


def _k8s_ldflags(version: str) -> str:
    """Stamp the version the way Kubernetes' own build does, so --version is truthful."""
    major, minor = version.lstrip("v").split(".")[:2]
    pkgs = ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
    flags = ["-s", "-w"]
    for pkg in pkgs:
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    report = ensure_binaries(force="--force" in args)
    state = f"built in {report.seconds:.0f} s" if report.built else "cached"
    size = sum(p.stat().st_size for p in report.bin_dir.iterdir()) / 2**20
    print(f"cluster binaries {state}: {report.bin_dir} ({size:.0f} MiB)")
    for name, ver in report.versions.items():
        print(f"  {name}: {ver}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
