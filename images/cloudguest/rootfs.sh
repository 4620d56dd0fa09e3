#!/usr/bin/env bash
# The root-filesystem stage of build.sh: debootstrap + apt + configuration in a chroot.
#
# build.sh runs this under `unshare --mount --propagation private`, so every mount made here (proc,
# sysfs, devpts, tmpfs) lives in a mount namespace of its own and goes away with the last process in
# it, even when the build is killed. Nothing here touches a block device.
#
# Usage: rootfs.sh ROOT BOOT_OUT SUITE MIRROR SECURITY_MIRROR ROOT_UUID
#   ROOT      empty directory to build the guest's root filesystem in
#   BOOT_OUT  directory that receives boot.img and core.img (GRUB's boot sector and core image)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$1" boot_out="$2" suite="$3" mirror="$4" security="$5" uuid="$6"
kernel_args="console=tty0 console=ttyS0,115200n8"

log() { echo "cloudguest rootfs: $*" >&2; }
in_root() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive HOME=/root "$@"
}

log "debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2

# Our files first: the dpkg path excludes must be in place before apt installs anything.
cp -r --preserve=mode "$here/overlay/." "$root/"
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf 'UUID=%s\t/\text4\trw,discard,errors=remount-ro\t0\t1\n' "$uuid" >"$root/etc/fstab"
# Packages must not start daemons in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"

# grub-pc asks where to install itself; nowhere (build.sh writes the boot sector), and that is fine.
in_root debconf-set-selections <<'EOF'
grub-pc grub-pc/install_devices multiselect
grub-pc grub-pc/install_devices_empty boolean true
EOF
mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages.txt")
log "apt-get install ${packages[*]}"
in_root apt-get -q update >&2
in_root apt-get -q -y install --no-install-recommends "${packages[@]}" >&2

in_root systemctl enable systemd-networkd.service systemd-resolved.service serial-getty@ttyS0.service \
	podvirt-ssh-keygen.service >&2
# e2scrub checks LVM snapshots, which this guest has none of; at boot it only competes for the CPU.
in_root systemctl disable e2scrub_reap.service e2scrub_all.timer >&2
[[ -e "$root/vmlinuz" && -e "$root/initrd.img" ]] || { log "kernel symlinks /vmlinuz, /initrd.img missing"; exit 1; }
# The initramfs holds only the drivers overlay/etc/initramfs-tools/hooks/podvirt names: check they made it.
initramfs_files="$(in_root lsinitramfs "/$(readlink "$root/initrd.img")")"  # (zstd ignores symlinks)
for module in virtio_pci virtio_blk virtio_scsi ahci sd_mod ext4 crc32c_generic; do
	grep -q "/$module\.ko" <<<"$initramfs_files" || { log "initramfs lacks $module"; exit 1; }
done

# GRUB for BIOS without grub-install (which needs the disk as a block device): its modules go to
# /boot/grub/i386-pc as grub-install would put them, the core image finds the root filesystem by UUID,
# and grub.cfg boots the /vmlinuz and /initrd.img symlinks, which Debian moves on kernel upgrades.
mkdir -p "$root/boot/grub"
cp -r "$root/usr/lib/grub/i386-pc" "$root/boot/grub/"
cat >"$root/tmp/early.cfg" <<EOF
search.fs_uuid $uuid root hd0,msdos1
set prefix=(\$root)/boot/grub
EOF
in_root grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -c /tmp/early.cfg -p /boot/grub -o /tmp/core.img \
	biosdisk part_msdos ext2 search_fs_uuid
cp "$root/tmp/core.img" "$root/usr/lib/grub/i386-pc/boot.img" "$boot_out/"
cat >"$root/boot/grub/grub.cfg" <<EOF
# Written by podvirt's images/cloudguest/build.sh; \`update-grub\` in the guest replaces it using
# /etc/default/grub.d/podvirt.cfg.
serial --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $uuid
menuentry 'Debian GNU/Linux' {
	linux /vmlinuz root=UUID=$uuid ro $kernel_args
	initrd /initrd.img
}
EOF

# Nothing that must differ between VMs stays in the image: systemd makes a machine-id on first boot
# (an empty file marks it as first boot), cloud-init makes SSH host keys and its own state.
in_root apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/lib/cloud/*
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/systemd/random-seed" "$root"/var/lib/dpkg/*-old \
	"$root"/var/cache/debconf/*-old "$root/root/.bash_history"
: >"$root/etc/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
find "$root/var/log" -type f -delete
# Files debootstrap unpacked before the dpkg excludes were in place.
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

in_root dpkg-query -W -f='${Package}\t${Version}\n' >"$boot_out/packages.tsv"
umount "$root/tmp" "$root/run" "$root/dev/pts" "$root/sys" "$root/proc"
log "done: $(du -sh "$root" | cut -f1)"
