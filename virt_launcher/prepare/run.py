"""The preparation request and result, and the code that turns one into the other.

The launcher runs ``python -m virt_launcher.prepare`` with a JSON request on stdin::

    {"vmi": {...VirtualMachineInstance...}, "socketsDir": ..., "privateDir": ..., "volumesDir": ...,
     "domainType": "kvm" | "qemu", "networkMode": "auto" | "tap" | "user"}

and reads one JSON result from stdout::

    {"ok": true, "domainXML": "...", "domainName": "ns_name", "domainUUID": "...", "vmiUID": "...",
     "startPaused": false,
     "terminationGracePeriodSeconds": 30, "serialConsole": true, "warnings": [...]}
    {"ok": false, "error": {"reason": "InvalidSpec", "message": "...", "field": "spec.domain..."}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubevirt_types import StartStrategy, VirtualMachineInstance
from virt_launcher.converter import ConvertContext, DomainPaths, convert
from virt_launcher.converter.xml import to_string
from virt_launcher.errors import InvalidSpecError, LauncherError
from virt_launcher.layout import PodLayout

from .network import attachments
from .volumes import VolumeResolver

MAX_REQUEST_BYTES = 4 << 20
DEFAULT_GRACE_SECONDS = 30


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_vmi(obj: Any) -> VirtualMachineInstance:
    try:
        return VirtualMachineInstance.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidSpecError(first["msg"], field=_field_path(first["loc"]) or None) from exc


def prepare(request: dict[str, Any]) -> dict[str, Any]:
    vmi = parse_vmi(request.get("vmi"))
    layout = PodLayout(Path(request["socketsDir"]), Path(request["privateDir"]), Path(request["volumesDir"]))
    resolver = VolumeResolver(vmi, layout)
    layout.nvram_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    networks = attachments(vmi, request.get("networkMode", "auto"), warnings=warnings)
    ctx = ConvertContext(
        vmi=vmi,
        domain_type=request.get("domainType", "qemu"),
        paths=DomainPaths(
            str(layout.serial_socket), str(layout.vnc_socket), str(layout.nvram_dir), str(layout.guest_agent_socket)
        ),
        disks=resolver.resolve_all(),
        kernel=resolver.kernel_files(),
        networks=networks,
        warnings=warnings,
    )
    xml = to_string(convert(ctx))
    grace = vmi.spec.termination_grace_period_seconds
    return {
        "ok": True,
        "domainXML": xml,
        "domainName": ctx.domain_name,
        "domainUUID": ctx.domain_uuid,
        "vmiUID": vmi.metadata.uid,
        "startPaused": vmi.spec.start_strategy == StartStrategy.PAUSED,
        "terminationGracePeriodSeconds": DEFAULT_GRACE_SECONDS if grace is None else grace,
        "serialConsole": vmi.spec.domain.devices.autoattach_serial_console is not False,
        "warnings": ctx.warnings,
    }


def main() -> int:
    # Build the VMI validator (deferred in kubevirt_types, ~0.06 s) while no request is there yet: a
    # spare child waits here for the handler's spec, and the spec is then validated at once.
    VirtualMachineInstance.model_rebuild()
    raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
    try:
        if len(raw) > MAX_REQUEST_BYTES:
            raise InvalidSpecError(f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        result = prepare(json.loads(raw))
    except LauncherError as exc:
        result = {"ok": False, "error": exc.to_dict()}
    except ValueError as exc:
        result = {"ok": False, "error": {"reason": "InvalidSpec", "message": f"not a JSON request: {exc}"}}
    json.dump(result, sys.stdout)
    return 0
