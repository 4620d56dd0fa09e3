"""The stand-in node's device manager and virt-handler's device plugins, talking gRPC over real sockets.

No cluster: both sides run in this process on one event loop, in a temporary kubelet directory, as
they would on a node (the kubelet's ``kubelet.sock``, the plugins' own sockets beside it).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.client import Channel

from devcluster.node.devicemanager import AdmissionError, DeviceManager
from podvirt_common.deviceplugin import KUBELET_SOCKET, api_grpc, api_pb2
from virt_handler.deviceplugin import KVM_RESOURCE, PERMITS, TUN_RESOURCE, VHOST_NET_RESOURCE, DevicePlugins

pytestmark = pytest.mark.unit

TUN_PRESENT = Path("/dev/net/tun").is_char_device()
VHOST_PRESENT = Path("/dev/vhost-net").is_char_device()


@pytest.fixture
def kubelet_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pvdp", dir="/tmp"))  # short: unix socket paths
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


def _run(root: Path, scenario: Callable[[DeviceManager, DevicePlugins], Awaitable[None]], kvm: bool = False) -> None:
    async def main() -> None:
        manager = DeviceManager(root)
        plugins = DevicePlugins(root, kvm=kvm)
        await manager.start()
        try:
            await scenario(manager, plugins)
        finally:
            await plugins.close()
            await manager.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def _launcher(name: str = "compute", tun: str = "1") -> dict[str, object]:
    return {"name": name, "resources": {"limits": {TUN_RESOURCE: tun, "cpu": "1"}, "requests": {TUN_RESOURCE: tun}}}


def test_plugins_register_and_their_devices_become_capacity(kubelet_root: Path) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        await plugins.check()
        want = {r: str(PERMITS) for r in (KVM_RESOURCE, TUN_RESOURCE, VHOST_NET_RESOURCE)}
        await _until(lambda: manager.capacity() == want, "three resources registered and listed")
        await _until(lambda: manager.allocatable()[TUN_RESOURCE] == str(PERMITS if TUN_PRESENT else 0), "tun listed")
        assert manager.allocatable()[KVM_RESOURCE] == "0"  # --kvm=no: never allocatable
        assert manager.allocatable()[VHOST_NET_RESOURCE] == str(PERMITS if VHOST_PRESENT else 0)

    _run(kubelet_root, scenario)


@pytest.mark.skipif(not TUN_PRESENT, reason="this machine has no /dev/net/tun to hand out")
def test_admission_gives_each_container_the_host_device(kubelet_root: Path) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        await plugins.check()
        await _until(lambda: manager.allocatable().get(TUN_RESOURCE) == str(PERMITS), "tun healthy")
        got = await manager.allocate("pod-1", [_launcher(), {"name": "sidecar", "resources": {}}])
        assert [(d.host_path, d.container_path) for d in got["compute"].devices] == [("/dev/net/tun", "/dev/net/tun")]
        assert got["sidecar"].devices == []

    _run(kubelet_root, scenario)


@pytest.mark.skipif(not TUN_PRESENT, reason="this machine has no /dev/net/tun to hand out")
def test_a_pod_asking_for_more_devices_than_are_free_is_rejected_and_holds_none(kubelet_root: Path) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        await plugins.check()
        await _until(lambda: manager.allocatable().get(TUN_RESOURCE) == str(PERMITS), "tun healthy")
        await manager.allocate("big", [_launcher(tun=str(PERMITS - 1))])
        with pytest.raises(AdmissionError, match=r"Requested: 2, Available: 0"):
            await manager.allocate("greedy", [_launcher("a", "1"), _launcher("b", "2")])
        # All or nothing: "greedy" kept nothing, so one device is still free for the next pod.
        await manager.allocate("small", [_launcher()])
        with pytest.raises(AdmissionError, match=r"Available: 0"):
            await manager.allocate("late", [_launcher()])
        manager.release("big")
        await manager.allocate("late", [_launcher()])

    _run(kubelet_root, scenario)


def test_a_dead_plugin_leaves_capacity_but_nothing_allocatable(kubelet_root: Path) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        await plugins.check()
        await _until(lambda: TUN_RESOURCE in manager.capacity(), "tun registered")
        await plugins.close()  # the handler stops (or is killed: the stream ends just the same)
        await _until(lambda: manager.allocatable().get(TUN_RESOURCE) == "0", "tun unallocatable")
        assert manager.capacity()[TUN_RESOURCE] == str(PERMITS)
        with pytest.raises(AdmissionError):
            await manager.allocate("pod", [_launcher()])

    _run(kubelet_root, scenario)


def test_plugins_register_again_with_a_restarted_kubelet(kubelet_root: Path) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        await plugins.check()
        await _until(lambda: len(manager.capacity()) == 3, "registered")
        await manager.stop()
        again = DeviceManager(kubelet_root)  # a new kubelet: it empties the directory, a new kubelet.sock
        await again.start()
        try:
            assert again.capacity() == {}
            await plugins.check()  # what the plugins' loop does every second
            await _until(lambda: len(again.capacity()) == 3, "registered with the new kubelet")
            want = str(PERMITS if TUN_PRESENT else 0)
            await _until(lambda: again.allocatable().get(TUN_RESOURCE) == want, "tun listed")
        finally:
            await again.stop()

    _run(kubelet_root, scenario)


def test_a_restarted_handler_replaces_its_registration(kubelet_root: Path) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        await plugins.check()
        await _until(lambda: len(manager.capacity()) == 3, "registered")
        first = manager.endpoints[TUN_RESOURCE]
        successor = DevicePlugins(kubelet_root, kvm=False)  # the old one's sockets are left behind
        try:
            await successor.check()
            await _until(lambda: manager.endpoints[TUN_RESOURCE] is not first, "registration replaced")
            want = str(PERMITS if TUN_PRESENT else 0)
            await _until(lambda: manager.allocatable().get(TUN_RESOURCE) == want, "new plugin listed")
        finally:
            await successor.close()

    _run(kubelet_root, scenario)


@pytest.mark.parametrize(
    ("version", "resource", "endpoint", "complaint"),
    [
        ("v1alpha", TUN_RESOURCE, "x.sock", "not supported"),
        ("v1beta1", "tun", "x.sock", "not an extended resource"),
        ("v1beta1", "kubernetes.io/tun", "x.sock", "not an extended resource"),
        ("v1beta1", TUN_RESOURCE, "../../etc/x.sock", "must be a socket file name"),
        ("v1beta1", TUN_RESOURCE, KUBELET_SOCKET, "must be a socket file name"),
    ],
)
def test_registration_refuses_bad_requests_with_the_reason(
    kubelet_root: Path, version: str, resource: str, endpoint: str, complaint: str
) -> None:
    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        channel = Channel(path=str(manager.directory / KUBELET_SOCKET))
        try:
            request = api_pb2.RegisterRequest(version=version, endpoint=endpoint, resource_name=resource)
            with pytest.raises(GRPCError) as caught:
                await api_grpc.RegistrationStub(channel).Register(request, timeout=5)
            assert complaint in str(caught.value.message)
        finally:
            channel.close()
        assert manager.capacity() == {}

    _run(kubelet_root, scenario)


def test_the_kubelet_starts_with_an_empty_plugin_directory(kubelet_root: Path) -> None:
    stale = kubelet_root / "device-plugins"
    stale.mkdir()
    (stale / "kubevirt-tun.sock").write_text("left by a previous run")

    async def scenario(manager: DeviceManager, plugins: DevicePlugins) -> None:
        assert sorted(p.name for p in manager.directory.iterdir()) == [KUBELET_SOCKET]

    _run(kubelet_root, scenario)
    assert not any(stale.iterdir())  # and it takes its own socket away when it stops
