"""Launcher logging: JSON lines in a cluster, readable lines in a terminal; every record names the VMI."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

VMI_CONTEXT: dict[str, str] = {}
"""namespace/name of the VMI once known; added to every record."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": "virt-launcher",
            "logger": record.name,
            "msg": record.getMessage(),
            **VMI_CONTEXT,
        }
        event = getattr(record, "event", None)
        if event is not None:
            body["event"] = event
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        vmi = f" [{VMI_CONTEXT['namespace']}/{VMI_CONTEXT['name']}]" if "name" in VMI_CONTEXT else ""
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))}.{int(record.msecs):03d} "
        line += f"{record.levelname:<7} {record.name}{vmi}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "auto":
        fmt = "text" if sys.stdout.isatty() else "json"
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
