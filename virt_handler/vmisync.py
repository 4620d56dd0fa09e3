"""Driving one VMI on this node through its launcher, level-based: look at the VMI, its pod and its
domain as they are now, and do the next thing — prepare the pod network, hand over the spec, ask
for a shutdown, or write status. Called for a VMI whenever anything about it changes, and on a
periodic resync; every step is safe to repeat, so a handler restart is just another call.

Each VMI with a launcher also has one follower thread: it long-polls the launcher's events (waking the
VMI's sync when something happens) and, while the domain runs, asks the guest agent every
:data:`guestagent.POLL_INTERVAL` s (less often while it has not answered) and at once after an
agent (dis)connect event. Agent answers go
into the VMI's memory (:class:`guestagent.AgentTracker`) and the sync is woken only when they change,
so the workers never wait on a guest agent and status is patched only when it differs. Nor do they
wait for a launcher to start its domain: the spec is handed over from a thread of the VMI's own,
which wakes the sync when the launcher answers.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES, ConflictError, Kube, NotFoundError
from virt_handler import podnetwork
from virt_handler.dhcp import DHCPServer, Lease
from virt_handler.guestagent import AgentTracker, parse_guest_info
from virt_handler.launcher_client import (
    COMMAND_SOCKET,
    LauncherClient,
    LauncherError,
    LauncherTarget,
    LauncherUnreachableError,
    encode_capabilities,
)
from virt_handler.vmistatus import FINAL_PHASES, DomainState, Observation, status_patch

log = logging.getLogger("virt_handler.vmisync")
Obj = dict[str, Any]

SOCKETS_VOLUME = "sockets"
LAUNCHER_CONTAINER = "compute"
EMPTY_DIR = "kubernetes.io~empty-dir"
DEFAULT_GRACE = 30


def rfc3339(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class VMIMemory:
    """What the handler remembers about a VMI between calls (lost on restart, by design)."""

    pod_uid: str = ""
    unreachable_since: float | None = None
    network_ready: bool = False
    shutdown_requested: bool = False
    event_watcher: threading.Thread | None = None
    stop_watching: threading.Event = field(default_factory=threading.Event)
    # Whether the guest can answer its agent (domain running, not paused): set by sync and by events.
    guest_running: bool = False
    agent: AgentTracker = field(default_factory=AgentTracker)
    # The spec's hand-over (the launcher prepares disks and starts QEMU meanwhile) and, after a refusal,
    # when to try again.
    handover: threading.Thread | None = None
    handover_retry_at: float = 0.0


def launcher_pod(vmi: Obj, pods: list[Obj], node: str) -> Obj | None:
    """The VMI's launcher pod on this node, as the API says (never as a launcher says)."""
    uid = (vmi.get("metadata") or {}).get("uid")
    active = ((vmi.get("status") or {}).get("activePods")) or {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (pod.get("spec") or {}).get("nodeName") != node:
            continue
        owned = any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])
        if owned and (not active or meta.get("uid") in active):
            return pod
    return None


def launcher_user(pod: Obj) -> int | None:
    spec = pod.get("spec") or {}
    for container in spec.get("containers") or []:
        if container.get("name") == LAUNCHER_CONTAINER:
            user = (container.get("securityContext") or {}).get("runAsUser")
            if isinstance(user, int):
                return user
    user = (spec.get("securityContext") or {}).get("runAsUser")
    return user if isinstance(user, int) else None


def masquerade_plan(vmi: Obj, owner: int) -> podnetwork.MasqueradePlan | None:
    """The masquerade plan for the VMI's pod-network interface, or None when it has none."""
    spec = vmi.get("spec") or {}
    pod_networks = {n.get("name") for n in spec.get("networks") or [] if "pod" in n}
    for iface in ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []:
        if iface.get("name") in pod_networks and "masquerade" in iface:
            ports = tuple(
                podnetwork.Port(int(p["port"]), str(p.get("protocol", "TCP")).upper()) for p in iface.get("ports") or []
            )
            return podnetwork.MasqueradePlan(tap_owner=owner, ports=ports, guest_mac=iface.get("macAddress"))
    return None


def guest_address(vmi: Obj) -> ipaddress.IPv4Address | None:
    """The guest's address on the pod network as this handler's own plan gives it (None: no masquerade)."""
    plan = masquerade_plan(vmi, owner=0)
    return None if plan is None else plan.guest


def pod_interfaces(vmi: Obj, pod: Obj) -> tuple[dict[str, Any], ...]:
    """``status.interfaces``: a masquerade interface is reached at the pod's own address, as in KubeVirt."""
    pod_status = pod.get("status") or {}
    ips = [p["ip"] for p in pod_status.get("podIPs") or [] if p.get("ip")] or (
        [pod_status["podIP"]] if pod_status.get("podIP") else []
    )
    spec = vmi.get("spec") or {}
    pod_networks = {n.get("name") for n in spec.get("networks") or [] if "pod" in n}
    out = []
    for iface in ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []:
        if iface.get("name") not in pod_networks or not ips:
            continue
        entry: dict[str, Any] = {"name": iface["name"], "ipAddress": ips[0], "ipAddresses": ips, "infoSource": "domain"}
        if iface.get("macAddress"):
            entry["mac"] = iface["macAddress"]
        out.append(entry)
    return tuple(out)


def peer_pid(target: LauncherTarget) -> int:
    """The launcher's pid as the kernel reports it for its command socket (SO_PEERCRED)."""
    sock = LauncherClient(target)._connect(COMMAND_SOCKET)
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    finally:
        sock.close()
    pid, _, _ = struct.unpack("3i", creds)
    return int(pid)


#: Seconds a launcher may stay unreachable, as while it starts, before the handler warns about it.
STARTUP_QUIET = 5.0
#: The longest the follower waits for a launcher event.
EVENT_WAIT = 25.0
#: Domain states in which the guest can answer its agent.
AGENT_STATES = frozenset({DomainState.RUNNING, DomainState.BLOCKED})
#: Seconds before a spec the launcher refused is handed over again.
HANDOVER_RETRY = 10.0
#: Seconds a launcher may take to open its socket while it starts (many on a loaded node).
STARTUP_WINDOW = 60.0


def next_look(unreachable_for: float) -> float:
    """Seconds until an unreachable launcher is looked at again. While it may still be starting, at most
    a second late (a backoff proportional to the wait made a start that took 20 s look 30 s long); after
    :data:`STARTUP_WINDOW`, backing off to every 30 s."""
    if unreachable_for < STARTUP_WINDOW:
        return min(1.0, 0.1 + unreachable_for / 10)
    return min(30.0, unreachable_for / 2)


class VMISync:
    def __init__(
        self,
        kube: Kube,
        node: str,
        kubelet_root: Path,
        dhcp: DHCPServer,
        enqueue: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        qemu_capabilities: dict[str, str] | None = None,
    ) -> None:
        self.kube = kube
        self.node = node
        self.kubelet_root = kubelet_root
        self.dhcp = dhcp
        self.enqueue = enqueue
        self.clock = clock
        #: Sent with every spec hand-over (see :mod:`podvirt_common.qemucaps`), encoded once.
        self.qemu_capabilities = encode_capabilities(qemu_capabilities or {})
        self.memory: dict[str, VMIMemory] = {}

    def target(self, vmi: Obj, pod: Obj) -> LauncherTarget:
        meta, pod_meta = vmi["metadata"], pod["metadata"]
        return LauncherTarget(
            namespace=meta["namespace"],
            name=meta["name"],
            vmi_uid=meta["uid"],
            pod_uid=pod_meta["uid"],
            sockets_root=self.kubelet_root / "pods" / pod_meta["uid"] / "volumes" / EMPTY_DIR,
            sockets_volume=SOCKETS_VOLUME,
            owner_uid=launcher_user(pod),
        )

    def forget(self, key: str) -> None:
        mem = self.memory.pop(key, None)
        if mem is not None:
            mem.stop_watching.set()
        self.dhcp.forget(key)

    def sync(self, key: str, vmi: Obj | None, pods: list[Obj]) -> float | None:
        """Bring one VMI forward; returns seconds until it should be looked at again (None: no need)."""
        if vmi is None:
            self.forget(key)
            return None
        status = vmi.get("status") or {}
        if status.get("phase") in FINAL_PHASES and not (vmi["metadata"].get("deletionTimestamp")):
            self.forget(key)
            return None
        pod = launcher_pod(vmi, pods, self.node)
        if pod is None or (pod.get("status") or {}).get("phase") != "Running":
            return None
        mem = self.memory.setdefault(key, VMIMemory())
        if mem.pod_uid != pod["metadata"]["uid"]:
            self.forget(key)
            mem = self.memory.setdefault(key, VMIMemory(pod_uid=pod["metadata"]["uid"]))
        target = self.target(vmi, pod)
        client = LauncherClient(target)
        now = self.clock()
        try:
            if vmi["metadata"].get("deletionTimestamp") or pod["metadata"].get("deletionTimestamp"):
                info = self._shut_down(vmi, client, mem)
            else:
                info = client.domain()
                if info.phase == "WaitingForSpec" or (info.domain is not None and not mem.network_ready):
                    self._prepare_network(key, vmi, target, mem)
                if info.phase == "WaitingForSpec":
                    wait = mem.handover_retry_at - now
                    if wait > 0:
                        return wait
                    self._hand_over(key, vmi, client, mem)
            mem.unreachable_since = None
            mem.guest_running = info.domain is not None and info.domain.state in AGENT_STATES
            self._watch_events(key, client, mem)
            # Stamped when the launcher answered, not when this sync began (on a loaded node that can be
            # seconds apart): a phase's transition time (Running) is when the domain was found in it.
            obs = Observation(
                now=rfc3339(self.clock()),
                domain=info.domain,
                interfaces=pod_interfaces(vmi, pod),
                agent=mem.agent.state,
            )
        except LauncherUnreachableError as exc:
            mem.unreachable_since = mem.unreachable_since or now
            # A starting launcher has no socket yet for a moment: not worth a warning.
            level = logging.WARNING if now - mem.unreachable_since >= STARTUP_QUIET else logging.DEBUG
            log.log(level, "%s: launcher unreachable for %.0f s: %s", key, now - mem.unreachable_since, exc)
            obs = Observation(rfc3339(now), None, reachable=False, unreachable_for=now - mem.unreachable_since)
            self._write_status(vmi, obs)
            return next_look(now - mem.unreachable_since)
        except LauncherError as exc:
            log.error("%s: the launcher refused: %s", key, exc)
            return 10.0
        self._write_status(vmi, obs)
        return 5.0

    def _shut_down(self, vmi: Obj, client: LauncherClient, mem: VMIMemory) -> Any:
        if not mem.shutdown_requested:
            grace = (vmi.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE)
            log.info(
                "%s/%s: shutting the guest down (grace %s s)",
                vmi["metadata"]["namespace"],
                vmi["metadata"]["name"],
                grace,
            )
            mem.shutdown_requested = True
            return client.shutdown(int(grace))
        return client.domain()

    def _prepare_network(self, key: str, vmi: Obj, target: LauncherTarget, mem: VMIMemory) -> None:
        plan = masquerade_plan(vmi, target.owner_uid if target.owner_uid is not None else 107)
        if plan is None:
            mem.network_ready = True
            return
        with podnetwork.PinnedNetns(peer_pid(target)) as netns:
            if netns.is_host_namespace():
                log.warning("%s: the launcher shares the node's network; leaving the network to the launcher", key)
                mem.network_ready = True
                return
            podnetwork.apply(netns.fd, plan)
            spec = vmi.get("spec") or {}
            lease = Lease(
                address=plan.guest,
                gateway=plan.gateway,
                mtu=plan.mtu,
                hostname=spec.get("hostname") or vmi["metadata"]["name"],
                mac=plan.guest_mac.lower() if plan.guest_mac else None,
            )
            self.dhcp.serve(key, netns.fd, plan.bridge, lease)
        mem.network_ready = True

    def _hand_over(self, key: str, vmi: Obj, client: LauncherClient, mem: VMIMemory) -> None:
        """Give the launcher its spec from a thread of the VMI's own, and look at the VMI again when the
        launcher answers. The answer comes once disks are prepared and QEMU started: a second or so with
        KVM, up to :data:`~virt_handler.launcher_client.SYNC_TIMEOUT` on a loaded node. Waiting for it in
        a worker would hold the worker that long, and a few starting launchers would stall every other
        VMI on the node (their hand-overs, status and shutdowns) behind them."""
        if mem.handover is not None and mem.handover.is_alive():
            return

        def hand_over() -> None:
            try:
                client.sync(vmi, self.qemu_capabilities)
            except LauncherUnreachableError as exc:
                log.warning("%s: the launcher did not take the spec: %s", key, exc)
            except LauncherError as exc:
                log.error("%s: the launcher refused the spec: %s", key, exc)
                mem.handover_retry_at = self.clock() + HANDOVER_RETRY
            if not mem.stop_watching.is_set():
                self.enqueue(key)

        log.info("%s: handing the spec to the launcher", key)
        mem.handover = threading.Thread(target=hand_over, name=f"handover-{key}", daemon=True)
        mem.handover.start()

    def _watch_events(self, key: str, client: LauncherClient, mem: VMIMemory) -> None:
        if mem.event_watcher is not None and mem.event_watcher.is_alive():
            return

        def follow() -> None:
            since = 0
            while not mem.stop_watching.is_set():
                now = time.monotonic()
                wait = min(EVENT_WAIT, mem.agent.seconds_until_due(now)) if mem.guest_running else EVENT_WAIT
                try:
                    events, since = client.events(since, wait=wait)
                except LauncherError:
                    mem.stop_watching.wait(2)
                    continue
                for event in events:
                    if isinstance(event.get("state"), str):
                        mem.guest_running = event["state"] in AGENT_STATES
                    if event.get("type") in ("AgentConnected", "AgentDisconnected"):
                        mem.agent.poke()
                changed = False
                if mem.guest_running and mem.agent.due(time.monotonic()):
                    changed = self._poll_agent(key, client, mem)
                if events or changed:
                    self.enqueue(key)

        mem.event_watcher = threading.Thread(target=follow, name=f"events-{key}", daemon=True)
        mem.event_watcher.start()

    def _poll_agent(self, key: str, client: LauncherClient, mem: VMIMemory) -> bool:
        """Ask the guest agent once (bounded by the launcher's agent timeout and the client's); True: news."""
        try:
            raw = client.guest_info()
        except LauncherUnreachableError:
            mem.agent.postpone(time.monotonic())  # the launcher, not the agent: the sync reports that
            return False
        except LauncherError as exc:
            changed = mem.agent.missed(time.monotonic())
            if changed:
                log.info("%s: guest agent not answering: %s", key, exc)
            return changed
        was_connected = mem.agent.state is not None and mem.agent.state.connected
        changed = mem.agent.answered(time.monotonic(), parse_guest_info(raw))
        if not was_connected:
            log.info("%s: guest agent connected", key)
        return changed

    def _write_status(self, vmi: Obj, obs: Observation) -> None:
        patch = status_patch(vmi, obs)
        if not patch:
            return
        meta = vmi["metadata"]
        try:
            self.kube.merge_patch(
                VIRTUAL_MACHINE_INSTANCES,
                meta["name"],
                {"status": patch},
                namespace=meta["namespace"],
                subresource="status",
                resource_version=meta.get("resourceVersion"),
            )
        except ConflictError:
            self.enqueue(f"{meta['namespace']}/{meta['name']}")
        except NotFoundError:
            pass
