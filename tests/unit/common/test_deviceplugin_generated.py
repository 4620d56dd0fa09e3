"""The device-plugin API modules are what ``make protos`` makes from ``api.proto`` (none edited by hand,
none stale after a change to the .proto or the generator)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[3] / "podvirt_common" / "deviceplugin"
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_grpc.py")


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    where = tmp_path / "podvirt_common" / "deviceplugin"
    where.mkdir(parents=True)
    shutil.copy(PACKAGE / "api.proto", where / "api.proto")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", "--grpclib_python_out=.",
         "podvirt_common/deviceplugin/api.proto"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    stale = [name for name in GENERATED if (where / name).read_bytes() != (PACKAGE / name).read_bytes()]
    assert not stale, f"{', '.join(stale)} differ from what `make protos` makes: run it and commit the result"
