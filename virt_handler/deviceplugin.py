"""Device plugins for the host devices VMs use: ``devices.kubevirt.io/kvm``, ``…/tun`` and ``…/vhost-net``.

A launcher pod asks for these as extended resources; the kubelet admits it and puts the device into
its container only through a device plugin, as KubeVirt's virt-handler provides. Each plugin here
serves the kubelet's ``DevicePlugin`` API (:mod:`podvirt_common.deviceplugin`) on its own socket in
``<kubelet-root>/device-plugins/``, registers at the kubelet's ``kubelet.sock`` and lists
:data:`PERMITS` interchangeable devices — the device is shared (every launcher opens the same
``/dev/net/tun``), so a device ID is a permit, not a piece of hardware. They are ``Healthy`` while
the host's device exists (KVM only when enabled: ``--kvm=no`` under ``useEmulation`` keeps them
``Unhealthy`` and so unallocatable). ``Allocate`` answers with the host device to put into the
container, and nothing else.

Every :data:`CHECK_INTERVAL` the plugins look at the world again: device health (a change reaches the
kubelet through ``ListAndWatch`` at once); their own socket (a restarting kubelet deletes plugin
sockets: the plugin serves again on a new one); the kubelet's socket (a new one means a new kubelet:
register again). So a handler or kubelet restart in any order ends with every plugin registered.
The plugins run on an asyncio loop of their own, in one thread (:meth:`DevicePlugins.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from grpclib.server import Server, Stream

from podvirt_common import deviceplugin
from podvirt_common.deviceplugin import api_grpc, api_pb2

log = logging.getLogger("virt_handler.deviceplugin")

PERMITS = 1000  # as KubeVirt's plugins: the most launcher pods one node can run, for practical purposes
CHECK_INTERVAL = 1.0
REGISTER_TIMEOUT = 5.0
KVM_RESOURCE = "devices.kubevirt.io/kvm"
TUN_RESOURCE = "devices.kubevirt.io/tun"
VHOST_NET_RESOURCE = "devices.kubevirt.io/vhost-net"


@dataclass(frozen=True)
class DeviceKind:
    """One shared host device offered as an extended resource."""

    resource: str
    device_path: str
    socket: str  # file name in the device-plugin directory
    prefix: str  # of the device IDs: "tun0" … "tun999"


DEVICES = (
    DeviceKind(KVM_RESOURCE, "/dev/kvm", "kubevirt-kvm.sock", "kvm"),
    DeviceKind(TUN_RESOURCE, "/dev/net/tun", "kubevirt-tun.sock", "tun"),
    DeviceKind(VHOST_NET_RESOURCE, "/dev/vhost-net", "kubevirt-vhost-net.sock", "vhost-net"),
)


def is_char_device(path: str) -> bool:
    """True when ``path`` is a character device (the device a plugin hands out is there)."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


class DevicePlugin(api_grpc.DevicePluginBase):
    """The ``DevicePlugin`` service for one :class:`DeviceKind`."""

    def __init__(self, kind: DeviceKind, enabled: bool = True, present: Callable[[str], bool] = is_char_device) -> None:
        self.kind = kind
        self.enabled = enabled
        self._present = present
        self.ids = tuple(f"{kind.prefix}{i}" for i in range(PERMITS))
        self._known = frozenset(self.ids)
        self.healthy = self._check()
        self._generation = 0
        self._changed: asyncio.Condition | None = None  # made on the plugins' loop
        self._closing = False
        self._streams = 0  # ListAndWatch streams being served

    def _check(self) -> bool:
        return self.enabled and self._present(self.kind.device_path)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def refresh(self) -> bool:
        """Look at the device again; True (and every ``ListAndWatch`` told) when its health changed."""
        healthy = self._check()
        if healthy == self.healthy:
            return False
        self.healthy = healthy
        log.info("%s: %s %s", self.kind.resource, self.kind.device_path, "present" if healthy else "unavailable")
        await self._notify()
        return True

    async def close(self, wait: float = 1.0) -> None:
        """End every ``ListAndWatch`` stream (the kubelet then counts no device of this plugin).

        Each stream ends properly (grpc-status OK) before the server closes: a server closing under a
        stream cancels it without telling the client, and the kubelet would wait on it for ever.
        """
        self._closing = True
        await self._notify()
        condition = self._condition()
        async with condition:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(condition.wait_for(lambda: self._streams == 0), wait)

    def reopen(self) -> None:
        """Serve ``ListAndWatch`` streams again (after :meth:`close`, on a new socket)."""
        self._closing = False

    async def _notify(self) -> None:
        condition = self._condition()
        async with condition:
            self._generation += 1
            condition.notify_all()

    def listing(self) -> api_pb2.ListAndWatchResponse:
        health = deviceplugin.HEALTHY if self.healthy else deviceplugin.UNHEALTHY
        return api_pb2.ListAndWatchResponse(devices=[api_pb2.Device(ID=i, health=health) for i in self.ids])

    def allocation(self, request: api_pb2.AllocateRequest) -> api_pb2.AllocateResponse:
        """The answer to ``Allocate``: the host device, for each container; unknown IDs are refused."""
        responses = []
        for container in request.container_requests:
            unknown = sorted(set(container.devices_ids) - self._known)
            if unknown:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, f"{self.kind.resource}: unknown device IDs {', '.join(unknown[:5])}"
                )
            if not container.devices_ids:
                raise GRPCError(Status.INVALID_ARGUMENT, f"{self.kind.resource}: a container request names no device")
            if not self.healthy:
                raise GRPCError(
                    Status.FAILED_PRECONDITION,
                    f"{self.kind.resource}: {self.kind.device_path} is not available on this node",
                )
            path = self.kind.device_path
            device = api_pb2.DeviceSpec(container_path=path, host_path=path, permissions="rw")
            responses.append(api_pb2.ContainerAllocateResponse(devices=[device]))
        return api_pb2.AllocateResponse(container_responses=responses)

    # -- the gRPC methods ----------------------------------------------------------------------

    async def GetDevicePluginOptions(self, stream: Stream[api_pb2.Empty, api_pb2.DevicePluginOptions]) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.DevicePluginOptions())

    async def ListAndWatch(self, stream: Stream[api_pb2.Empty, api_pb2.ListAndWatchResponse]) -> None:
        await stream.recv_message()
        condition = self._condition()
        self._streams += 1
        try:
            while not self._closing:
                async with condition:
                    seen = self._generation
                await stream.send_message(self.listing())
                async with condition:
                    await condition.wait_for(lambda seen=seen: self._generation != seen)  # type: ignore[misc]
        finally:
            self._streams -= 1
            async with condition:
                condition.notify_all()

    async def GetPreferredAllocation(
        self, stream: Stream[api_pb2.PreferredAllocationRequest, api_pb2.PreferredAllocationResponse]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        responses = []
        for container in request.container_requests:
            chosen = list(container.must_include_deviceIDs)
            for device in container.available_deviceIDs:
                if len(chosen) >= container.allocation_size:
                    break
                if device not in chosen:
                    chosen.append(device)
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        await stream.send_message(api_pb2.PreferredAllocationResponse(container_responses=responses))

    async def Allocate(self, stream: Stream[api_pb2.AllocateRequest, api_pb2.AllocateResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self.allocation(request))

    async def PreStartContainer(
        self, stream: Stream[api_pb2.PreStartContainerRequest, api_pb2.PreStartContainerResponse]
    ) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.PreStartContainerResponse())


@dataclass
class _Served:
    server: Server
    inode: int
    registered_with: int | None = None  # inode of the kubelet.sock it registered at


class DevicePlugins:
    """Serves and registers every plugin of :data:`DEVICES`, and keeps them registered."""

    def __init__(self, kubelet_root: Path, kvm: bool) -> None:
        self.directory = kubelet_root / deviceplugin.DIRECTORY
        self.plugins = [DevicePlugin(kind, enabled=kind.resource != KVM_RESOURCE or kvm) for kind in DEVICES]
        self._served: dict[str, _Served] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._last_problem: dict[str, str] = {}

    def run(self) -> None:
        """Run until :meth:`stop` (a thread's target)."""
        asyncio.run(self._main())

    def stop(self) -> None:
        """End :meth:`run` from another thread: the sockets go, the kubelet sees the devices unhealthy."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            while not self._stop.is_set():
                await self.check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), CHECK_INTERVAL)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop serving every plugin and remove its socket."""
        for plugin in self.plugins:
            await self._unserve(plugin)

    async def check(self) -> None:
        """One round: device health, our sockets, registration with the (current) kubelet."""
        kubelet = self._socket_inode(self.directory / deviceplugin.KUBELET_SOCKET)
        if kubelet is None:
            self._problem("kubelet", f"waiting for the kubelet's {self.directory / deviceplugin.KUBELET_SOCKET}")
            return
        self._last_problem.pop("kubelet", None)
        for plugin in self.plugins:
            await plugin.refresh()
            served = self._served.get(plugin.kind.resource)
            if served is None or self._socket_inode(self.directory / plugin.kind.socket) != served.inode:
                served = await self._serve(plugin)
                if served is None:
                    continue
            if served.registered_with != kubelet and await self._register(plugin):
                served.registered_with = kubelet

    @staticmethod
    def _socket_inode(path: Path) -> int | None:
        try:
            info = path.lstat()
        except OSError:
            return None
        return info.st_ino if stat.S_ISSOCK(info.st_mode) else None

    async def _serve(self, plugin: DevicePlugin) -> _Served | None:
        await self._unserve(plugin)
        path = self.directory / plugin.kind.socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # ours, left by a handler that was killed
        plugin.reopen()
        server = Server([plugin])
        try:
            await server.start(path=str(path))
            inode = self._socket_inode(path)
            if inode is None:
                raise OSError(f"{path} is not a socket after listening on it")
        except OSError as exc:
            server.close()
            self._problem(plugin.kind.resource, f"cannot serve {plugin.kind.resource} on {path}: {exc}")
            return None
        served = _Served(server, inode)
        self._served[plugin.kind.resource] = served
        return served

    async def _unserve(self, plugin: DevicePlugin) -> None:
        served = self._served.pop(plugin.kind.resource, None)
        if served is None:
            return
        await plugin.close()
        served.server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(served.server.wait_closed(), 2.0)
        path = self.directory / plugin.kind.socket
        if self._socket_inode(path) == served.inode:
            path.unlink(missing_ok=True)

    async def _register(self, plugin: DevicePlugin) -> bool:
        channel = Channel(path=str(self.directory / deviceplugin.KUBELET_SOCKET))
        request = api_pb2.RegisterRequest(
            version=deviceplugin.VERSION,
            endpoint=plugin.kind.socket,
            resource_name=plugin.kind.resource,
            options=api_pb2.DevicePluginOptions(),
        )
        try:
            await api_grpc.RegistrationStub(channel).Register(request, timeout=REGISTER_TIMEOUT)
        except (GRPCError, OSError, TimeoutError, StreamTerminatedError, ProtocolError) as exc:
            detail = exc.message if isinstance(exc, GRPCError) else str(exc) or type(exc).__name__
            self._problem(plugin.kind.resource, f"registering {plugin.kind.resource} with the kubelet: {detail}")
            return False
        finally:
            channel.close()
        self._last_problem.pop(plugin.kind.resource, None)
        state = "healthy" if plugin.healthy else f"unhealthy: no usable {plugin.kind.device_path}"
        log.info("device plugin %s registered with the kubelet (%d devices, %s)", plugin.kind.resource, PERMITS, state)
        return True

    def _problem(self, key: str, message: str) -> None:
        """Log a problem once, not once a second while it lasts."""
        if self._last_problem.get(key) != message:
            self._last_problem[key] = message
            log.warning("%s", message)
