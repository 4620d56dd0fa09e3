"""The stand-in node agent: registers the Node, renews its Lease, watches its pods, runs them.

Restart policy of the agent itself (a deliberate difference from a kubelet): pods' processes are
the agent's children, so they do not outlive it. On SIGTERM the agent stops every pod (grace
period capped by ``--shutdown-grace``), reports each still-running pod Failed with reason
``NodeAgentStopped``, marks the Node NotReady and takes its gateway off the bridge. If it dies
without that chance (SIGKILL, crash), each container's main process gets SIGKILL from the kernel
(parent-death signal) and the next start (or ``--cleanup``) removes the rest: it kills what is
left in the node's cgroups and recorded process groups, deletes its network namespaces, unmounts,
and then reports every pod bound here that it had started as Failed (``NodeAgentRestarted``)
rather than pretending it still runs. Pods bound here that never started are simply started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from devcluster import binaries, processes
from devcluster.images import ImageStore
from devcluster.node import network
from devcluster.node.api import ApiError, KubeClient, load_kubeconfig
from devcluster.node.backoff import Clock, SystemClock
from devcluster.node.config import NodeConfig
from devcluster.node.context import NodeContext, write_json_atomic
from devcluster.node.devicemanager import DeviceManager
from devcluster.node.pod import Ending, PodWorker
from devcluster.node.process import Cgroups
from devcluster.node.status import TERMINAL_PHASES, lost_pod_status, rfc3339

log = logging.getLogger("devcluster.node")
AGENT_VERSION = "0.1.0"
NODE_STATUS_EVERY = 60.0
DEVICE_STATUS_DELAY = 0.2
WATCH_TIMEOUT = 300


def cleanup(root: Path, name: str, net: network.NetworkConfig | None = None) -> set[str]:
    """Remove everything a previous run of node ``name`` with this root left on the host.

    Kills leftover container processes (by recorded process group and by cgroup), deletes the
    node's network namespaces, unmounts anything under ``root/pods`` and removes the pod
    directories; with ``net``, also takes the node's gateway off the bridge (and the bridge away
    when no other node uses it). Returns the UIDs of the pods that had directories (they ran
    here before). Safe to call when nothing is left; used at agent start and stop, and by
    ``python -m devcluster.node ... --cleanup`` after an agent was killed.
    """
    root = root.resolve()
    instance = network.instance_id(root, name)
    for record in processes.load_records(root / "processes.json"):
        record.signal_group(signal.SIGKILL)
    cgroups = Cgroups(instance)
    if cgroups.base is not None:
        cgroups.remove(cgroups.base)
        with contextlib.suppress(OSError):
            cgroups.base.parent.rmdir()
    network.sweep(instance)
    pods_dir = root / "pods"
    for mount in reversed(_mounts_under(pods_dir)):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    previous: set[str] = set()
    if pods_dir.is_dir():
        previous = {p.name for p in pods_dir.iterdir() if p.is_dir()}
        shutil.rmtree(pods_dir, ignore_errors=True)
    shutil.rmtree(root / "ipam", ignore_errors=True)
    (root / "processes.json").unlink(missing_ok=True)
    if net is not None:
        network.release_bridge(net)
    return previous


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefix):
                found.append(mount_point)
    return found


class NodeAgent:
    def __init__(self, config: NodeConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.name = config.name
        self.instance = network.instance_id(config.root, config.name)
        self.workers: dict[str, PodWorker] = {}
        self._finished_uids: set[str] = set()
        self._previous_uids: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._api: KubeClient | None = None
        self._ctx: NodeContext | None = None
        self.devices = DeviceManager(config.root, on_change=self._devices_changed)
        self._status_due = asyncio.Event()
        self._stale_extended: set[str] = set()  # extended resources a previous run left on the Node

    @property
    def api(self) -> KubeClient:
        assert self._api is not None
        return self._api

    @property
    def ctx(self) -> NodeContext:
        assert self._ctx is not None
        return self._ctx

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        log.info(
            "devcluster stand-in node agent %s starting (a development substitute for a kubelet, not a kubelet; "
            "it runs containers' commands from this host and ignores their images)",
            AGENT_VERSION,
        )
        cfg.root.mkdir(parents=True, exist_ok=True)
        cfg.root.chmod(0o750)
        self._previous_uids = cleanup(cfg.root, cfg.name)
        if self._previous_uids:
            log.info("cleaned up %d pods of a previous run", len(self._previous_uids))
        network.ensure_bridge(cfg.network)
        endpoint = load_kubeconfig(cfg.kubeconfig)
        self._api = KubeClient(endpoint)
        self._ctx = NodeContext(
            node=cfg.name,
            instance=self.instance,
            root=cfg.root,
            clock=self.clock,
            api=self._api,
            api_endpoint=endpoint,
            network=cfg.network,
            ipam=network.Ipam(cfg.root / "ipam", cfg.network),
            cgroups=Cgroups(self.instance),
            images=ImageStore(cfg.image_store),
            host_ip=cfg.host_ip,
            allocatable=dict(cfg.capacity),
            shutdown_grace=cfg.shutdown_grace,
            devices=self.devices,
            on_forget=self._forget,
            on_processes_changed=self._save_processes,
        )
        try:
            await self.devices.start()
            await self._register(stop)
            background = [
                asyncio.create_task(self._lease_loop()),
                asyncio.create_task(self._node_status_loop()),
                asyncio.create_task(self._watch_pods()),
            ]
            log.info("node %s registered; pod CIDR %s on bridge %s", cfg.name, cfg.network.pod_cidr, cfg.network.bridge)
            await stop.wait()
            log.info("stopping: ending %d pods", len(self.workers))
            background[2].cancel()
            await self._stop_pods()
            for task in background:
                task.cancel()
            await self._set_ready(False, "NodeAgentStopped", "the devcluster stand-in node agent stopped")
        finally:
            await self.devices.stop()
            for worker in list(self.workers.values()):
                if worker.task is not None:
                    worker.task.cancel()
            await self.api.aclose()
            cleanup(cfg.root, cfg.name, cfg.network)
            log.info("stopped")

    async def _stop_pods(self) -> None:
        tasks = []
        for worker in list(self.workers.values()):
            worker.end(Ending.SHUTDOWN)
            if worker.task is not None:
                tasks.append(worker.task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.shutdown_grace + 10)

    def _forget(self, uid: str) -> None:
        self.devices.release(uid)
        self.workers.pop(uid, None)
        self._finished_uids.add(uid)

    def _save_processes(self) -> None:
        records = []
        for worker in self.workers.values():
            for cname, proc in worker.processes.items():
                if proc.start_ticks is not None:
                    records.append(
                        processes.ProcessRecord(f"{worker.key}/{cname}", proc.pid, proc.pid, proc.start_ticks)
                    )
        write_json_atomic(self.config.root / "processes.json", [r.to_json() for r in records])

    # -- the Node and its Lease -----------------------------------------------------------

    def _node_object(self) -> dict[str, Any]:
        # No node-role.kubernetes.io/* label: NodeRestriction refuses it from the node itself (as it
        # does from a kubelet); whoever administers the cluster may add one with admin credentials.
        cfg = self.config
        os_name, arch = "linux", _goarch()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": cfg.name,
                "labels": {
                    "kubernetes.io/hostname": cfg.name,
                    "kubernetes.io/os": os_name,
                    "kubernetes.io/arch": arch,
                    "beta.kubernetes.io/os": os_name,
                    "beta.kubernetes.io/arch": arch,
                    "node.podvirt.io/stand-in": "true",
                },
                "annotations": {
                    "node.podvirt.io/agent": "devcluster stand-in node agent (not a kubelet)",
                    "node.podvirt.io/root": str(cfg.root),
                },
            },
            "spec": {"podCIDR": str(cfg.network.pod_cidr), "podCIDRs": [str(cfg.network.pod_cidr)]},
        }

    def _node_status(self, ready: bool = True, reason: str = "KubeletReady", message: str = "") -> dict[str, Any]:
        cfg = self.config
        now = rfc3339(self.clock.now())
        message = message or "the devcluster stand-in node agent is running pods"
        disk = shutil.disk_usage(cfg.root)

        def cond(ctype: str, status: str, why: str, text: str) -> dict[str, Any]:
            return {
                "type": ctype,
                "status": status,
                "reason": why,
                "message": text,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        # Extended resources of device plugins (and zero for those a previous run left, until their
        # plugin registers again: the kubelet resets them on restart, so no pod lands on a stale count).
        capacity = {
            **cfg.capacity,
            "ephemeral-storage": str(disk.total),
            **dict.fromkeys(self._stale_extended, "0"),
            **self.devices.capacity(),
        }
        allocatable = {**capacity, **self.devices.allocatable()}
        return {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "not measured by the stand-in agent"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "not measured by the stand-in agent"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "not measured by the stand-in agent"),
                cond("Ready", "True" if ready else "False", reason, message),
            ],
            "addresses": [{"type": "InternalIP", "address": cfg.host_ip}, {"type": "Hostname", "address": cfg.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": "",
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": f"devcluster-stand-in://{AGENT_VERSION}",
                "kubeletVersion": f"{binaries.KUBERNETES_VERSION}+devcluster.standin",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _goarch(),
            },
        }

    async def _register(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                await self._register_once()
                return
            except (ApiError, httpx.HTTPError, OSError) as exc:
                log.warning("registering node %s: %s", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _register_once(self) -> None:
        body = self._node_object()
        try:
            await self.api.request("POST", "/api/v1/nodes", body=body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            existing = await self.api.get(f"/api/v1/nodes/{self.name}")
            self._stale_extended = {r for r in (existing.get("status") or {}).get("capacity") or {} if "/" in r}
            if existing.get("spec", {}).get("podCIDR") not in (None, str(self.config.network.pod_cidr)):
                raise ApiError(
                    409,
                    "PodCIDRMismatch",
                    f"Node {self.name} exists with podCIDR {existing['spec']['podCIDR']}, not "
                    f"{self.config.network.pod_cidr}; delete the Node or use the same --pod-cidr",
                ) from exc
            meta = {"labels": body["metadata"]["labels"], "annotations": body["metadata"]["annotations"]}
            await self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                body={"metadata": meta},
                content_type="application/merge-patch+json",
            )
        await self._patch_node_status(self._node_status())

    async def _patch_node_status(self, status: dict[str, Any]) -> None:
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            body={"status": status},
            content_type="application/strategic-merge-patch+json",
        )

    async def _set_ready(self, ready: bool, reason: str, message: str) -> None:
        with contextlib.suppress(ApiError, httpx.HTTPError, OSError):
            await asyncio.wait_for(self._patch_node_status(self._node_status(ready, reason, message)), 5)

    def _devices_changed(self) -> None:
        self._status_due.set()

    async def _node_status_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_due.wait(), NODE_STATUS_EVERY)
            if self._status_due.is_set():
                await asyncio.sleep(DEVICE_STATUS_DELAY)  # gather a burst of device changes into one patch
                self._status_due.clear()
            try:
                await self._patch_node_status(self._node_status())
            except (ApiError, httpx.HTTPError, OSError) as exc:
                log.warning("updating node status: %s", exc)

    async def _lease_loop(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        every = max(self.config.lease_seconds / 4, 1.0)
        while True:
            renew = self.clock.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            try:
                await self.api.request(
                    "PATCH",
                    path,
                    body={"spec": {"renewTime": renew, "holderIdentity": self.name}},
                    content_type="application/merge-patch+json",
                )
            except ApiError as exc:
                if exc.status == 404:
                    await self._create_lease(renew)
                else:
                    log.warning("renewing lease: %s", exc)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("renewing lease: %s", exc)
            await asyncio.sleep(every)

    async def _create_lease(self, renew: str) -> None:
        node = await self.api.get(f"/api/v1/nodes/{self.name}")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": "kube-node-lease",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
                ],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": self.config.lease_seconds,
                "renewTime": renew,
            },
        }
        try:
            await self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body=lease)
        except ApiError as exc:
            if exc.status != 409:
                raise

    # -- pods -----------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.name}"}
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    listing = await self.api.get("/api/v1/pods", params=params)
                    resource_version = str(listing["metadata"]["resourceVersion"])
                    self._sync(listing.get("items") or [])
                watch_params = {**params, "resourceVersion": resource_version, "timeoutSeconds": str(WATCH_TIMEOUT)}
                async for event in self.api.watch("/api/v1/pods", watch_params):
                    obj = event["object"]
                    resource_version = str(obj["metadata"]["resourceVersion"])
                    if event["type"] == "DELETED":
                        self._on_deleted(obj)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._on_pod(obj)
            except ApiError as exc:
                if exc.status == 410:
                    resource_version = None  # too old: list again
                    continue
                log.warning("watching pods: %s", exc)
                await asyncio.sleep(1.0)
            except (httpx.HTTPError, OSError, ValueError) as exc:
                log.warning("watching pods: %s", exc)
                await asyncio.sleep(1.0)

    def _sync(self, pods: list[dict[str, Any]]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_pod(pod)
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.end(Ending.REMOVED)

    def _on_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            worker.observe(pod)
            return
        if uid in self._finished_uids:
            return
        status = pod.get("status") or {}
        deleting = bool(meta.get("deletionTimestamp"))
        if status.get("phase") in TERMINAL_PHASES:
            if deleting:
                self._finished_uids.add(uid)
                self._spawn(self._delete_pod(pod))
            return
        if uid in self._previous_uids or status.get("startTime"):
            self._finished_uids.add(uid)
            self._spawn(self._report_lost(pod, delete=deleting))
            return
        if deleting:
            self._finished_uids.add(uid)
            self._spawn(self._delete_pod(pod))
            return
        worker = PodWorker(self.ctx, pod)
        self.workers[uid] = worker
        worker.task = asyncio.create_task(worker.run())

    def _on_deleted(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            worker.end(Ending.REMOVED)
        else:
            self._finished_uids.discard(uid)  # no event follows a deletion

    async def _report_lost(self, pod: dict[str, Any], delete: bool) -> None:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        patch = lost_pod_status(pod, self.name, self.config.host_ip, self.clock.now())
        log.warning("pod was running before this agent restarted; reporting it Failed", extra={"pod": key})
        try:
            await self.api.request(
                "PATCH",
                f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}/status",
                body={"metadata": {"uid": pod["metadata"]["uid"]}, "status": patch},
                content_type="application/strategic-merge-patch+json",
            )
        except ApiError as exc:
            log.warning("reporting lost pod: %s", exc, extra={"pod": key})
        if delete:
            await self._delete_pod(pod)
        else:
            # It is terminal now; it is deleted like any finished pod once its deletion is requested.
            self._finished_uids.discard(pod["metadata"]["uid"])

    async def _delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        shutil.rmtree(self.config.root / "pods" / meta["uid"], ignore_errors=True)
        try:
            await self.api.request(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod: %s", exc, extra={"pod": f"{meta['namespace']}/{meta['name']}"})


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def main_loop(config: NodeConfig) -> int:
    """Run the agent until SIGTERM or SIGINT."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await NodeAgent(config).run(stop)

    os.umask(0o022)
    asyncio.run(runner())
    return 0
