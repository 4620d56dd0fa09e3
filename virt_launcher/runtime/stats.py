"""libvirt's flat domain statistics (``cpu.time``, ``block.0.rd.bytes``...) as the protocol's nested JSON."""

from __future__ import annotations

from typing import Any

BLOCK_FIELDS = {
    "name": "name",
    "path": "path",
    "rd.bytes": "readBytes",
    "rd.reqs": "readRequests",
    "wr.bytes": "writeBytes",
    "wr.reqs": "writeRequests",
    "capacity": "capacityBytes",
    "allocation": "allocationBytes",
}
NET_FIELDS = {
    "name": "name",
    "rx.bytes": "rxBytes",
    "rx.pkts": "rxPackets",
    "rx.errs": "rxErrors",
    "rx.drop": "rxDropped",
    "tx.bytes": "txBytes",
    "tx.pkts": "txPackets",
    "tx.errs": "txErrors",
    "tx.drop": "txDropped",
}
VCPU_FIELDS = {"state": "state", "time": "timeNs", "wait": "waitNs"}
BALLOON_FIELDS = {
    "current": "currentKiB",
    "maximum": "maximumKiB",
    "rss": "rssKiB",
    "available": "availableKiB",
    "usable": "usableKiB",
    "unused": "unusedKiB",
}


def _indexed(flat: dict[str, Any], prefix: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    count = int(flat.get(f"{prefix}.count", 0))
    items = []
    for i in range(count):
        item = {out: flat[f"{prefix}.{i}.{key}"] for key, out in fields.items() if f"{prefix}.{i}.{key}" in flat}
        items.append(item)
    return items


def normalise(flat: dict[str, Any]) -> dict[str, Any]:
    return {
        "cpu": {
            "timeNs": flat.get("cpu.time"),
            "userNs": flat.get("cpu.user"),
            "systemNs": flat.get("cpu.system"),
        },
        "memory": {out: flat[f"balloon.{key}"] for key, out in BALLOON_FIELDS.items() if f"balloon.{key}" in flat},
        "vcpus": _indexed({**flat, "vcpu.count": flat.get("vcpu.current", 0)}, "vcpu", VCPU_FIELDS),
        "blocks": _indexed(flat, "block", BLOCK_FIELDS),
        "nets": _indexed(flat, "net", NET_FIELDS),
    }
