"""Configurator: vCPU count, CPU topology, CPU model and feature flags."""

from __future__ import annotations

from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

from .context import ConvertContext
from .xml import Element, sub

FIELD = "spec.domain.cpu"
HOST_MODELS = ("host-model", "host-passthrough")
FEATURE_POLICIES = ("force", "require", "optional", "disable", "forbid")
MAX_VCPUS = 512


def configure(domain: Element, ctx: ConvertContext) -> None:
    spec = ctx.vmi.spec.domain.cpu
    vcpus = ctx.vcpu_count()
    sockets = (spec.sockets if spec else None) or 1
    cores = (spec.cores if spec else None) or 1
    threads = (spec.threads if spec else None) or 1
    if spec is None or not (spec.sockets or spec.cores or spec.threads):
        sockets = vcpus
    max_sockets = spec.max_sockets if spec else None
    if max_sockets is not None and max_sockets < sockets:
        raise InvalidSpecError(f"maxSockets ({max_sockets}) is below sockets ({sockets})", field=f"{FIELD}.maxSockets")
    topology_sockets = max_sockets or sockets
    total = topology_sockets * cores * threads
    if total > MAX_VCPUS:
        raise UnsupportedFieldError(f"{total} vCPUs is more than podvirt supports ({MAX_VCPUS})", field=FIELD)
    sub(domain, "vcpu", total, placement="static", current=vcpus if total != vcpus else None)

    model = spec.model if spec else None
    cpu = sub(domain, "cpu")
    if model in HOST_MODELS or model is None:
        if ctx.domain_type == "kvm":
            cpu.set("mode", model or "host-model")
        elif model is not None:
            # Software emulation has no host CPU to copy; QEMU's default model runs any x86-64 guest.
            ctx.warnings.append(f"{FIELD}.model: {model} needs KVM; using the emulator's default CPU model")
    else:
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        sub(cpu, "model", model, fallback="allow")
    sub(cpu, "topology", sockets=topology_sockets, dies=1, cores=cores, threads=threads)
    for i, feature in enumerate((spec.features if spec else None) or []):
        policy = feature.policy or "require"
        if policy not in FEATURE_POLICIES:
            raise InvalidSpecError(
                f"policy must be one of {', '.join(FEATURE_POLICIES)}", field=f"{FIELD}.features[{i}].policy"
            )
        if not feature.name or not all(c.isalnum() or c in "-_." for c in feature.name):
            raise InvalidSpecError("not a CPU feature name", field=f"{FIELD}.features[{i}].name")
        sub(cpu, "feature", policy=policy, name=feature.name)
