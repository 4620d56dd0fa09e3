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
