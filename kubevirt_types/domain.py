"""The virtual hardware of a VMI other than devices: CPU, memory, resources, machine, firmware, clock, features."""

from __future__ import annotations

from pydantic import Field

from ._base import Exclusive, KubeModel, OneOf
from .devices import Devices
from .enums import PullPolicy, RTCTrack, TimerTickPolicy
from .quantity import Quantity


class CPUFeature(KubeModel):
    """A CPU feature flag to require or forbid."""

    name: str
    """Feature name as libvirt knows it, e.g. vmx or pcid."""
    policy: str | None = None
    """force, require (default), optional, disable or forbid."""


class CPU(KubeModel):
    """The guest's CPU topology and model."""

    cores: int | None = Field(default=None, ge=1)
    """Cores per socket (default 1)."""
    sockets: int | None = Field(default=None, ge=1)
    """Sockets (default 1)."""
    threads: int | None = Field(default=None, ge=1)
    """Threads per core (default 1)."""
    max_sockets: int | None = Field(default=None, ge=1)
    """Upper bound of sockets for CPU hotplug."""
    model: str | None = None
    """CPU model: host-model, host-passthrough or a named libvirt model; the cluster default when unset."""
    features: list[CPUFeature] | None = Field(default=None, max_length=256)
    """Feature flags on top of the model."""


class Memory(KubeModel):
    """The guest's memory."""

    guest: Quantity | None = None
    """Memory the guest sees; defaults to the memory request."""
    max_guest: Quantity | None = None
    """Upper bound of guest memory for memory hotplug."""


class ResourceRequirements(KubeModel):
    """Compute resources of the VMI's pod (memory also sizes the guest when memory.guest is unset)."""

    requests: dict[str, Quantity] | None = None
    """Minimum resources, by name (cpu, memory, ...)."""
    limits: dict[str, Quantity] | None = None
    """Maximum resources, by name."""
    overcommit_guest_overhead: bool | None = None
    """Do not add the launcher's overhead to the pod's memory request."""


class Machine(KubeModel):
    """The emulated machine."""

    type: str | None = None
    """Machine type, e.g. q35 (the default) or pc-q35-7.2."""


class BIOS(KubeModel):
    """Legacy BIOS boot (SeaBIOS)."""

    use_serial: bool | None = None
    """Show BIOS output on the serial console."""


class EFI(KubeModel):
    """UEFI boot (OVMF)."""

    secure_boot: bool | None = None
    """Enable Secure Boot (default true); needs the smm feature."""
    persistent: bool | None = None
    """Keep EFI variables across restarts."""


class Bootloader(KubeModel):
    """How the guest firmware boots."""

    rules = (OneOf(("bios", "efi")),)

    bios: BIOS | None = None
    """Boot with BIOS."""
    efi: EFI | None = None
    """Boot with UEFI."""


class KernelBootContainer(KubeModel):
    """A container image that holds a kernel and initrd to boot directly."""

    image: str
    """Image holding the kernel and initrd."""
    image_pull_secret: str | None = None
    """Secret to pull the image with."""
    kernel_path: str | None = None
    """Path of the kernel inside the image."""
    initrd_path: str | None = None
    """Path of the initrd inside the image."""
    image_pull_policy: PullPolicy | None = None
    """When to pull the image."""


class KernelBoot(KubeModel):
    """Boot a kernel directly instead of through the firmware's boot loader."""

    kernel_args: str | None = None
    """Kernel command line."""
    container: KernelBootContainer | None = None
    """Where the kernel and initrd come from."""


class Firmware(KubeModel):
    """The guest's firmware and identity."""

    uuid: str | None = None
    """SMBIOS system UUID; derived from the VM's name when unset."""
    serial: str | None = None
    """SMBIOS system serial number."""
    bootloader: Bootloader | None = None
    """BIOS or EFI."""
    kernel_boot: KernelBoot | None = None
    """Direct kernel boot."""


class ClockOffsetUTC(KubeModel):
    """A guest clock in UTC, optionally shifted."""

    offset_seconds: int | None = None
    """Offset from UTC in seconds."""


class Timer(KubeModel):
    """A timer with a tick policy."""

    present: bool | None = None
    """Whether the timer is attached (default true)."""
    tick_policy: TimerTickPolicy | None = None
    """What to do with missed ticks."""


class RTCTimer(Timer):
    """The real-time clock."""

    track: RTCTrack | None = None
    """Whether the RTC follows guest or wall time."""


class PresentTimer(KubeModel):
    """A timer that can only be attached or detached."""

    present: bool | None = None
    """Whether the timer is attached (default true)."""


class Timers(KubeModel):
    """The guest's timers."""

    hpet: Timer | None = None
    """High Precision Event Timer."""
    kvm: PresentTimer | None = None
    """KVM paravirtual clock."""
    pit: Timer | None = None
    """Programmable Interval Timer."""
    rtc: RTCTimer | None = None
    """Real-time clock."""
    hyperv: PresentTimer | None = None
    """Hyper-V reference time counter."""


class Clock(KubeModel):
    """The guest's clock: UTC (optionally offset) or a time zone."""

    rules = (Exclusive("utc", "timezone", "clock: set utc or timezone, not both"),)

    utc: ClockOffsetUTC | None = None
    """The clock runs in UTC."""
    timezone: str | None = None
    """The clock runs in this time zone, e.g. Europe/Berlin."""
    timer: Timers | None = None
    """Timers exposed to the guest."""


class FeatureState(KubeModel):
    """A feature switched on or off."""

    enabled: bool | None = None
    """Whether the feature is on (default true)."""


class FeatureAPIC(FeatureState):
    """The local APIC."""

    end_of_interrupt: bool | None = None
    """Paravirtual end-of-interrupt."""


class FeatureSpinlocks(FeatureState):
    """Hyper-V spinlock enlightenment."""

    spinlocks: int | None = Field(default=None, ge=4096)
    """Retries before the guest notifies the hypervisor (at least 4096)."""


class FeatureVendorID(FeatureState):
    """Hyper-V vendor ID."""

    vendorid: str | None = Field(default=None, max_length=12)
    """Vendor ID string, up to 12 characters."""


class SyNICTimer(FeatureState):
    """Hyper-V synthetic timers."""

    direct: FeatureState | None = None
    """Direct-mode synthetic timers."""


class FeatureHyperv(KubeModel):
    """Hyper-V enlightenments for Windows guests."""

    relaxed: FeatureState | None = None
    """Relaxed timing."""
    vapic: FeatureState | None = None
    """Virtual APIC."""
    spinlocks: FeatureSpinlocks | None = None
    """Spinlock enlightenment."""
    vpindex: FeatureState | None = None
    """Virtual processor index."""
    runtime: FeatureState | None = None
    """Processor time accounting."""
    synic: FeatureState | None = None
    """Synthetic interrupt controller."""
    synictimer: SyNICTimer | None = None
    """Synthetic timers."""
    reset: FeatureState | None = None
    """Hypervisor reset."""
    vendorid: FeatureVendorID | None = None
    """Vendor ID."""
    frequencies: FeatureState | None = None
    """TSC and APIC frequency MSRs."""
    reenlightenment: FeatureState | None = None
    """Re-enlightenment after migration."""
    tlbflush: FeatureState | None = None
    """Paravirtual TLB flush."""
    ipi: FeatureState | None = None
    """Paravirtual IPIs."""
    evmcs: FeatureState | None = None
    """Enlightened VMCS for nested guests."""


class FeatureKVM(KubeModel):
    """KVM paravirtual features."""

    hidden: bool | None = None
    """Hide the KVM signature from the guest."""


class Features(KubeModel):
    """Machine features."""

    acpi: FeatureState | None = None
    """ACPI (default on)."""
    apic: FeatureAPIC | None = None
    """The local APIC."""
    smm: FeatureState | None = None
    """System Management Mode (needed by Secure Boot)."""
    hyperv: FeatureHyperv | None = None
    """Hyper-V enlightenments."""
    kvm: FeatureKVM | None = None
    """KVM features."""
    pvspinlock: FeatureState | None = None
    """Paravirtual spinlocks."""


class DomainSpec(KubeModel):
    """The virtual machine's hardware."""

    devices: Devices
    """Disks, network interfaces and other devices."""
    cpu: CPU | None = None
    """CPU topology and model."""
    memory: Memory | None = None
    """Guest memory."""
    resources: ResourceRequirements | None = None
    """Pod resources."""
    machine: Machine | None = None
    """Machine type."""
    firmware: Firmware | None = None
    """Firmware and boot."""
    clock: Clock | None = None
    """Clock and timers."""
    features: Features | None = None
    """Machine features."""
