"""virt-api's version, in the shape of KubeVirt's ``/version`` answer."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def version_info() -> dict[str, str]:
    try:
        version = metadata.version("podvirt")
    except metadata.PackageNotFoundError:
        version = "0.0.0+unknown"
    return {
        "gitVersion": f"v{version}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }
