"""The handler's per-VMI metrics: KubeVirt's names from the launcher's statistics, bad answers skipped,
a stuck launcher costing one VMI's samples and not the scrape."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from virt_handler.launcher_client import LauncherTarget
from virt_handler.metrics import Sample, VMIStatsCollector, families
from virt_launcher.runtime.stats import normalise

pytestmark = pytest.mark.unit

# libvirt's flat statistics for a running domain (virDomainListGetStats), as the launcher reads them.
LIBVIRT_FLAT = {
    "cpu.time": 2_500_000_000,
    "cpu.user": 1_000_000_000,
    "cpu.system": 500_000_000,
    "balloon.current": 131072,
    "balloon.maximum": 131072,
    "balloon.rss": 65536,
    "vcpu.current": 2,
    "vcpu.0.state": 1,
    "vcpu.0.time": 1_000_000_000,
    "vcpu.0.wait": 0,
    "vcpu.1.state": 2,
    "vcpu.1.time": 3_000_000_000,
    "block.count": 1,
    "block.0.name": "vda",
    "block.0.rd.bytes": 4096,
    "block.0.rd.reqs": 2,
    "block.0.wr.bytes": 512,
    "block.0.wr.reqs": 1,
    "net.count": 1,
    "net.0.name": "tap0",
    "net.0.rx.bytes": 1234,
    "net.0.rx.pkts": 10,
    "net.0.tx.bytes": 4321,
    "net.0.tx.pkts": 11,
    "net.0.rx.errs": 0,
    "net.0.tx.drop": 3,
}


def scrape(*samples: Sample, node: str = "node-1") -> str:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[object]:
            return list(families(node, samples))

    registry.register(Fixed())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_libvirt_statistics_become_kubevirts_metrics() -> None:
    text = scrape(Sample("default", "vm1", normalise(LIBVIRT_FLAT)))
    vmi = 'name="vm1",namespace="default",node="node-1"'
    assert f"kubevirt_vmi_cpu_usage_seconds{{{vmi}}} 2.5" in text
    assert f"kubevirt_vmi_cpu_user_usage_seconds{{{vmi}}} 1.0" in text
    assert f'kubevirt_vmi_vcpu_seconds_total{{id="0",{vmi},state="RUNNING"}} 1.0' in text
    assert f'kubevirt_vmi_vcpu_seconds_total{{id="1",{vmi},state="BLOCKED"}} 3.0' in text
    assert f"kubevirt_vmi_memory_resident_bytes{{{vmi}}} 6.7108864e+07" in text
    assert f"kubevirt_vmi_memory_domain_bytes_total{{{vmi}}} 1.34217728e+08" in text
    assert f'kubevirt_vmi_storage_read_traffic_bytes_total{{drive="vda",{vmi}}} 4096.0' in text
    assert f'kubevirt_vmi_storage_iops_write_total{{drive="vda",{vmi}}} 1.0' in text
    assert f'kubevirt_vmi_network_receive_bytes_total{{interface="tap0",{vmi}}} 1234.0' in text
    assert f'kubevirt_vmi_network_transmit_packets_dropped_total{{interface="tap0",{vmi}}} 3.0' in text


def test_values_of_the_wrong_type_are_left_out_not_fatal() -> None:
    stats = {
        "cpu": {"timeNs": "lots", "userNs": True},
        "memory": ["not", "a", "map"],
        "vcpus": [{"state": "x", "timeNs": None}, "junk"],
        "blocks": [{"name": "x" * 1000, "readBytes": 7}],
        "nets": "nope",
    }
    text = scrape(Sample("default", "odd", stats))
    assert "kubevirt_vmi_cpu_usage_seconds{" not in text
    assert "kubevirt_vmi_vcpu_seconds_total{" not in text
    # A device name is a label: bounded, whatever the launcher sends.
    assert f'drive="{"x" * 64}"' in text and "x" * 65 not in text


@pytest.fixture
def launchers(tmp_path: Path) -> Iterator[tuple[list[LauncherTarget], threading.Event]]:
    """Two launcher sockets: ``fast`` answers statistics at once, ``stuck`` never answers."""
    release = threading.Event()
    servers, targets = [], []
    for name in ("fast", "stuck"):
        root = tmp_path / name
        (root / "sockets").mkdir(parents=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(root / "sockets" / "launcher.sock"))
        server.listen(4)
        servers.append(server)
        targets.append(LauncherTarget("default", name, f"uid-{name}", f"pod-{name}", root, "sockets", None))

        def loop(server: socket.socket = server, name: str = name) -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    if name == "stuck":
                        release.wait(30)
                        continue
                    body = json.dumps(normalise(LIBVIRT_FLAT)).encode()
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    conn.sendall(head.encode() + body)

        threading.Thread(target=loop, daemon=True).start()
    try:
        yield targets, release
    finally:
        release.set()
        for server in servers:
            server.close()


def test_a_stuck_launcher_costs_its_own_samples_only(launchers: tuple[list[LauncherTarget], threading.Event]) -> None:
    targets, _ = launchers
    collector = VMIStatsCollector("node-1", lambda: [(t.namespace, t.name, t) for t in targets], timeout=0.5)
    registry = CollectorRegistry()
    registry.register(collector)
    started = time.monotonic()
    text = generate_latest(registry).decode()
    assert time.monotonic() - started < 5
    assert 'kubevirt_vmi_cpu_usage_seconds{name="fast",namespace="default",node="node-1"} 2.5' in text
    assert 'name="stuck"' not in text
