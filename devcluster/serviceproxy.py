"""devcluster's stand-in service proxy: ClusterIP Services answer, through real kernel forwarding.

A development substitute for kube-proxy in its nftables mode, not kube-proxy. One process per
cluster (``python -m devcluster.serviceproxy``, supervised as ``service-proxy``) watches Services
and EndpointSlices (discovery.k8s.io/v1) as the cluster admin and keeps one nftables table of its
own, ``ip podvirt_svc_<bridge>`` (the cluster's bridge names the cluster on this machine), that
DNATs ``ClusterIP:port`` (TCP and UDP) to a random ready endpoint. Every change replaces the whole
table in one ``nft -f`` transaction; the rules themselves are rendered by the pure
:mod:`devcluster.servicerules`, which says what each chain does.

It works from the host (the nat ``output`` hook: the kube-apiserver dials a webhook's or an
APIService's ClusterIP, tests use ``urllib``) and from pods (the nat ``prerouting`` hook on the
bridge), including a pod reaching itself through its own Service. For that it also sets, on the
cluster's bridge only: IPv4 forwarding (``net.ipv4.conf.<bridge>.forwarding``; the table lets
routed traffic from the bridge go nowhere but back onto it) and ``hairpin_mode`` on the bridge's
ports (a kubelet's job on a real node: with ``br_netfilter`` loaded, service traffic DNATed back
to the pod that sent it is bridged out of the port it came in on).

What it does not do: NodePort, LoadBalancer and externalIPs (a NodePort or LoadBalancer Service
gets its ClusterIP part only), ExternalName (left alone), session affinity, traffic policies and
topology, SCTP, IPv6. The client's address is not preserved: every proxied connection is
masqueraded to the bridge's address. There is no DNS: ``<svc>.<ns>.svc`` names do not resolve in
pods (the kube-apiserver needs none: it resolves a webhook's or APIService's Service to its
ClusterIP itself). A ``hostNetwork`` pod's endpoint is its node's address on the bridge (the
node's InternalIP; EndpointSlices refuse loopback), so it must listen there too. All clusters on this
machine allocate ClusterIPs from the same range: host traffic to a ClusterIP that two running
clusters both use goes to whichever table's rule the kernel meets first.

On SIGTERM it deletes its table and turns forwarding on the bridge off again; ``devcluster down``
(:func:`devcluster.cluster.sweep`) does the same after a crash, through :func:`remove`.

Flags: ``--kubeconfig PATH`` (admin), ``--bridge NAME``, ``--service-cidr CIDR``,
``--resync SECONDS`` (re-apply the table even when nothing changed, default 60).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

from devcluster import servicerules
from podvirt_common import logs
from podvirt_common.kube import GoneError, Kube, Obj, Resource

log = logging.getLogger("devcluster.serviceproxy")

SERVICES = Resource("", "v1", "services", "Service")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
#: Changes that arrive together (a Service and its first EndpointSlice) become one transaction.
DEBOUNCE = 0.05
WATCH_TIMEOUT = 300


class NftError(RuntimeError):
    """``nft`` refused a transaction; the message carries its error output."""


def nft(script: str) -> None:
    """Run one ``nft -f -`` transaction."""
    proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NftError(f"nft -f failed ({proc.returncode}): {proc.stderr.strip()}")


def _write_if_different(path: Path, value: str) -> None:
    """Set a sysctl or sysfs knob; an interface that vanished meanwhile is not an error."""
    with contextlib.suppress(OSError):
        if path.read_text().strip() != value:
            path.write_text(value + "\n")


def prepare_bridge(bridge: str) -> None:
    """Forwarding on for packets arriving on the bridge, hairpin on for each of its ports (idempotent)."""
    _write_if_different(Path("/proc/sys/net/ipv4/conf") / bridge / "forwarding", "1")
    brif = Path("/sys/class/net") / bridge / "brif"
    with contextlib.suppress(OSError):
        for port in brif.iterdir():
            _write_if_different(port / "hairpin_mode", "1")


def remove(bridge: str) -> None:
    """Delete the cluster's table (by its exact name) and turn forwarding on its bridge off again."""
    nft(servicerules.delete_script(bridge))
    _write_if_different(Path("/proc/sys/net/ipv4/conf") / bridge / "forwarding", "0")


class Informer:
    """One resource kind, listed and then watched in a thread; ``changed`` is set after every change."""

    def __init__(self, kube: Kube, resource: Resource, changed: threading.Event) -> None:
        self.kube = kube
        self.resource = resource
        self.changed = changed
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], Obj] = {}

    def snapshot(self) -> list[Obj]:
        with self._lock:
            return list(self._objects.values())

    @staticmethod
    def _key(obj: Obj) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return meta.get("namespace", ""), meta.get("name", "")

    def _list(self) -> str:
        """Replace the store with a fresh list; return the list's resourceVersion."""
        items: list[Obj] = []
        meta: Obj = {}
        query: dict[str, str | int | bool] = {"limit": 500}
        while True:
            page = self.kube.request("GET", self.resource.path(), query=query)
            items += page.get("items") or []
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            query["continue"] = meta["continue"]
        with self._lock:
            self._objects = {self._key(obj): obj for obj in items}
        self.synced.set()
        self.changed.set()
        return str(meta.get("resourceVersion") or "")

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                version = self._list()
                failures = 0
                while not stop.is_set():
                    for kind, obj in self.kube.watch(
                        self.resource, resource_version=version, timeout_seconds=WATCH_TIMEOUT
                    ):
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind == "BOOKMARK":
                            continue
                        with self._lock:
                            if kind == "DELETED":
                                self._objects.pop(self._key(obj), None)
                            else:
                                self._objects[self._key(obj)] = obj
                        self.changed.set()
            except GoneError:
                log.info("%s watch expired; listing again", self.resource.plural)
            except Exception as exc:
                failures += 1
                log.warning("%s list/watch failed (%s); retrying", self.resource.plural, exc)
                stop.wait(min(10.0, 0.2 * 2**failures))


class ServiceProxy:
    """Keeps the cluster's table equal to what the watched Services and EndpointSlices say."""

    def __init__(self, kube: Kube, bridge: str, service_cidr: str, resync: float = 60.0) -> None:
        servicerules.table_name(bridge)  # refuse a bridge name nft cannot carry, before anything runs
        self.bridge = bridge
        self.service_cidr = service_cidr
        self.resync = resync
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.services = Informer(kube, SERVICES, self.changed)
        self.slices = Informer(kube, ENDPOINT_SLICES, self.changed)

    def request_stop(self) -> None:
        self.stop.set()
        self.changed.set()

    def render(self) -> str:
        ports = servicerules.service_ports(self.services.snapshot(), self.slices.snapshot())
        return servicerules.table_definition(self.bridge, self.service_cidr, ports)

    def run(self) -> None:
        for informer in (self.services, self.slices):
            threading.Thread(target=informer.run, args=(self.stop,), name=informer.resource.plural, daemon=True).start()
        while not self.stop.is_set() and not (self.services.synced.is_set() and self.slices.synced.is_set()):
            self.stop.wait(0.05)
        applied: str | None = None
        applied_at = 0.0
        try:
            while not self.stop.is_set():
                self.changed.clear()
                # Forwarding and hairpin first: a new endpoint must work once its rule exists.
                prepare_bridge(self.bridge)
                definition = self.render()
                if definition != applied or time.monotonic() - applied_at > self.resync:
                    try:
                        nft(servicerules.replace_script(self.bridge, definition))
                    except NftError:
                        log.exception("could not program the service table; trying again")
                    else:
                        if definition != applied:
                            log.info(
                                "programmed table %s: %s",
                                servicerules.table_name(self.bridge),
                                self._summary(definition),
                            )
                        applied, applied_at = definition, time.monotonic()
                if self.changed.wait(1.0):
                    self.stop.wait(DEBOUNCE)
        finally:
            remove(self.bridge)
            log.info("removed table %s", servicerules.table_name(self.bridge))

    @staticmethod
    def _summary(definition: str) -> str:
        services = definition.count("\tchain svc-")
        endpoints = definition.count("\tchain ep-")
        return f"{services} service ports with endpoints, {endpoints} endpoint rules"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devcluster.serviceproxy", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", required=True, type=Path)
    p.add_argument("--bridge", required=True)
    p.add_argument("--service-cidr", required=True)
    p.add_argument("--resync", type=float, default=60.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup()
    kube = Kube.connect(args.kubeconfig, user_agent="devcluster-service-proxy")
    proxy = ServiceProxy(kube, args.bridge, args.service_cidr, args.resync)

    def on_term(signum: int, frame: FrameType | None) -> None:
        proxy.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    proxy.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
