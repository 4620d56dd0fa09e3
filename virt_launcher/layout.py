"""Where things live in the launcher's pod: the shared sockets dir, the private dir and the volume mounts.

This module is the one place that names these paths; the pod builder (virt-controller) and the node
handler follow the same conventions.

Sockets dir (an emptyDir the handler reaches on the node; the handler's only way in):
    launcher.sock      command socket (see ``runtime.protocol``)
    console.sock       serial console, one client at a time (raw bytes)
    vnc.sock           VNC (RFB) when a graphics device is attached

Private dir (an emptyDir only the launcher uses; unix socket paths must stay under 108 bytes):
    libvirt/           root of the embedded libvirt QEMU driver (qemu:///embed?root=...)
    disks/             overlays, empty disks, cloud-init and config ISOs
    nvram/             EFI variable stores
    serial0.sock       QEMU's serial port (QEMU connects to the launcher here)
    qga.sock           the guest agent channel (QEMU listens, libvirt connects)
    console.log        the last bytes the guest wrote to its serial console (bounded)
    home/              $HOME of libvirt and QEMU

Volumes dir (where the pod mounts each VMI volume, ``<volumes-dir>/<volume name>``):
    containerDisk      the image's root; the disk is ``disk/<file>`` or the spec's ``path``
    persistentVolumeClaim, dataVolume, ephemeral
                       filesystem mode: ``disk.img`` inside; block mode: the entry is the block device
    hostDisk           the host directory holding the image (hostPath of dirname(path)); the launcher
                       only ever opens ``basename(path)`` inside it
    configMap, secret, serviceAccount
                       the object's keys as files
    cloudInit* secretRef
                       ``userdata-secret/`` and ``networkdata-secret/`` inside the volume's entry
    kernelBoot         the kernel boot container's root at ``<volumes-dir>/.kernel-boot``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_UNIX_SOCKET_PATH = 107
KERNEL_BOOT_ENTRY = ".kernel-boot"
USERDATA_SECRET_ENTRY = "userdata-secret"  # noqa: S105 (a directory name)
NETWORKDATA_SECRET_ENTRY = "networkdata-secret"  # noqa: S105 (a directory name)


@dataclass(frozen=True)
class PodLayout:
    """The three directories of a launcher pod and every path derived from them."""

    sockets_dir: Path
    private_dir: Path
    volumes_dir: Path

    @property
    def command_socket(self) -> Path:
        return self.sockets_dir / "launcher.sock"

    @property
    def console_socket(self) -> Path:
        return self.sockets_dir / "console.sock"

    @property
    def vnc_socket(self) -> Path:
        return self.sockets_dir / "vnc.sock"

    @property
    def libvirt_root(self) -> Path:
        return self.private_dir / "libvirt"

    @property
    def disks_dir(self) -> Path:
        return self.private_dir / "disks"

    @property
    def nvram_dir(self) -> Path:
        return self.private_dir / "nvram"

    @property
    def serial_socket(self) -> Path:
        return self.private_dir / "serial0.sock"

    @property
    def guest_agent_socket(self) -> Path:
        """The guest agent's virtio-serial channel. Named here, short: libvirt's default
        (``<root>/lib/qemu/channel/target/domain-<id>-<name>/org.qemu.guest_agent.0``) exceeds the
        kernel's limit for a long namespace and VMI name, and the domain would not start."""
        return self.private_dir / "qga.sock"

    @property
    def console_log(self) -> Path:
        return self.private_dir / "console.log"

    @property
    def home_dir(self) -> Path:
        return self.private_dir / "home"

    def volume_entry(self, volume_name: str) -> Path:
        return self.volumes_dir / volume_name

    def too_long_socket_paths(self) -> list[Path]:
        """Socket paths the kernel would refuse (sun_path holds 107 bytes and a NUL)."""
        candidates = [
            self.command_socket,
            self.console_socket,
            self.vnc_socket,
            self.serial_socket,
            self.guest_agent_socket,
        ]
        # libvirt puts QEMU's monitor socket at <root>/lib/qemu/domain-<id>-<name up to 20>/monitor.sock.
        candidates.append(self.libvirt_root / "lib/qemu/domain-9999-xxxxxxxxxxxxxxxxxxxx/monitor.sock")
        return [p for p in candidates if len(str(p).encode()) > MAX_UNIX_SOCKET_PATH]
