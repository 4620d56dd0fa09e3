"""Pod networking on one machine: a network namespace per pod, a veth pair into a host bridge.

Design. All nodes of one cluster share one Linux bridge. Each node owns a /24 of the cluster's
pod CIDR (``--pod-cidr``); the first address of it (the *gateway*) is put on the bridge, which
gives the host a route to that node's pods. A pod's ``eth0`` carries its address with the
*cluster* prefix (say /16), so pods of every node are on one link and reach each other without
the host forwarding anything; the default route points at the node's gateway. Nothing leaves the
machine: the bridge has no uplink, and only addresses devcluster created live on it.

Crash safety. Namespaces are named ``podvirt-<instance>-<pod-uid>``, where the instance is a hash
of the node's root directory plus its name (two clusters may both have a ``node-1``), and address
leases are files under ``<root>/ipam``, so a restarted agent finds and removes what a previous
run left behind, and only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
LOCK_DIR = Path("/run/podvirt-devcluster")


class NetworkError(Exception):
    """A network operation failed; the message carries the ``ip`` command and its error."""


@dataclass(frozen=True)
class NetworkConfig:
    bridge: str
    pod_cidr: ipaddress.IPv4Network
    cluster_cidr: ipaddress.IPv4Network

    def __post_init__(self) -> None:
        if not self.bridge or len(self.bridge) > 15 or "/" in self.bridge:
            raise ValueError(f"bridge name {self.bridge!r} is not a valid Linux interface name (1-15 characters)")
        if not self.pod_cidr.subnet_of(self.cluster_cidr):
            raise ValueError(f"pod CIDR {self.pod_cidr} is not inside the cluster CIDR {self.cluster_cidr}")
        if self.pod_cidr.prefixlen > 29:
            raise ValueError(f"pod CIDR {self.pod_cidr} is too small to hold pods")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.pod_cidr.network_address + 1


async def ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run ``ip`` (iproute2); raise NetworkError with its stderr when it fails and ``check`` is set."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        shown = " ".join(args) + (f" <<< {stdin.strip()!r}" if stdin else "")
        raise NetworkError(f"ip {shown} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


def instance_id(root: Path, node: str) -> str:
    """Names this node's host-wide objects (namespaces, cgroups) apart from any other node's."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8] + "-" + node


def netns_name(instance: str, pod_uid: str) -> str:
    return f"podvirt-{instance}-{pod_uid}"


def netns_path(instance: str, pod_uid: str) -> Path:
    return NETNS_DIR / netns_name(instance, pod_uid)


def host_veth(instance: str, pod_uid: str) -> str:
    """The host end's name: stable per pod, unique across nodes, at most 15 characters."""
    return "pv" + hashlib.sha256(f"{instance}/{pod_uid}".encode()).hexdigest()[:12]


@contextlib.contextmanager
def _bridge_lock(bridge: str) -> Iterator[None]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with (LOCK_DIR / f"bridge-{bridge}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _is_bridge(name: str) -> bool:
    return Path(f"/sys/class/net/{name}/bridge").is_dir()


def _exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _ip_sync(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def ensure_bridge(cfg: NetworkConfig) -> None:
    """Create the bridge if needed and put this node's gateway address on it (idempotent)."""
    with _bridge_lock(cfg.bridge):
        if _exists(cfg.bridge) and not _is_bridge(cfg.bridge):
            raise NetworkError(f"{cfg.bridge} exists and is not a bridge; choose another --bridge")
        if not _exists(cfg.bridge):
            _ip_sync("link", "add", cfg.bridge, "type", "bridge")
        # Bridged pod traffic should not meet the host's firewall rules.
        with contextlib.suppress(OSError):
            Path(f"/sys/class/net/{cfg.bridge}/bridge/nf_call_iptables").write_text("0\n")
        addresses = _ip_sync("-o", "-4", "addr", "show", "dev", cfg.bridge)
        if f" {cfg.gateway}/" not in addresses:
            _ip_sync("addr", "add", f"{cfg.gateway}/{cfg.pod_cidr.prefixlen}", "dev", cfg.bridge)
        _ip_sync("link", "set", cfg.bridge, "up")


def release_bridge(cfg: NetworkConfig) -> None:
    """Take this node's gateway off the bridge; delete the bridge when no node and no pod uses it."""
    with _bridge_lock(cfg.bridge):
        if not _is_bridge(cfg.bridge):
            return
        _ip_sync("addr", "del", f"{cfg.gateway}/{cfg.pod_cidr.prefixlen}", "dev", cfg.bridge, check=False)
        addresses = _ip_sync("-o", "-4", "addr", "show", "dev", cfg.bridge).strip()
        ports = list(Path(f"/sys/class/net/{cfg.bridge}/brif").iterdir())
        if not addresses and not ports:
            _ip_sync("link", "del", cfg.bridge, check=False)


class Ipam:
    """Address leases for one node's pod CIDR: one file per address, holding the pod's UID."""

    def __init__(self, directory: Path, cfg: NetworkConfig) -> None:
        self.dir = directory
        self.cfg = cfg
        self._next = 0

    def allocate(self, pod_uid: str) -> ipaddress.IPv4Address:
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self.lookup(pod_uid)
        if existing is not None:
            return existing
        hosts = [h for h in self.cfg.pod_cidr.hosts() if h != self.cfg.gateway]
        # Hand addresses out round-robin so a freed address is not reused at once (stale ARP entries).
        for i in range(len(hosts)):
            addr = hosts[(self._next + i) % len(hosts)]
            try:
                fd = os.open(self.dir / str(addr), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(pod_uid)
            self._next = (self._next + i + 1) % len(hosts)
            return addr
        raise NetworkError(f"no free address left in {self.cfg.pod_cidr}")

    def lookup(self, pod_uid: str) -> ipaddress.IPv4Address | None:
        if not self.dir.is_dir():
            return None
        for lease in self.dir.iterdir():
            with contextlib.suppress(OSError):
                if lease.read_text() == pod_uid:
                    return ipaddress.IPv4Address(lease.name)
        return None

    def release(self, pod_uid: str) -> None:
        addr = self.lookup(pod_uid)
        if addr is not None:
            (self.dir / str(addr)).unlink(missing_ok=True)

    def clear(self) -> None:
        if self.dir.is_dir():
            for lease in self.dir.iterdir():
                lease.unlink(missing_ok=True)


async def setup_pod(cfg: NetworkConfig, instance: str, pod_uid: str, address: ipaddress.IPv4Address) -> Path:
    """Create the pod's namespace with ``eth0`` on the bridge and ``lo`` up; return the namespace path."""
    name = netns_name(instance, pod_uid)
    veth = host_veth(instance, pod_uid)
    await teardown_pod(instance, pod_uid)
    try:
        await ip(
            "-batch",
            "-",
            stdin=(
                f"netns add {name}\n"
                f"link add {veth} type veth peer name eth0 netns {name}\n"
                f"link set dev {veth} master {cfg.bridge} up\n"
            ),
        )
        await ip(
            "-n",
            name,
            "-batch",
            "-",
            stdin=(
                "link set lo up\n"
                f"addr add {address}/{cfg.cluster_cidr.prefixlen} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {cfg.gateway} dev eth0\n"
            ),
        )
    except NetworkError:
        await teardown_pod(instance, pod_uid)
        raise
    return NETNS_DIR / name


async def teardown_pod(instance: str, pod_uid: str) -> None:
    """Remove the pod's namespace (which takes its veth pair along); harmless when already gone."""
    if (NETNS_DIR / netns_name(instance, pod_uid)).exists():
        await ip("netns", "del", netns_name(instance, pod_uid), check=False)
    veth = host_veth(instance, pod_uid)
    if _exists(veth):
        await ip("link", "del", veth, check=False)


def sweep(instance: str) -> list[str]:
    """Remove every namespace (and host veth) a previous run of this node instance left; return their names."""
    removed = []
    prefix = f"podvirt-{instance}-"
    if NETNS_DIR.is_dir():
        for entry in sorted(NETNS_DIR.iterdir()):
            if entry.name.startswith(prefix):
                _ip_sync("netns", "del", entry.name, check=False)
                veth = host_veth(instance, entry.name[len(prefix) :])
                if _exists(veth):
                    _ip_sync("link", "del", veth, check=False)
                removed.append(entry.name)
    return removed
