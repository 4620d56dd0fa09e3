"""The preparation child (``python -m virt_launcher.prepare``, real processes): a spare started before the
spec arrives serves the first request, a dead spare is replaced, and an unused one is not left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from virt_launcher.errors import InvalidSpecError
from virt_launcher.layout import PodLayout
from virt_launcher.runtime.preparer import SubprocessPreparer

pytestmark = pytest.mark.unit


def _vmi() -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "prep", "namespace": "ns1", "uid": "0000-2222"},
        "spec": {"domain": {"memory": {"guest": "64Mi"}, "devices": {}}},
    }


@pytest.fixture
def preparer(short_tmp: Path) -> SubprocessPreparer:
    dirs = [short_tmp / name for name in ("s", "p", "v")]
    for directory in dirs:
        directory.mkdir()
    return SubprocessPreparer(PodLayout(*dirs), "qemu")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_spare_child_prepares_the_first_spec(preparer: SubprocessPreparer) -> None:
    preparer.start_spare()
    spare = preparer._spare
    assert spare is not None and spare.poll() is None  # waiting for its request
    prepared = preparer(_vmi())
    assert prepared.name == "ns1_prep" and "<domain" in prepared.xml
    assert spare.returncode == 0, "the spare answered the request"
    assert preparer._spare is None
    assert preparer(_vmi()).name == "ns1_prep"  # later requests get a child of their own


def test_a_spare_that_died_is_replaced(preparer: SubprocessPreparer) -> None:
    preparer.start_spare()
    assert preparer._spare is not None
    os.kill(preparer._spare.pid, signal.SIGKILL)
    preparer._spare.wait()
    assert preparer(_vmi()).name == "ns1_prep"


def test_the_spare_reports_a_bad_spec_like_any_child(preparer: SubprocessPreparer) -> None:
    preparer.start_spare()
    bad = _vmi()
    bad["spec"]["domain"]["memory"] = {"guest": "a lot"}
    with pytest.raises(InvalidSpecError):
        preparer(bad)


def test_an_unused_spare_is_ended_on_close(preparer: SubprocessPreparer) -> None:
    preparer.start_spare()
    assert preparer._spare is not None
    pid = preparer._spare.pid
    preparer.close()
    assert not _alive(pid)
