"""The runtime's bookkeeping: the cache never goes back in time, the work queue never hands out a key
twice at once, expectations hold an owner back until its child is seen."""

from __future__ import annotations

import pytest

from virt_controller.cache import ClusterCache, Store, slim_pod
from virt_controller.workqueue import Expectations, KeyQueue

pytestmark = pytest.mark.unit


def obj(name: str, uid: str, rv: str, **extra: object) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv}, **extra}


def test_the_store_keeps_the_newest_version() -> None:
    store = Store()
    store.upsert(obj("a", "u1", "5"))
    _, stored = store.upsert(obj("a", "u1", "4"))
    assert not stored
    assert store.get("ns/a")["metadata"]["resourceVersion"] == "5"
    store.upsert(obj("a", "u1", "6"))
    assert store.get("ns/a")["metadata"]["resourceVersion"] == "6"


def test_a_deleted_object_is_not_brought_back_by_a_late_copy() -> None:
    store = Store()
    store.upsert(obj("a", "u1", "5"))
    store.remove(obj("a", "u1", "7"))
    _, stored = store.upsert(obj("a", "u1", "6"))  # the answer to a write that raced with the deletion
    assert not stored and store.get("ns/a") is None
    # A new object of the same name is welcome.
    _, stored = store.upsert(obj("a", "u2", "8"))
    assert stored and store.get("ns/a")["metadata"]["uid"] == "u2"


def test_removing_an_older_incarnation_keeps_its_successor() -> None:
    store = Store()
    store.upsert(obj("a", "u2", "8"))
    store.remove(obj("a", "u1", "7"))
    assert store.get("ns/a")["metadata"]["uid"] == "u2"


def test_pods_are_found_by_their_vmi_uid() -> None:
    cache = ClusterCache()
    pod = obj("virt-launcher-a-x", "p1", "1", spec={"nodeName": "n1", "containers": [{"name": "compute"}]})
    pod["metadata"]["labels"] = {"kubevirt.io/created-by": "vmi-1"}
    cache.upsert_pod(slim_pod(pod))
    (found,) = cache.pods_of("vmi-1")
    assert found["spec"] == {"nodeName": "n1"}, "slimmed to what the controller reads"
    cache.remove_pod(pod)
    assert cache.pods_of("vmi-1") == []


def test_a_key_is_never_handed_out_twice_at_once_and_comes_back_once_if_added_meanwhile() -> None:
    q = KeyQueue()
    q.add("k")
    q.add("k")
    assert q.pop(0) == "k"
    assert q.pop(0) is None
    q.add("k")
    q.add("k")
    assert q.pop(0) is None, "still being handled"
    q.done("k")
    assert q.pop(0) == "k"
    q.done("k")
    assert q.pop(0) is None


def test_delayed_and_rate_limited_keys_come_due_on_the_clock() -> None:
    q = KeyQueue(base_delay=1, max_delay=4)
    q.add_after("later", 10, now=100)
    assert q.pop(105) is None
    assert q.next_due() == 110
    assert q.pop(110) == "later"
    q.done("later")
    assert [q.add_rate_limited("bad", now=0) for _ in range(4)] == [1, 2, 4, 4]
    q.forget("bad")
    assert q.add_rate_limited("bad", now=0) == 1


def test_expectations_hold_the_owner_until_the_child_is_seen_or_time_is_up() -> None:
    exp = Expectations(timeout=30)
    exp.expect("vm/ns/a", "vmi/ns/a", now=0)
    assert exp.wait_for("vm/ns/a", now=1) == 29
    assert exp.observe("vmi/ns/a") == "vm/ns/a"
    assert exp.wait_for("vm/ns/a", now=2) == 0
    exp.expect("vm/ns/b", "vmi/ns/b", now=0)
    assert exp.wait_for("vm/ns/b", now=31) == 0, "a child never seen does not block forever"


def test_keys_come_out_by_priority_then_in_order() -> None:
    q = KeyQueue(priority=lambda key: 0 if key.startswith("vmi/") else 1)
    for key in ("vm/a", "vm/b", "vmi/a", "vm/c", "vmi/b"):
        q.add(key)
    order = []
    while (key := q.pop(0)) is not None:
        order.append(key)
        q.done(key)
    assert order == ["vmi/a", "vmi/b", "vm/a", "vm/b", "vm/c"]


# -- the controller loop against the fake apiserver ----------------------------------------------

import asyncio  # noqa: E402

from podvirt_common.kube import PODS, VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES  # noqa: E402
from virt_controller.controller import Controller  # noqa: E402

from .fakeapi import FakeApi  # noqa: E402
from .world import T0, vm_body  # noqa: E402


def controller_with(api: FakeApi) -> Controller:
    async def make() -> Controller:
        return Controller(api, now=lambda: T0, record_events=False)

    return asyncio.run(make())


def drain(ctl: Controller, rounds: int = 20) -> list[str]:
    """Sync every due key until the queue is empty; returns the keys handled, in order."""
    handled = []

    async def run() -> None:
        for _ in range(rounds):
            key = ctl.queue.keys.pop(float("inf"))
            if key is None:
                return
            handled.append(key)
            await ctl.sync(key)
            ctl.queue.done(key)

    asyncio.run(run())
    return handled


def test_a_vm_event_leads_to_a_vmi_and_a_pod_through_the_write_through_cache() -> None:
    api = FakeApi(clock=lambda: T0)
    vm = api.put(VIRTUAL_MACHINES, vm_body())
    ctl = controller_with(api)
    ctl.observe("vm", None, vm)
    handled = drain(ctl)
    assert handled[:2] == ["vm/default/testvm", "vmi/default/testvm"], "the VMI is looked at before its VM again"
    assert len(api.all(VIRTUAL_MACHINE_INSTANCES)) == 1
    assert len(api.all(PODS)) == 1
    assert ctl.cache.vmis.get("default/testvm") is not None, "the create's answer is in the cache already"


def test_a_pod_the_cache_still_shows_but_the_apiserver_has_not_does_not_hold_a_deleted_vmi() -> None:
    api = FakeApi(clock=lambda: T0)
    vm = api.put(VIRTUAL_MACHINES, vm_body())
    ctl = controller_with(api)
    ctl.observe("vm", None, vm)
    drain(ctl)
    (pod,) = api.all(PODS)
    del api.objects[("pods", "default", pod["metadata"]["name"])]  # gone, and the watch missed it
    api.delete(VIRTUAL_MACHINE_INSTANCES, "testvm", "default")
    ctl.observe("vmi", "MODIFIED", api.get(VIRTUAL_MACHINE_INSTANCES, "testvm", "default"))
    drain(ctl)
    assert api.find(VIRTUAL_MACHINE_INSTANCES, "testvm") is None, "finalised despite the stale cache"


def test_a_resync_drops_what_the_apiserver_no_longer_has_but_keeps_what_is_newer_than_its_list() -> None:
    ctl = controller_with(FakeApi(clock=lambda: T0))
    ghost = {
        **vm_body("ghost"),
        "metadata": {"name": "ghost", "namespace": "default", "uid": "g", "resourceVersion": "5"},
    }
    fresh = {
        **vm_body("fresh"),
        "metadata": {"name": "fresh", "namespace": "default", "uid": "f", "resourceVersion": "12"},
    }
    kept = {**vm_body("kept"), "metadata": {"name": "kept", "namespace": "default", "uid": "k", "resourceVersion": "7"}}
    for vm in (ghost, fresh, kept):
        ctl.observe("vm", None, vm)
    assert ctl.sweep("vm", [kept], list_version="10") == 1
    assert ctl.cache.vms.get("default/ghost") is None
    assert ctl.cache.vms.get("default/fresh") is not None, "created after the list was taken"
    assert ctl.cache.vms.get("default/kept") is not None
