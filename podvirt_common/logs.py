"""Structured logging for every podvirt component: JSON lines in a cluster, readable lines in a terminal.

Call :func:`setup` once at start-up, then log through the standard :mod:`logging` API. A record about a
Kubernetes object carries the object's kind, namespace and name, which :func:`for_object` attaches::

    log = logs.for_object(logging.getLogger(__name__), "VirtualMachineInstance", "default", "testvm")
    log.info("created launcher pod", extra={"pod": "virt-launcher-testvm-abcde"})

In JSON every ``extra`` field becomes a key of the line; in a terminal the object is printed as
``kind namespace/name`` and the extra fields as ``key=value`` after the message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

Format = Literal["auto", "json", "text"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
# A record's own ``name`` is the logger's, so the object's identity travels under these attributes.
_OBJECT_ATTRIBUTES = {"k8s_kind": "kind", "k8s_namespace": "namespace", "k8s_name": "name"}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {}
    for key, value in vars(record).items():
        if key in _STANDARD_ATTRIBUTES or key.startswith("_") or value is None:
            continue
        fields[_OBJECT_ATTRIBUTES.get(key, key)] = value
    return fields


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then kind/namespace/name and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_extra_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger kind ns/name: message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _extra_fields(record)
        obj = ""
        if "name" in fields or "namespace" in fields:
            kind = fields.pop("kind", "")
            ns = fields.pop("namespace", None)
            name = fields.pop("name", "")
            obj = f" {kind + ' ' if kind else ''}{f'{ns}/' if ns else ''}{name}"
        clock = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.created % 1 * 1000):03d}"
        text = f"{clock} {record.levelname:<7} {record.name}{obj}: {record.getMessage()}"
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _wants_json(stream: TextIO) -> bool:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def setup(level: int | str = logging.INFO, fmt: Format = "auto", stream: TextIO | None = None) -> None:
    """Configure the root logger once: JSON when running in a pod or not on a terminal, else text.

    ``fmt`` forces one of the two. Repeated calls replace the handler rather than adding another.
    """
    out = stream if stream is not None else sys.stderr
    use_json = _wants_json(out) if fmt == "auto" else fmt == "json"
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_podvirt", False):
            root.removeHandler(old)
    handler._podvirt = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry one object's kind, namespace and name (plus the caller's ``extra``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        base: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = {**base, **(kwargs.get("extra") or {})}
        return msg, kwargs


def object_fields(kind: str, namespace: str | None, name: str) -> dict[str, str | None]:
    """The ``extra`` that identifies an object, for a single record: ``log.info(..., extra=object_fields(...))``."""
    return {"k8s_kind": kind, "k8s_namespace": namespace, "k8s_name": name}


def for_object(logger: logging.Logger, kind: str, namespace: str | None, name: str) -> ObjectLogger:
    """``logger`` with the object's identity attached to every record."""
    return ObjectLogger(logger, object_fields(kind, namespace, name))
