"""The ``virt-launcher`` command: how a pod runs the launcher (arguments, environment, user, parent death).

    virt-launcher --sockets-dir DIR --private-dir DIR [--volumes-dir DIR] [--vmi FILE]
                  [--notify-socket PATH] [--cache-dir DIR] [--emulation auto|always|never]
                  [--network-mode auto|tap|user] [--user UID:GID] [--log-format auto|json|text]

Every option has an environment variable (``PODVIRT_SOCKETS_DIR``, ``PODVIRT_PRIVATE_DIR``,
``PODVIRT_VOLUMES_DIR``, ``PODVIRT_VMI_FILE``, ``PODVIRT_NOTIFY_SOCKET``, ``PODVIRT_CACHE_DIR``,
``PODVIRT_EMULATION``, ``PODVIRT_NETWORK_MODE``, ``PODVIRT_LAUNCHER_USER``, ``PODVIRT_LOG_FORMAT``);
the argument wins. Without ``--vmi`` the launcher waits for the handler's ``POST /v1/sync``.
Started as root it gives the sockets and private dirs to ``--user`` (default 107:107, KubeVirt's qemu
user) and drops to it before libvirt starts. It exits when its parent dies (SIGTERM to itself).
Exit codes: see ``virt_launcher.runtime.controller``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from virt_launcher.layout import PodLayout

DEFAULT_USER = "107:107"
DEFAULT_VOLUMES_DIR = "/var/run/podvirt/volumes"
PR_SET_PDEATHSIG = 1
MAX_VMI_FILE = 4 << 20


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PODVIRT_{name}", default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="virt-launcher", description="Runs one VMI's guest (see the module docs).")
    p.add_argument("--sockets-dir", default=_env("SOCKETS_DIR"), help="dir shared with the node handler")
    p.add_argument("--private-dir", default=_env("PRIVATE_DIR"), help="the launcher's own scratch dir")
    p.add_argument("--volumes-dir", default=_env("VOLUMES_DIR", DEFAULT_VOLUMES_DIR), help="where volumes are mounted")
    p.add_argument("--vmi", default=_env("VMI_FILE"), help="VMI (JSON or YAML) to run at once")
    p.add_argument("--notify-socket", default=_env("NOTIFY_SOCKET"), help="handler socket to push events to")
    p.add_argument("--cache-dir", default=_env("CACHE_DIR"), help="node-wide cache (libvirt capabilities, KVM probe)")
    p.add_argument("--emulation", default=_env("EMULATION", "auto"), choices=("auto", "always", "never"))
    p.add_argument("--network-mode", default=_env("NETWORK_MODE", "auto"), choices=("auto", "tap", "user"))
    p.add_argument("--user", default=_env("LAUNCHER_USER", DEFAULT_USER), help="UID:GID to run as when root")
    p.add_argument("--log-format", default=_env("LOG_FORMAT", "auto"), choices=("auto", "json", "text"))
    p.add_argument("--backend", default=_env("BACKEND", "libvirt"), choices=("libvirt", "fake"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.sockets_dir or not args.private_dir:
        p.error("--sockets-dir and --private-dir (or PODVIRT_SOCKETS_DIR, PODVIRT_PRIVATE_DIR) are required")
    return args


def load_vmi(path: Path) -> dict[str, Any]:
    data = path.read_bytes()[: MAX_VMI_FILE + 1]
    if len(data) > MAX_VMI_FILE:
        raise SystemExit(f"virt-launcher: {path} is larger than {MAX_VMI_FILE} bytes")
    if data.lstrip().startswith(b"{"):
        obj = json.loads(data)
    else:
        import yaml  # noqa: PLC0415 - only for YAML files given by hand

        obj = yaml.safe_load(data)
    if not isinstance(obj, dict):
        raise SystemExit(f"virt-launcher: {path} does not hold a VirtualMachineInstance object")
    return obj


def drop_privileges(user: str, dirs: list[Path]) -> None:
    """Root only: hand ``dirs`` to ``user`` and become it (no supplementary groups)."""
    uid_text, _, gid_text = user.partition(":")
    uid, gid = int(uid_text), int(gid_text or uid_text)
    for directory in dirs:
        for path in [directory, *directory.rglob("*")]:
            os.lchown(path, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def use_home(home: Path) -> None:
    """libvirt and QEMU keep per-user state under $HOME and the XDG dirs: keep it all under ``home``."""
    os.environ.update(HOME=str(home), XDG_CACHE_HOME=f"{home}/.cache", XDG_CONFIG_HOME=f"{home}/.config")
    os.environ.setdefault("XDG_RUNTIME_DIR", f"{home}/.run")


def exit_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from virt_launcher.runtime import logs  # noqa: PLC0415 - after argument errors, before anything logs

    logs.setup(args.log_format)
    layout = PodLayout(Path(args.sockets_dir).absolute(), Path(args.private_dir).absolute(), Path(args.volumes_dir))
    too_long = layout.too_long_socket_paths()
    if too_long:
        print(f"virt-launcher: socket path too long for the kernel: {too_long[0]}", file=sys.stderr)
        return 2
    for directory in (layout.sockets_dir, layout.private_dir, layout.home_dir, layout.libvirt_root):
        directory.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    if os.geteuid() == 0:
        drop_privileges(args.user, [layout.sockets_dir, layout.private_dir])
    os.umask(0o007)
    use_home(layout.home_dir)
    exit_with_parent()
    vmi = load_vmi(Path(args.vmi)) if args.vmi else None

    from virt_launcher.runtime.app import Launcher, LauncherConfig  # noqa: PLC0415 - after the privilege drop

    config = LauncherConfig(
        layout=layout,
        vmi=vmi,
        notify_socket=Path(args.notify_socket) if args.notify_socket else None,
        cache_dir=cache_dir,
        emulation=args.emulation,
        network_mode=args.network_mode,
        backend=args.backend,
    )
    return Launcher(config).run()
