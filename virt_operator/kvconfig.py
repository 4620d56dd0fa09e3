"""The :class:`InstallConfig` a ``KubeVirt`` resource asks for.

The install namespace is the resource's own namespace (as in KubeVirt). ``spec.imageRegistry`` and
``spec.imageTag`` default to the operator's own (its flags; the tag defaults to its version),
``spec.imagePullPolicy`` likewise; ``spec.configuration.developerConfiguration`` gives emulation and
feature gates; ``spec.infra.replicas`` the replicas of virt-api and virt-controller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kubevirt_types.kubevirt import KubeVirtSpec

from .installconfig import InstallConfig


class InvalidSpecError(ValueError):
    """The KubeVirt spec cannot be read; the message names the field."""


def install_config(kv: Mapping[str, Any], base: InstallConfig) -> InstallConfig:
    """The installation ``kv`` describes, on top of the operator's defaults ``base``."""
    try:
        spec = KubeVirtSpec.model_validate(kv.get("spec") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidSpecError(f"spec.{where}: {first['msg']}") from None
    developer = spec.configuration.developer_configuration if spec.configuration else None
    changes: dict[str, Any] = {"namespace": str((kv.get("metadata") or {}).get("namespace") or base.namespace)}
    if spec.image_registry:
        changes["registry"] = spec.image_registry.rstrip("/")
    if spec.image_tag:
        changes["tag"] = spec.image_tag
    if spec.image_pull_policy:
        changes["image_pull_policy"] = str(spec.image_pull_policy)
    if developer is not None:
        if developer.use_emulation is not None:
            changes["use_emulation"] = developer.use_emulation
        if developer.cpu_allocation_ratio is not None:
            changes["cpu_allocation_ratio"] = developer.cpu_allocation_ratio
        if developer.feature_gates is not None:
            changes["feature_gates"] = tuple(developer.feature_gates)
    if spec.infra is not None and spec.infra.replicas is not None:
        changes["controller_replicas"] = changes["api_replicas"] = spec.infra.replicas
    return dataclasses.replace(base, **changes)
