"""Fixtures for tests that boot the tiny guest through a real launcher (one at a time: QEMU TCG is CPU-heavy)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import LauncherRun, build_guest_image

LAUNCHER_UID = 107


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The tiny guest, built from Debian packages (cached outside the repository)."""
    return build_guest_image()


@pytest.fixture(scope="session")
def capabilities_cache() -> Iterator[Path]:
    """One libvirt capabilities cache for the session, so only the first launcher probes QEMU."""
    path = Path(tempfile.mkdtemp(prefix="pvt-cache-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(path, LAUNCHER_UID, LAUNCHER_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def launcher(guest_image: Path, capabilities_cache: Path) -> Iterator[Callable[..., LauncherRun]]:
    """Makes launcher runs; each is torn down (and checked for surviving QEMUs) even when the test fails."""
    runs: list[LauncherRun] = []

    def make(cache_dir: Path | None = None) -> LauncherRun:
        run = LauncherRun(guest_image, cache_dir or capabilities_cache)
        runs.append(run)
        return run

    yield make
    errors = []
    for run in runs:
        try:
            run.close()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "; ".join(errors)
