"""Containers as processes: started through the entry helper, mounts private, killed as a whole.

These start real processes (as root, like the agent): a private mount namespace, a cgroup, setuid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from devcluster.node import process
from devcluster.node.process import Cgroups, ContainerStartError, ExecSpec

pytestmark = pytest.mark.unit

PATH = {"PATH": "/usr/bin:/bin"}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture
def cgroups(tmp_path: Path) -> Cgroups:
    groups = Cgroups(f"unit-{os.getpid()}-{tmp_path.name}")
    yield groups
    if groups.base is not None:
        groups.remove(groups.base)


async def run(spec: ExecSpec, tmp_path: Path, cgroup: Path | None = None) -> tuple[process.Exit, str]:
    proc = await process.start(spec, spec_dir=tmp_path, log_path=tmp_path / "0.log", cgroup=cgroup)
    result = await proc.wait()
    return result, (tmp_path / "0.log").read_text()


def test_a_container_runs_with_its_mounts_user_and_directory_and_the_host_sees_no_mount(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "note").write_text("from the volume\n")
    # The container runs as 107, which cannot traverse pytest's private temporary directory.
    world = Path(tempfile.mkdtemp(prefix="podvirt-unit-"))
    world.chmod(0o755)
    target = world / "here"
    script = "cat here/note; id -u; id -G; touch here/new 2>/dev/null || echo read-only; echo $GREETING; hostname"
    spec = ExecSpec(
        argv=["sh", "-c", script],
        env={**PATH, "GREETING": "hello"},
        cwd=str(world),
        uid=107,
        gid=107,
        groups=[2000],
        hostname="podname",
        mounts=[{"source": str(volume), "target": str(target), "readonly": True}],
        no_new_privs=True,
    )
    try:
        result, out = asyncio.run(run(spec, tmp_path))
        assert result.exit_code == 0, out
        assert out.split("\n") == ["from the volume", "107", "107 2000", "read-only", "hello", "podname", ""]
        assert list(target.iterdir()) == []  # the bind mount lived in the container's namespace only
    finally:
        shutil.rmtree(world)


def test_exit_codes_and_signals_are_reported(tmp_path: Path) -> None:
    result, _ = asyncio.run(run(ExecSpec(argv=["sh", "-c", "exit 7"], env=PATH), tmp_path))
    assert (result.exit_code, result.signal) == (7, None)
    result, _ = asyncio.run(run(ExecSpec(argv=["sh", "-c", "kill -KILL $$"], env=PATH), tmp_path))
    assert (result.exit_code, result.signal) == (137, 9)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-command-here"], 'exec: "no-such-command-here": executable file not found in $PATH'),
        (["/no/such/file"], 'exec: "/no/such/file": no such file or directory'),
        (["/dev/null"], 'exec: "/dev/null": permission denied'),
    ],
)
def test_a_command_that_cannot_run_is_a_start_error(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ContainerStartError) as caught:
        asyncio.run(run(ExecSpec(argv=argv, env=PATH), tmp_path))
    assert (caught.value.reason, caught.value.message) == ("StartError", message)


def test_a_missing_working_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ContainerStartError, match="workingDir /no/such/dir"):
        asyncio.run(run(ExecSpec(argv=["true"], env=PATH, cwd="/no/such/dir"), tmp_path))


def test_a_sub_path_cannot_leave_its_volume(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "escape").symlink_to("/etc")
    mount = {"source": str(volume), "target": str(tmp_path / "t"), "readonly": False, "sub_path": "escape"}
    with pytest.raises(ContainerStartError, match="leaves its volume"):
        asyncio.run(run(ExecSpec(argv=["true"], env=PATH, mounts=[mount]), tmp_path))


def test_stop_sends_sigterm_then_kills_group_and_cgroup_after_the_grace_period(
    tmp_path: Path, cgroups: Cgroups
) -> None:
    cgroup = cgroups.container("pod", "c")
    script = 'trap "" TERM; sleep 300 & setsid sleep 300 & echo $! > escaped; wait'

    async def scenario() -> tuple[process.Exit, float, int]:
        proc = await process.start(
            ExecSpec(argv=["sh", "-c", script], env=PATH, cwd=str(tmp_path)),
            spec_dir=tmp_path,
            log_path=tmp_path / "0.log",
            cgroup=cgroup,
        )
        for _ in range(250):
            if (tmp_path / "escaped").exists() and (tmp_path / "escaped").read_text().strip():
                break
            await asyncio.sleep(0.02)
        escaped = int((tmp_path / "escaped").read_text())
        for _ in range(250):  # until `setsid` has run in the background child
            if os.getpgid(escaped) != proc.pid:
                break
            await asyncio.sleep(0.01)
        assert os.getpgid(escaped) != proc.pid
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await proc.stop(grace=0.5)
        return result, loop.time() - start, escaped

    result, took, escaped = asyncio.run(scenario())
    assert result.signal == signal.SIGKILL
    assert 0.5 <= took < 3
    assert cgroup is not None
    for _ in range(100):  # cgroup.kill is asynchronous; the cgroup empties a moment later
        if not Cgroups.populated(cgroup):
            break
        time.sleep(0.01)
    assert not Cgroups.populated(cgroup)
    assert not alive(escaped)


def test_a_polite_container_stops_on_sigterm(tmp_path: Path) -> None:
    async def scenario() -> process.Exit:
        proc = await process.start(
            ExecSpec(argv=["sleep", "300"], env=PATH), spec_dir=tmp_path, log_path=tmp_path / "0.log", cgroup=None
        )
        return await proc.stop(grace=30)

    result = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert (result.exit_code, result.signal) == (143, signal.SIGTERM)
