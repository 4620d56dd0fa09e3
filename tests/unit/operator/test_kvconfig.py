"""What a KubeVirt resource's spec makes of an installation (pure)."""

from __future__ import annotations

import pytest

from virt_operator.installconfig import InstallConfig
from virt_operator.kvconfig import InvalidSpecError, install_config

pytestmark = pytest.mark.unit


def _kv(developer: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"namespace": "kubevirt"}, "spec": {"configuration": {"developerConfiguration": developer}}}


def test_the_cpu_allocation_ratio_reaches_the_installation() -> None:
    assert install_config(_kv({"cpuAllocationRatio": 20}), InstallConfig()).cpu_allocation_ratio == 20
    assert install_config(_kv({}), InstallConfig()).cpu_allocation_ratio == 10  # KubeVirt's default


def test_a_ratio_below_one_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.configuration\.developerConfiguration\.cpuAllocationRatio"):
        install_config(_kv({"cpuAllocationRatio": 0}), InstallConfig())
