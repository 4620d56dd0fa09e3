#!/usr/bin/env bash
# Builds podvirt's realistic guest, a Debian cloud image, and prints the directory holding it.
#
# Debian bookworm from Debian's packages: systemd, cloud-init (NoCloud and ConfigDrive), qemu-guest-agent,
# openssh-server, a getty on ttyS0, DHCP through systemd-networkd, Debian's kernel and GRUB for BIOS.
# Outputs, in ${PODVIRT_CACHE:-~/.cache/podvirt}/guest-images/cloudguest-<key>/:
#   cloudguest.qcow2                          the bootable disk (compressed qcow2, 2 GiB virtual)
#   oci/containerdisk/ + containerdisk.oci.tar  OCI image with /disk/cloudguest.qcow2 (containerDisk)
#   manifest.json                             file names, kernel, root UUID, package versions
#   build.log                                 what debootstrap and apt said
# The key hashes the suite and this directory's files (scripts, package list, overlay), so a second run
# is instant. No loop device and no mount on the host: the root filesystem is made with `mkfs.ext4 -d`
# and the disk assembled with sfdisk and dd (README.md says why and what it costs).
#
# Usage: build.sh [--print-path] [--force]
#   --print-path  print the directory for the current inputs without building; exit 1 if not built
#   --force       rebuild even when the cached image is there
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
suite=bookworm
mirror="${PODVIRT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${PODVIRT_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
disk_mib=2048
cache_root="${PODVIRT_CACHE:-$HOME/.cache/podvirt}/guest-images"

print_path=0 force=0
for arg in "$@"; do
	case "$arg" in
	--print-path) print_path=1 ;;
	--force) force=1 ;;
	*) echo "usage: $0 [--print-path] [--force]" >&2; exit 2 ;;
	esac
done

log() { echo "cloudguest: $*" >&2; }

key="$( {
	echo "suite=$suite disk_mib=$disk_mib"
	cd "$here" && find . -type f ! -name '*.md' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z |
		xargs -0 sha256sum
} | sha256sum | cut -c1-16)"
out="$cache_root/cloudguest-$key"

if [[ $print_path == 1 ]]; then
	echo "$out"
	[[ -f "$out/manifest.json" ]]
	exit
fi
if [[ $force == 0 && -f "$out/manifest.json" ]]; then
	echo "$out"
	exit 0
fi

[[ $(id -u) == 0 ]] || { log "debootstrap and chroot need root"; exit 1; }
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v sfdisk >/dev/null || missing+=(fdisk)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -q -y install "${missing[@]}" >&2
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.cloudguest.lock"
flock 9
if [[ $force == 0 && -f "$out/manifest.json" ]]; then
	echo "$out"
	exit 0
fi

# Mounts are made only inside rootfs.sh's private mount namespace; if one ever shows up under a build
# directory, unmount it before deleting anything, and never let rm cross into another filesystem.
mounts_under() { awk -v p="$1/" 'index($5 "/", p) == 1 {print $5}' /proc/self/mountinfo | sort -r; }
remove_build_dir() {
	local m
	for m in $(mounts_under "$1"); do umount -l "$m" || true; done
	rm -rf --one-file-system "$1"
}
# Holding the lock, any other build directory was left by a build that was killed.
for stale in "$cache_root"/.cloudguest-build-*; do
	if [[ -d "$stale" ]]; then
		log "removing $stale (left by a killed build)"
		remove_build_dir "$stale"
	fi
done

work="$(mktemp -d "$cache_root/.cloudguest-build-XXXXXX")"
trap 'remove_build_dir "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM  # so that the EXIT trap cleans up on these too
started=$SECONDS
# The root filesystem's UUID (and the disk's MBR id) come from the key: equal inputs, equal disks.
uuid="$(echo "$key" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')"
log "building $out (suite $suite, root UUID $uuid); log in $work/build.log"

mkdir -p "$work/root" "$work/boot" "$work/out"
if ! unshare --mount --propagation private -- "$here/rootfs.sh" "$work/root" "$work/boot" "$suite" "$mirror" \
	"$security_mirror" "$uuid" >"$work/build.log" 2>&1; then
	tail -n 40 "$work/build.log" >&2
	log "root filesystem stage failed (full log above, the build directory is removed)"
	exit 1
fi
tail -n 1 "$work/build.log" >&2
[[ -z "$(mounts_under "$work")" ]] || { log "mounts survived the namespace: $(mounts_under "$work")"; exit 1; }
# Device nodes debootstrap made, and mount points' contents: the guest mounts its own.
find "$work/root/dev" "$work/root/run" "$work/root/tmp" -mindepth 1 -delete

# Disk: MBR, 1 MiB gap holding GRUB's core image, one bootable ext4 partition filling the rest.
disk="$work/disk.raw" part="$work/root.ext4"
part_mib=$((disk_mib - 1))
truncate -s "${disk_mib}M" "$disk"
sfdisk -q "$disk" <<EOF
label: dos
label-id: 0x${uuid:0:8}
start=2048, type=83, bootable
EOF
truncate -s "${part_mib}M" "$part"
mkfs.ext4 -q -F -t ext4 -L cloudroot -U "$uuid" -d "$work/root" "$part"
e2fsck -fn "$part" >>"$work/build.log" 2>&1 || { log "e2fsck found errors in the new filesystem"; exit 1; }
dd if="$part" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
core_sectors=$((($(stat -c %s "$work/boot/core.img") + 511) / 512))
((core_sectors < 2048)) || { log "GRUB core image ($core_sectors sectors) does not fit before the partition"; exit 1; }
# boot.img's first 440 bytes are code; the disk signature and partition table after them stay.
dd if="$work/boot/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
rm -f "$part"
qemu-img convert -q -c -f raw -O qcow2 "$disk" "$work/out/cloudguest.qcow2"
rm -f "$disk"

/usr/bin/python3 "$repo/images/guest/oci.py" "$work/out/oci/containerdisk" "$work/out/containerdisk.oci.tar" latest \
	"$work/out/cloudguest.qcow2=disk/cloudguest.qcow2" >"$work/containerdisk.digest"

krel="$(basename "$(readlink "$work/root/vmlinuz")")"
krel="${krel#vmlinuz-}"
cp "$work/build.log" "$work/out/build.log"
/usr/bin/python3 - "$work/out/manifest.json" "$suite" "$krel" "$uuid" "$disk_mib" "$(cat "$work/containerdisk.digest")" \
	"$work/boot/packages.tsv" "$here/packages.txt" "$((SECONDS - started))" <<'EOF'
import json, sys
path, suite, krel, uuid, disk_mib, digest, installed_tsv, wanted_txt, seconds = sys.argv[1:]
installed = dict(line.split("\t", 1) for line in open(installed_tsv).read().splitlines())
wanted = [w for w in (line.split("#")[0].strip() for line in open(wanted_txt)) if w]
manifest = {
    "suite": suite,
    "disk": "cloudguest.qcow2",
    "diskVirtualMiB": int(disk_mib),
    "kernelRelease": krel,
    "kernelArgs": "console=tty0 console=ttyS0,115200n8",
    "rootUUID": uuid,
    "packages": {name: installed.get(name) for name in wanted},
    "installedPackages": len(installed),
    "buildSeconds": int(seconds),
    "oci": {"containerdisk": {"layout": "oci/containerdisk", "tar": "containerdisk.oci.tar", "digest": digest,
                              "files": ["disk/cloudguest.qcow2"]}},
}
with open(path, "w") as fh:
    json.dump(manifest, fh, indent=2)
EOF
chmod -R a+rX "$work/out"
rm -rf "$out"
mv "$work/out" "$out"
log "done in $((SECONDS - started)) s: qcow2 $(du -h "$out/cloudguest.qcow2" | cut -f1), all outputs $(du -sh "$out" | cut -f1)"
echo "$out"
