"""Models drawn by the shared hypothesis strategies survive the wire: to_wire then parse gives them back."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kubevirt_types as kt
from kubevirt_types.strategies import from_model

pytestmark = pytest.mark.unit

ROOTS = (
    kt.VirtualMachine,
    kt.VirtualMachineInstance,
    kt.VirtualMachineInstanceReplicaSet,
    kt.VirtualMachineInstanceMigration,
    kt.KubeVirt,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(*(from_model(root) for root in ROOTS)))
def test_a_drawn_object_round_trips_through_json(obj: kt.KubeModel) -> None:
    wire = json.loads(json.dumps(kt.to_wire(obj)))
    again = type(obj).model_validate(wire)
    assert kt.to_wire(again) == wire


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(from_model(kt.Volume))
def test_a_drawn_volume_obeys_the_one_source_rule(volume: kt.Volume) -> None:
    sources = [name for name in type(volume).model_fields if name != "name" and getattr(volume, name) is not None]
    assert len(sources) == 1
