"""Leader election decisions on the Lease, with a fake clock: take a free or expired lease, renew one's
own, never take a lease another replica keeps renewing, however the clocks of the machines differ."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from podvirt_common.leader import LeaseConfig, Observation, next_lease

pytestmark = pytest.mark.unit

ME = LeaseConfig(namespace="kube-system", identity="me", duration=15)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def lease(holder: str | None, renew: str = "2030-01-01T00:00:00.000000Z", transitions: int = 0) -> dict:
    return {
        "metadata": {"name": "virt-controller", "resourceVersion": "1"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "renewTime": renew,
            "acquireTime": "2029-12-31T00:00:00.000000Z",
            "leaseTransitions": transitions,
        },
    }


def test_no_lease_is_taken() -> None:
    spec = next_lease(None, ME, NOW, 0.0, Observation())
    assert spec is not None
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 0
    assert spec["renewTime"] == spec["acquireTime"] == "2030-01-01T00:00:00.000000Z"


def test_a_lease_renewed_by_another_is_left_alone_until_it_has_not_changed_for_its_duration() -> None:
    seen = Observation()
    held = lease("other")
    assert next_lease(held, ME, NOW, 100.0, seen) is None
    assert next_lease(held, ME, NOW, 114.9, seen) is None
    # The holder renews: the clock starts again.
    renewed = lease("other", renew="2030-01-01T00:00:10.000000Z")
    assert next_lease(renewed, ME, NOW, 114.9, seen) is None
    assert next_lease(renewed, ME, NOW, 129.8, seen) is None
    spec = next_lease(renewed, ME, NOW, 130.0, seen)
    assert spec is not None and spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 1


def test_expiry_is_judged_on_the_local_clock_not_the_holders_timestamps() -> None:
    """A renewTime far in the past (a holder whose clock is behind) does not make the lease free."""
    seen = Observation()
    ancient = lease("other", renew="1999-01-01T00:00:00.000000Z")
    assert next_lease(ancient, ME, NOW, 0.0, seen) is None


def test_the_holder_renews_and_keeps_its_acquire_time() -> None:
    spec = next_lease(lease("me", transitions=3), ME, NOW, 0.0, Observation())
    assert spec is not None
    assert spec["acquireTime"] == "2029-12-31T00:00:00.000000Z"
    assert spec["renewTime"] == "2030-01-01T00:00:00.000000Z"
    assert spec["leaseTransitions"] == 3


def test_a_released_lease_is_taken_at_once() -> None:
    spec = next_lease(lease(None, transitions=2), ME, NOW, 0.0, Observation())
    assert spec is not None and spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 3
