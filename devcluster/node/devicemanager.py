"""The kubelet's device manager, for the stand-in node: device plugins register here and hand out devices.

As in the kubelet: the manager empties ``<root>/device-plugins/`` when it starts (a plugin notices
its socket is gone and registers again) and serves ``Registration`` on ``kubelet.sock`` there. A plugin
that registers (API ``v1beta1``, an extended resource name, a socket file in that directory) is called
back with ``ListAndWatch``; the devices it lists become the Node's capacity for that resource and its
healthy ones the allocatable (:meth:`DeviceManager.capacity`, pushed to the Node at once through
``on_change``). When the stream ends (the plugin died) the resource keeps its capacity and has nothing
allocatable until the plugin registers again. A newer registration of a resource replaces the older.

Admission (:meth:`DeviceManager.allocate`): for each container, the resources it limits that a plugin
manages get as many free healthy device IDs as it asks for, and the plugin's ``Allocate`` answer
(devices, mounts, environment) is what the container gets. A pod asking for more than there is fails
as with the kubelet, ``UnexpectedAdmissionError``. Resources no plugin manages are not the device
manager's business (the scheduler accounted for them). Simplification, named: allocations are kept in
memory, not checkpointed — the stand-in node does not adopt pods across its own restarts anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from grpclib.server import Server, Stream

from podvirt_common import deviceplugin
from podvirt_common.deviceplugin import api_grpc, api_pb2

log = logging.getLogger("devcluster.node.devices")

ALLOCATE_TIMEOUT = 10.0
SUPPORTED_VERSIONS = (deviceplugin.VERSION,)
# An extended resource name: a domain outside kubernetes.io, a slash, a name (as the kubelet checks).
_RESOURCE = re.compile(
    r"^(?!(?:[^/]*\.)?kubernetes\.io/)(?!requests\.)[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_ENDPOINT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,100}$")


class AdmissionError(Exception):
    """The pod cannot have the devices it asks for (the kubelet's ``UnexpectedAdmissionError``)."""


@dataclass
class Allocation:
    """What a container gets from device plugins: device nodes, bind mounts and environment."""

    devices: list[api_pb2.DeviceSpec] = field(default_factory=list)
    mounts: list[api_pb2.Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Endpoint:
    resource: str
    socket: Path
    devices: dict[str, str] = field(default_factory=dict)  # ID -> health
    task: asyncio.Task[None] | None = None
    alive: bool = True


def _limits(container: Mapping[str, Any]) -> dict[str, str]:
    resources = container.get("resources") or {}
    # Extended resources must have limit == request; the limits are what the kubelet reads.
    return {**(resources.get("requests") or {}), **(resources.get("limits") or {})}


class _Registrar(api_grpc.RegistrationBase):
    def __init__(self, manager: DeviceManager) -> None:
        self.manager = manager

    async def Register(self, stream: Stream[api_pb2.RegisterRequest, api_pb2.Empty]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.manager.register(request)
        await stream.send_message(api_pb2.Empty())


class DeviceManager:
    """Registration, device lists and allocation for one stand-in node."""

    def __init__(self, root: Path, on_change: Callable[[], None] = lambda: None) -> None:
        self.directory = root / deviceplugin.DIRECTORY
        self.on_change = on_change
        self.endpoints: dict[str, _Endpoint] = {}
        self._allocated: dict[str, dict[str, set[str]]] = {}  # pod UID -> resource -> device IDs
        self._server: Server | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Empty the plugin directory and serve ``Registration`` on a new ``kubelet.sock``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o750)
        for entry in self.directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        self._server = Server([_Registrar(self)])
        await self._server.start(path=str(self.directory / deviceplugin.KUBELET_SOCKET))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        for endpoint in self.endpoints.values():
            if endpoint.task is not None:
                endpoint.task.cancel()
        (self.directory / deviceplugin.KUBELET_SOCKET).unlink(missing_ok=True)

    # -- registration and device lists --------------------------------------------------------

    def register(self, request: api_pb2.RegisterRequest) -> None:
        """Accept a plugin (or refuse it with the reason) and start watching its devices."""
        if request.version not in SUPPORTED_VERSIONS:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"device plugin API version {request.version!r} is not supported; use {', '.join(SUPPORTED_VERSIONS)}",
            )
        if not _RESOURCE.match(request.resource_name):
            raise GRPCError(Status.INVALID_ARGUMENT, f"{request.resource_name!r} is not an extended resource name")
        if not _ENDPOINT.match(request.endpoint) or request.endpoint == deviceplugin.KUBELET_SOCKET:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"endpoint {request.endpoint!r} must be a socket file name in {self.directory}",
            )
        old = self.endpoints.get(request.resource_name)
        endpoint = _Endpoint(request.resource_name, self.directory / request.endpoint)
        if old is not None:
            endpoint.devices = dict.fromkeys(old.devices, deviceplugin.UNHEALTHY)
            old.alive = False
            if old.task is not None:
                old.task.cancel()
        self.endpoints[request.resource_name] = endpoint
        endpoint.task = asyncio.ensure_future(self._watch(endpoint))
        log.info("device plugin registered: %s at %s", request.resource_name, request.endpoint)

    async def _watch(self, endpoint: _Endpoint) -> None:
        channel = Channel(path=str(endpoint.socket))
        try:
            stub = api_grpc.DevicePluginStub(channel)
            async with stub.ListAndWatch.open() as stream:
                await stream.send_message(api_pb2.Empty(), end=True)
                while (listing := await stream.recv_message()) is not None:
                    endpoint.devices = {d.ID: d.health for d in listing.devices}
                    self.on_change()
            log.warning("device plugin %s ended its device list", endpoint.resource)
        except asyncio.CancelledError:
            raise
        except (GRPCError, OSError, StreamTerminatedError, ProtocolError) as exc:
            log.warning("device plugin %s: %s", endpoint.resource, getattr(exc, "message", None) or exc)
        finally:
            channel.close()
            if endpoint.alive:
                endpoint.alive = False
                endpoint.devices = dict.fromkeys(endpoint.devices, deviceplugin.UNHEALTHY)
                self.on_change()

    def capacity(self) -> dict[str, str]:
        """Every listed device per resource (healthy or not), as the Node's capacity."""
        return {resource: str(len(e.devices)) for resource, e in self.endpoints.items()}

    def allocatable(self) -> dict[str, str]:
        """The healthy devices per resource of a live plugin, as the Node's allocatable."""
        return {resource: str(len(self._healthy(e))) for resource, e in self.endpoints.items()}

    @staticmethod
    def _healthy(endpoint: _Endpoint) -> list[str]:
        if not endpoint.alive:
            return []
        return [i for i, health in endpoint.devices.items() if health == deviceplugin.HEALTHY]

    # -- admission ----------------------------------------------------------------------------

    async def allocate(self, pod_uid: str, containers: Iterable[Mapping[str, Any]]) -> dict[str, Allocation]:
        """Devices for every container of a pod (by container name); all or nothing."""
        async with self._lock:
            result: dict[str, Allocation] = {}
            try:
                for container in containers:
                    result[str(container["name"])] = await self._allocate_container(pod_uid, container)
            except BaseException:
                self.release(pod_uid)
                raise
            return result

    async def _allocate_container(self, pod_uid: str, container: Mapping[str, Any]) -> Allocation:
        allocation = Allocation()
        for resource, quantity in sorted(_limits(container).items()):
            endpoint = self.endpoints.get(resource)
            if endpoint is None:
                continue  # not a device-plugin resource
            wanted = _count(resource, quantity)
            if wanted == 0:
                continue
            taken = {i for per_pod in self._allocated.values() for i in per_pod.get(resource, ())}
            free = [i for i in self._healthy(endpoint) if i not in taken]
            if len(free) < wanted:
                raise AdmissionError(
                    f"Allocate failed due to requested number of devices unavailable for {resource}. "
                    f"Requested: {wanted}, Available: {len(free)}, which is unexpected"
                )
            ids = free[:wanted]
            answer = await self._call_allocate(endpoint, ids)
            self._allocated.setdefault(pod_uid, {}).setdefault(resource, set()).update(ids)
            allocation.devices.extend(answer.devices)
            allocation.mounts.extend(answer.mounts)
            allocation.env.update(answer.envs)
        return allocation

    async def _call_allocate(self, endpoint: _Endpoint, ids: list[str]) -> api_pb2.ContainerAllocateResponse:
        channel = Channel(path=str(endpoint.socket))
        request = api_pb2.AllocateRequest(container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids)])
        try:
            reply = await api_grpc.DevicePluginStub(channel).Allocate(request, timeout=ALLOCATE_TIMEOUT)
        except GRPCError as exc:
            raise AdmissionError(f"Allocate failed for {endpoint.resource}: {exc.message or exc.status.name}") from None
        except (OSError, TimeoutError, StreamTerminatedError, ProtocolError) as exc:
            raise AdmissionError(f"Allocate failed for {endpoint.resource}: {exc or type(exc).__name__}") from None
        finally:
            channel.close()
        if len(reply.container_responses) != 1:
            raise AdmissionError(
                f"Allocate failed for {endpoint.resource}: the plugin answered for "
                f"{len(reply.container_responses)} containers, not 1"
            )
        return reply.container_responses[0]

    def release(self, pod_uid: str) -> None:
        """The pod is gone: its devices are free again."""
        self._allocated.pop(pod_uid, None)


def _count(resource: str, quantity: object) -> int:
    text = str(quantity)
    if not text.isdigit():
        raise AdmissionError(f"{resource}: a device count must be a whole number, not {text!r}")
    return int(text)
