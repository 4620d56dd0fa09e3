"""Child processes identified beyond their pid: started in their own process group, recorded with
their start time so that a later command signals exactly the process it started, never a reused pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started: pid, process group, and start time to tell it from a pid reuse."""

    name: str
    pid: int
    pgid: int
    started: int

    def alive(self) -> bool:
        return start_time(self.pid) == self.started and not _is_zombie(self.pid)

    def group_alive(self) -> bool:
        """Whether any process is left in the group (children may outlive the leader)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.alive() or group_members(self.pgid) != []

    def signal_group(self, sig: int) -> None:
        if not self.alive() and not group_members(self.pgid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def stop(self, timeout: float) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after ``timeout`` seconds."""
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.group_alive():
                return
            time.sleep(0.05)
        self.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.group_alive():
            time.sleep(0.05)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "pgid": self.pgid, "started": self.started}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ProcessRecord:
        return cls(str(data["name"]), int(str(data["pid"])), int(str(data["pgid"])), int(str(data["started"])))


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def spawn(
    name: str, argv: tuple[str, ...] | list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group) with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def record(name: str, proc: subprocess.Popen[bytes]) -> ProcessRecord:
    started = start_time(proc.pid)
    if started is None:
        raise RuntimeError(f"{name} (pid {proc.pid}) exited immediately")
    return ProcessRecord(name, proc.pid, proc.pid, started)


def save_records(path: Path, records: list[ProcessRecord]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([r.to_json() for r in records], indent=2) + "\n")
    tmp.replace(path)


def load_records(path: Path) -> list[ProcessRecord]:
    try:
        return [ProcessRecord.from_json(d) for d in json.loads(path.read_text())]
    except FileNotFoundError:
        return []
