"""Configurator: BIOS (SeaBIOS) or EFI (OVMF, optionally Secure Boot) firmware, and direct kernel boot."""

from __future__ import annotations

from virt_launcher.errors import InvalidSpecError, UnsupportedFieldError

from .context import ConvertContext, nvram_path
from .xml import Element, ensure, sub

FIELD = "spec.domain.firmware"


def uses_secure_boot(ctx: ConvertContext) -> bool:
    firmware = ctx.vmi.spec.domain.firmware
    efi = firmware.bootloader.efi if firmware and firmware.bootloader else None
    # KubeVirt's default for EFI is Secure Boot on.
    return efi is not None and efi.secure_boot is not False


def configure(domain: Element, ctx: ConvertContext) -> None:
    os = ensure(domain, "os")
    firmware = ctx.vmi.spec.domain.firmware
    bootloader = firmware.bootloader if firmware else None
    if bootloader is not None and bootloader.efi is not None:
        efi = bootloader.efi
        if efi.persistent:
            raise UnsupportedFieldError(
                "persistent EFI variables need backend storage, which podvirt does not have",
                field=f"{FIELD}.bootloader.efi.persistent",
            )
        secure = uses_secure_boot(ctx)
        features = ctx.vmi.spec.domain.features
        if secure and features is not None and features.smm is not None and features.smm.enabled is False:
            raise InvalidSpecError(
                "Secure Boot needs SMM; enable features.smm", field=f"{FIELD}.bootloader.efi.secureBoot"
            )
        code = ctx.firmware.secure_code if secure else ctx.firmware.code
        template = ctx.firmware.secure_vars if secure else ctx.firmware.vars
        sub(os, "loader", code, readonly=True, secure=secure, type="pflash")
        sub(os, "nvram", nvram_path(ctx), template=template)
    elif bootloader is not None and bootloader.bios is not None and bootloader.bios.use_serial:
        sub(os, "bios", useserial=True)

    kernel_boot = firmware.kernel_boot if firmware else None
    if kernel_boot is not None:
        if kernel_boot.container is None:
            raise InvalidSpecError(
                "kernelBoot needs a container holding the kernel", field=f"{FIELD}.kernelBoot.container"
            )
        if ctx.kernel is None:
            raise InvalidSpecError("the kernel boot container was not resolved", field=f"{FIELD}.kernelBoot.container")
        sub(os, "kernel", ctx.kernel.kernel)
        if ctx.kernel.initrd:
            sub(os, "initrd", ctx.kernel.initrd)
        if kernel_boot.kernel_args:
            if "\x00" in kernel_boot.kernel_args or len(kernel_boot.kernel_args) > 4096:
                raise InvalidSpecError(
                    "kernel arguments must be text under 4096 bytes", field=f"{FIELD}.kernelBoot.kernelArgs"
                )
            sub(os, "cmdline", kernel_boot.kernel_args)
    sub(os, "smbios", mode="sysinfo")
