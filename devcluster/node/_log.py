"""Logging for the node agent: JSON lines in a cluster's log file, readable text on a terminal.

Every record about a pod carries it as ``pod=<namespace>/<name>`` (``extra={"pod": ...}``).
"""

from __future__ import annotations

import json
import logging
import sys
import time


class _JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": self.node,
            "msg": record.getMessage(),
        }
        pod = getattr(record, "pod", None)
        if pod:
            entry["pod"] = pod
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _TextFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        pod = getattr(record, "pod", None)
        text = super().format(record)
        return f"{text}  [node={self.node}{' pod=' + pod if pod else ''}]"


def setup(node: str, fmt: str) -> logging.Logger:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(node) if fmt == "json" else _TextFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return logging.getLogger("devcluster.node")
