"""The guest agent in VMI status: AgentConnected, guestOSInfo and interfaces joined with the guest's own,
written only when they change, removed as KubeVirt removes them."""

from __future__ import annotations

from typing import Any

import pytest

from virt_handler.guestagent import AgentState, GuestInfo, GuestInterface
from virt_handler.vmistatus import Domain, DomainState, Observation, status_patch

pytestmark = pytest.mark.unit
NOW = "2026-11-25T19:00:00Z"
POD_IFACE = {"name": "default", "ipAddress": "10.244.1.7", "ipAddresses": ["10.244.1.7"], "infoSource": "domain"}
ENP = GuestInterface("enp1s0", "52:54:00:ab:cd:ef", ("10.0.2.2",))
DEBIAN = GuestInfo((("id", "debian"), ("versionId", "12")), "cloudvm", (ENP,))


def vmi(
    *, conditions: list[dict[str, Any]] | None = None, binding: str = "masquerade", **status: Any
) -> dict[str, Any]:
    return {
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", binding: {}}]}},
            "networks": [{"name": "default", "pod": {}}],
        },
        "status": {
            "phase": "Running",
            "conditions": conditions or [{"type": "Ready", "status": "True"}],
            "interfaces": [POD_IFACE],
            **status,
        },
    }


def seen(agent: AgentState | None, state: DomainState = DomainState.RUNNING) -> Observation:
    return Observation(now=NOW, domain=Domain(state), interfaces=(POD_IFACE,), agent=agent)


def settle(obj: dict[str, Any], obs: Observation) -> dict[str, Any]:
    """The VMI after the patch is applied."""
    patch = status_patch(obj, obs) or {}
    return {**obj, "status": {**obj["status"], **patch}}


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


def test_an_answering_agent_sets_agent_connected_os_info_and_the_guests_interface_name() -> None:
    patch = status_patch(vmi(), seen(AgentState(True, DEBIAN)))
    assert patch is not None
    assert {c["type"]: c["status"] for c in patch["conditions"]} == {"Ready": "True", "AgentConnected": "True"}
    assert patch["guestOSInfo"] == {"id": "debian", "versionId": "12"}
    assert patch["interfaces"] == [
        {
            "name": "default",
            "ipAddress": "10.244.1.7",  # masquerade: reached at the pod's address, as in KubeVirt
            "ipAddresses": ["10.244.1.7"],
            "interfaceName": "enp1s0",
            "mac": "52:54:00:ab:cd:ef",
            "infoSource": "domain, guest-agent",
        }
    ]


def test_nothing_is_written_when_the_agent_says_the_same_again() -> None:
    obs = seen(AgentState(True, DEBIAN))
    assert status_patch(settle(vmi(), obs), obs) is None


def test_an_agent_that_stops_answering_loses_the_condition_and_the_guest_side_but_not_the_os_info() -> None:
    connected = settle(vmi(), seen(AgentState(True, DEBIAN)))
    gone = settle(connected, seen(AgentState(False, DEBIAN)))
    assert conditions(gone) == {"Ready": "True"}
    assert gone["status"]["interfaces"] == [POD_IFACE]
    assert gone["status"]["guestOSInfo"] == {"id": "debian", "versionId": "12"}


def test_an_agent_not_asked_yet_changes_nothing_the_agent_wrote() -> None:
    """A restarted handler knows nothing of the agent for a moment: no write back and forth."""
    connected = settle(vmi(), seen(AgentState(True, DEBIAN)))
    assert status_patch(connected, seen(None)) is None


def test_a_guest_without_agent_gets_no_condition_and_domain_interfaces() -> None:
    assert status_patch(vmi(), seen(AgentState(False, None))) is None


def test_a_bridge_interface_shows_the_guests_own_addresses() -> None:
    guest = GuestInfo((), "", (GuestInterface("eth0", "", ("10.244.1.7", "fd00::7")),))
    patch = status_patch(vmi(binding="bridge"), seen(AgentState(True, guest)))
    assert patch is not None
    (iface,) = patch["interfaces"]
    assert iface["ipAddresses"] == ["10.244.1.7", "fd00::7"] and iface["interfaceName"] == "eth0"
    assert "guestOSInfo" not in patch, "an agent without os facts writes none"


def test_interfaces_match_by_mac_and_guest_only_ones_are_listed_after() -> None:
    with_mac = {**POD_IFACE, "mac": "52:54:00:00:00:01"}
    docker = GuestInterface("docker0", "02:42:00:00:00:01", ("172.17.0.1",))
    mine = GuestInterface("enp1s0", "52:54:00:00:00:01", ("10.0.2.2",))
    obs = Observation(
        now=NOW,
        domain=Domain(DomainState.RUNNING),
        interfaces=(with_mac,),
        agent=AgentState(True, GuestInfo((), "", (docker, mine))),
    )
    patch = status_patch(vmi(), obs)
    assert patch is not None
    assert [(i.get("name"), i["interfaceName"], i["infoSource"]) for i in patch["interfaces"]] == [
        ("default", "enp1s0", "domain, guest-agent"),
        (None, "docker0", "guest-agent"),
    ]
    assert patch["interfaces"][1]["ipAddress"] == "172.17.0.1"


def test_a_mac_that_matches_nothing_is_not_guessed_at() -> None:
    with_mac = {**POD_IFACE, "mac": "52:54:00:00:00:99"}
    obs = Observation(
        now=NOW, domain=Domain(DomainState.RUNNING), interfaces=(with_mac,), agent=AgentState(True, DEBIAN)
    )
    patch = status_patch(vmi(), obs)
    assert patch is not None
    assert [i["infoSource"] for i in patch["interfaces"]] == ["domain", "guest-agent"]


def test_a_finished_vmi_drops_agent_connected() -> None:
    connected = settle(vmi(), seen(AgentState(True, DEBIAN)))
    done = Observation(
        now=NOW, domain=Domain(DomainState.SHUTOFF, "Shutdown", clean_shutdown=True), agent=AgentState(True, DEBIAN)
    )
    patch = status_patch(connected, done)
    assert patch is not None and patch["phase"] == "Succeeded"
    assert patch["conditions"] == []


def test_a_paused_guest_keeps_what_the_agent_last_said() -> None:
    connected = settle(vmi(), seen(AgentState(True, DEBIAN)))
    paused = settle(connected, seen(AgentState(True, DEBIAN), DomainState.PAUSED))
    assert conditions(paused) == {"Ready": "False", "AgentConnected": "True", "Paused": "True"}
