"""The handler's device plugins as pure logic: device lists, health, Allocate's answer and refusals."""

from __future__ import annotations

import asyncio

import pytest
from grpclib import GRPCError, Status

from podvirt_common.deviceplugin import HEALTHY, UNHEALTHY, api_pb2
from virt_handler.deviceplugin import DEVICES, KVM_RESOURCE, PERMITS, TUN_RESOURCE, DevicePlugin

pytestmark = pytest.mark.unit

TUN = next(k for k in DEVICES if k.resource == TUN_RESOURCE)
KVM = next(k for k in DEVICES if k.resource == KVM_RESOURCE)


def _request(*per_container: list[str]) -> api_pb2.AllocateRequest:
    return api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids) for ids in per_container]
    )


def test_a_present_device_is_listed_as_many_healthy_permits() -> None:
    plugin = DevicePlugin(TUN, present=lambda path: path == "/dev/net/tun")
    listing = plugin.listing()
    assert len(listing.devices) == PERMITS
    assert {d.health for d in listing.devices} == {HEALTHY}
    assert len({d.ID for d in listing.devices}) == PERMITS


def test_kvm_that_is_not_enabled_is_unhealthy_even_when_present() -> None:
    plugin = DevicePlugin(KVM, enabled=False, present=lambda path: True)
    assert {d.health for d in plugin.listing().devices} == {UNHEALTHY}


def test_allocate_hands_out_the_host_device_and_nothing_else() -> None:
    plugin = DevicePlugin(TUN, present=lambda path: True)
    answer = plugin.allocation(_request(["tun3"], ["tun4", "tun5"]))
    assert len(answer.container_responses) == 2
    for response in answer.container_responses:
        assert [(d.host_path, d.container_path, d.permissions) for d in response.devices] == [
            ("/dev/net/tun", "/dev/net/tun", "rw")
        ]
        assert not response.mounts and not response.envs


@pytest.mark.parametrize("ids", [["tun0", "gpu0"], ["tun1000"], []])
def test_allocate_refuses_device_ids_it_never_listed(ids: list[str]) -> None:
    plugin = DevicePlugin(TUN, present=lambda path: True)
    with pytest.raises(GRPCError) as caught:
        plugin.allocation(_request(ids))
    assert caught.value.status is Status.INVALID_ARGUMENT


def test_allocate_refuses_while_the_device_is_missing() -> None:
    plugin = DevicePlugin(TUN, present=lambda path: False)
    with pytest.raises(GRPCError) as caught:
        plugin.allocation(_request(["tun0"]))
    assert caught.value.status is Status.FAILED_PRECONDITION
    assert "/dev/net/tun is not available" in str(caught.value.message)


def test_refresh_notices_a_device_appearing_and_disappearing() -> None:
    present = {"yes": False}
    plugin = DevicePlugin(TUN, present=lambda path: present["yes"])

    async def scenario() -> list[bool]:
        seen = [await plugin.refresh()]
        present["yes"] = True
        seen.append(await plugin.refresh())
        seen.append(await plugin.refresh())
        present["yes"] = False
        seen.append(await plugin.refresh())
        return seen

    assert asyncio.run(scenario()) == [False, True, False, True]
    assert not plugin.healthy
