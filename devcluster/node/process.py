"""Container processes: each a new session (its own process group) started through the entry
helper, watched through a pidfd, and tracked by a cgroup so that nothing it starts outlives it.

The process group is what the agent signals (SIGTERM on deletion, SIGKILL after the grace
period). The cgroup (cgroup v2, membership only, no controllers) catches what leaves the group:
libvirt, for one, starts QEMU in a session of its own. When a container's main process exits,
everything left in its group and cgroup is killed, as a container runtime does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import marshal
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster import processes

HELPER = Path(__file__).resolve().parent / "_exec.py"
CGROUP_PREFIX = "podvirt-devcluster"
START_TIMEOUT = 60.0


class ContainerStartError(Exception):
    """The container's command did not start; ``reason`` is the kubelet's (StartError, RunContainerError...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or, on hybrid hosts, ``.../unified``)."""
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4])
    return None


class Cgroups:
    """The agent's cgroup subtree: ``<cgroup2>/podvirt-devcluster/<node>/<pod-uid>/<container>``."""

    def __init__(self, node: str, mount: Path | None = None) -> None:
        root = mount if mount is not None else cgroup2_mount()
        self.base = root / CGROUP_PREFIX / node if root is not None else None

    def container(self, pod_uid: str, name: str) -> Path | None:
        if self.base is None:
            return None
        path = self.base / pod_uid / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def kill(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (path / "cgroup.kill").write_text("1\n")

    @staticmethod
    def populated(path: Path) -> bool:
        try:
            events = (path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        return "populated 1" in events

    def remove(self, path: Path, timeout: float = 5.0) -> bool:
        """Kill everything in ``path`` and below, then remove the cgroups; False if some stayed busy."""
        if not path.exists():
            return True
        leaves = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        ok = True
        for cg in [*leaves, path]:
            self.kill(cg)
            deadline = time.monotonic() + timeout
            while self.populated(cg) and time.monotonic() < deadline:
                time.sleep(0.02)
            try:
                cg.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok

    def pod(self, pod_uid: str) -> Path | None:
        return self.base / pod_uid if self.base is not None else None

    def pods(self) -> Iterator[Path]:
        if self.base is not None and self.base.is_dir():
            yield from (p for p in self.base.iterdir() if p.is_dir())


@dataclass(frozen=True)
class ExecSpec:
    """What the entry helper needs to turn itself into the container and exec its command."""

    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    netns: str | None = None
    hostname: str | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)
    no_new_privs: bool = False
    #: Run inside this running container's namespaces instead of setting up new ones (exec probes).
    join_pid: int | None = None

    def to_json(self, cgroup: Path | None) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "env": self.env,
            "cwd": self.cwd,
            "uid": self.uid,
            "gid": self.gid,
            "groups": self.groups,
            "netns": self.netns,
            "hostname": self.hostname,
            "mounts": self.mounts,
            "no_new_privs": self.no_new_privs,
            "cgroup": str(cgroup) if cgroup is not None else None,
            "join_pid": self.join_pid,
            "agent_pid": os.getpid(),
        }


@dataclass(frozen=True)
class Exit:
    exit_code: int
    signal: int | None
    finished_at: dt.datetime


class ContainerProcess:
    """A started container: its pid (also its process group), cgroup, and a future of its exit."""

    def __init__(self, pid: int, pidfd: int, cgroup: Path | None, started_at: dt.datetime) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self.started_at = started_at
        self._pidfd = pidfd
        # Start time in clock ticks, so that a later sweep signals this process and never a reused pid.
        self.start_ticks = processes.start_time(pid)
        self._exit: asyncio.Task[Exit] = asyncio.get_running_loop().create_task(self._reap())

    @property
    def container_id(self) -> str:
        return f"devcluster://{self.pid}"

    async def _reap(self) -> Exit:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._pidfd, on_exit)
        try:
            await ready
        finally:
            loop.remove_reader(self._pidfd)
        # Still a zombie, so the group id cannot be reused yet: take the rest of the container with it.
        self.kill_all()
        _, status = os.waitpid(self.pid, 0)  # noqa: ASYNC222 - the pidfd said it exited: no wait
        os.close(self._pidfd)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return Exit(128 - code, -code, dt.datetime.now(dt.UTC))
        return Exit(code, None, dt.datetime.now(dt.UTC))

    async def wait(self) -> Exit:
        return await asyncio.shield(self._exit)

    @property
    def exited(self) -> bool:
        return self._exit.done()

    def signal_group(self, sig: int) -> None:
        if self._exit.done():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the process group and everything in the container's cgroup."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.cgroup is not None:
            Cgroups.kill(self.cgroup)

    async def stop(self, grace: float) -> Exit:
        """SIGTERM to the group; SIGKILL to the group and cgroup when ``grace`` seconds pass."""
        self.signal_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), timeout=max(grace, 0.0))
        except TimeoutError:
            self.kill_all()
            return await self.wait()


async def _read_until_eof(fd: int, limit: float) -> bytes:
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(done, limit)
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


async def start(spec: ExecSpec, *, spec_dir: Path, log_path: Path, cgroup: Path | None) -> ContainerProcess:
    """Start the container; returns once its command has been exec'd, raises ContainerStartError if it was not."""
    spec_path = spec_dir / f".exec-{secrets.token_hex(6)}.spec"
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        marshal.dump(spec.to_json(cgroup), fh)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    started_at = dt.datetime.now(dt.UTC)
    try:
        pid = os.posix_spawn(  # noqa: ASYNC221 - vfork+exec, returns at once
            sys.executable,
            [sys.executable, "-I", "-S", str(HELPER), str(spec_path)],
            {},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
                (os.POSIX_SPAWN_DUP2, write_end, 3),
            ],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
            setsigmask=(),
        )
    except OSError as exc:
        os.close(read_end)
        spec_path.unlink(missing_ok=True)
        raise ContainerStartError("RunContainerError", f"starting the container entry helper: {exc}") from exc
    finally:
        os.close(write_end)
        os.close(devnull)
        os.close(log_fd)
    proc = ContainerProcess(pid, os.pidfd_open(pid), cgroup, started_at)
    try:
        report = await _read_until_eof(read_end, START_TIMEOUT)
    except TimeoutError:
        proc.kill_all()
        await proc.wait()
        raise ContainerStartError(
            "RunContainerError", f"the container did not start within {START_TIMEOUT:.0f} s"
        ) from None
    finally:
        os.close(read_end)
        spec_path.unlink(missing_ok=True)
    if report:
        await proc.wait()
        reason, _, message = report.decode(errors="replace").partition("\t")
        raise ContainerStartError(reason or "RunContainerError", message.strip())
    return proc
