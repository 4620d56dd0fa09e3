"""Container entry helper: turns a fresh process into a container, then execs its command.

The node agent starts this file (``python -I -S _exec.py SPEC``) as the leader of a new session.
It reads the spec (a marshalled dict, written by the agent, which runs the same Python: cheaper
to load than JSON), joins the container's cgroup and the pod's network namespace, enters a
private mount namespace (slave to the host, so nothing mounted here leaks out), bind-mounts the
volumes at their mount paths, sets the hostname, drops to the container's user, and execs the
command. The pid stays the same throughout, so the agent supervises the command itself. For exec
probes, ``join_pid`` makes it enter a running container's namespaces instead.

If anything fails before the command runs, ``reason<TAB>message`` goes to fd 3, which is
close-on-exec: the agent reads EOF there when the exec succeeded. Standard library only, and few
imports, and none from podvirt: this runs before the container's command, on every start.
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
ERROR_FD = 3

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError("RunContainerError", f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(_libc.mount(src, target.encode(), None, ctypes.c_ulong(flags), None), f"mount {source} on {target}")


def _resolve_beneath(root: str, sub_path: str) -> list[str]:
    """The components of ``sub_path`` with symlinks resolved, refusing any that would leave ``root``
    (a configMap's keys are symlinks into ``..data``; a container's own symlink may point anywhere)."""
    todo = [p for p in sub_path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if not done:
                raise SetupError("CreateContainerConfigError", f"subPath {sub_path!r} leaves its volume")
            done.pop()
            continue
        path = os.path.join(root, *done, part)
        if os.path.islink(path):
            target = os.readlink(path)
            hops += 1
            if target.startswith("/") or hops > 40:
                raise SetupError("CreateContainerConfigError", f"subPath {sub_path!r} leaves its volume")
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return done


def _open_beneath(root: str, sub_path: str) -> int:
    """Open ``root/sub_path`` (creating missing directories) so that a container cannot point a subPath
    outside its volume: resolve it, then open every component without following symlinks."""
    parts = _resolve_beneath(root, sub_path)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    for i, part in enumerate(parts):
        try:
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            os.mkdir(part, 0o755, dir_fd=fd)
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = nxt
        st = os.stat(fd)
        if (st.st_mode & 0o170000) == 0o120000 or (i < len(parts) - 1 and (st.st_mode & 0o170000) != 0o040000):
            os.close(fd)
            raise SetupError("CreateContainerConfigError", f"subPath {sub_path!r} changed while it was mounted")
    return fd


def _ensure_target(target: str, is_dir: bool) -> None:
    if os.path.lexists(target):
        return
    os.makedirs(target if is_dir else os.path.dirname(target), mode=0o755, exist_ok=True)
    if not is_dir:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _bind(mount: dict[str, object]) -> None:
    source = str(mount["source"])
    target = str(mount["target"])
    sub_path = mount.get("sub_path")
    fd = None
    try:
        if sub_path:
            fd = _open_beneath(source, str(sub_path))
            source = f"/proc/self/fd/{fd}"
        is_dir = os.path.isdir(source)
        _ensure_target(target, is_dir)
        _mount(source, target, MS_BIND | MS_REC)
        extra = (MS_RDONLY if mount.get("readonly") else 0) | (MS_NOSUID | MS_NODEV if mount.get("nosuid") else 0)
        if extra:
            _mount(None, target, MS_BIND | MS_REMOUNT | extra)
    finally:
        if fd is not None:
            os.close(fd)


def _join(pid: int) -> None:
    """Enter a running container's namespaces (for exec probes): network, hostname, then mounts."""
    fds = []
    try:
        for kind, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS)):
            fds.append((os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY), flag, kind))
    except OSError as exc:
        raise SetupError("RunContainerError", f"the container (pid {pid}) is gone: {exc.strerror}") from None
    for fd, flag, kind in fds:
        _check(_libc.setns(fd, flag), f"joining the container's {kind} namespace")
        os.close(fd)


def _enter(spec: dict[str, object]) -> None:
    join_pid = spec.get("join_pid")
    if join_pid:
        _join(int(str(join_pid)))
        return
    cgroup = spec.get("cgroup")
    if cgroup:
        with open(os.path.join(str(cgroup), "cgroup.procs"), "w") as fh:
            fh.write("0\n")
    netns = spec.get("netns")
    if netns:
        fd = os.open(str(netns), os.O_RDONLY)
        _check(_libc.setns(fd, CLONE_NEWNET), f"joining network namespace {netns}")
        os.close(fd)
    hostname = spec.get("hostname")
    _check(_libc.unshare(CLONE_NEWNS | (CLONE_NEWUTS if hostname else 0)), "unshare")
    _mount(None, "/", MS_REC | MS_SLAVE)
    if netns:
        # A sysfs of the pod's own network namespace, read-only, as container runtimes mount it:
        # /sys/class/net then lists the pod's interfaces (the launcher looks for its tap there).
        _check(
            _libc.mount(
                b"sysfs", b"/sys", b"sysfs", ctypes.c_ulong(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), None
            ),
            "mount sysfs on /sys",
        )
    mounts = list(spec.get("mounts") or [])  # type: ignore[call-overload]
    mounts.sort(key=lambda m: str(m["target"]).rstrip("/").count("/"))
    for mount in mounts:
        _bind(mount)
    if hostname:
        name = str(hostname).encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")


def _become(spec: dict[str, object]) -> None:
    uid = spec.get("uid")
    gid = spec.get("gid")
    groups = [int(g) for g in spec.get("groups") or []]  # type: ignore[attr-defined]
    if uid is not None or gid is not None or groups:
        os.setgroups(groups)
    if gid is not None:
        os.setgid(int(str(gid)))
    if uid is not None:
        os.setuid(int(str(uid)))
    if spec.get("no_new_privs"):
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # After the credential change, which clears it: die with the agent that supervises us.
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent death signal")
    if os.getppid() != spec.get("agent_pid"):
        raise SetupError("RunContainerError", "the node agent exited while the container was starting")
    cwd = str(spec.get("cwd") or "/")
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise SetupError("RunContainerError", f"workingDir {cwd}: {exc.strerror}") from None


def _exec(spec: dict[str, object]) -> None:
    argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
    env = {str(k): str(v) for k, v in dict(spec["env"]).items()}  # type: ignore[call-overload]
    os.umask(0o022)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 - becoming the container's command is the point
    except FileNotFoundError:
        where = "no such file or directory" if "/" in argv[0] else "executable file not found in $PATH"
        raise SetupError("StartError", f'exec: "{argv[0]}": {where}') from None
    except PermissionError:
        raise SetupError("StartError", f'exec: "{argv[0]}": permission denied') from None
    except OSError as exc:
        raise SetupError("StartError", f'exec: "{argv[0]}": {exc.strerror}') from None


def main() -> None:
    os.set_inheritable(ERROR_FD, False)
    try:
        with open(sys.argv[1], "rb") as fh:
            spec = marshal.load(fh)  # noqa: S302 - written by the agent, readable by root only
        os.unlink(sys.argv[1])
        _enter(spec)
        _become(spec)
        _exec(spec)
    except SetupError as exc:
        failure = (exc.reason, exc.message)
    except OSError as exc:
        failure = ("RunContainerError", f"{exc.filename or ''}: {exc.strerror or exc}")
    except Exception as exc:  # every failure must reach the agent as a reason
        failure = ("RunContainerError", f"{type(exc).__name__}: {exc}")
    try:
        os.write(ERROR_FD, f"{failure[0]}\t{failure[1]}".encode(errors="replace"))
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
    os._exit(128)


if __name__ == "__main__":
    main()
