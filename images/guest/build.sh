#!/usr/bin/env bash
# Builds podvirt's tiny test guest from Debian packages and prints the directory holding it.
#
# The guest is Debian's kernel plus a busybox initramfs (rootfs/init): it prints PODVIRT-* markers on
# the serial console, applies a NoCloud or ConfigDrive seed and keeps a shell on ttyS0. Outputs, in
# ${PODVIRT_CACHE:-~/.cache/podvirt}/guest-images/<version-key>/:
#   vmlinuz, initrd.img        for kernelBoot (kernel args: "console=ttyS0 quiet")
#   tiny.qcow2                 a bootable disk (isolinux hybrid image, BIOS boot)
#   oci/containerdisk/ + containerdisk.oci.tar   OCI image with /disk/tiny.qcow2 (containerDisk)
#   oci/kernelboot/ + kernelboot.oci.tar         OCI image with /boot/vmlinuz and /boot/initrd.img
#   manifest.json              the paths above and the versions they came from
# The version key hashes this directory's files and the Debian package versions, so a rebuild happens
# only when one of them changes. The kernel package is fetched with `apt-get download` (never
# installed) and unpacked with `dpkg-deb -x`. Usage: build.sh [--force]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${PODVIRT_CACHE:-$HOME/.cache/podvirt}/guest-images"
force=0
[[ "${1:-}" == "--force" ]] && force=1

log() { echo "guest-image: $*" >&2; }

candidate() { apt-cache policy "$1" | awk '/Candidate:/ {print $2; exit}'; }
kernel_pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
[[ -n "$kernel_pkg" ]] || { log "cannot resolve linux-image-amd64 (apt-get update?)"; exit 1; }
kernel_ver="$(candidate "$kernel_pkg")"
syslinux_ver="$(candidate isolinux)"
busybox_ver="$(dpkg-query -W -f='${Version}' busybox-static)"
inputs="$kernel_pkg=$kernel_ver isolinux=$syslinux_ver busybox-static=$busybox_ver"
key="$( {
	echo "$inputs"
	cd "$here" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z |
		xargs -0 sha256sum
} | sha256sum | cut -c1-16)"
out="$cache_root/$key"

if [[ $force == 0 && -f "$out/manifest.json" ]]; then
	echo "$out"
	exit 0
fi
mkdir -p "$cache_root/debs"
exec 9>"$cache_root/.lock"
flock 9
if [[ $force == 0 && -f "$out/manifest.json" ]]; then
	echo "$out"
	exit 0
fi

work="$(mktemp -d "$cache_root/.build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "building $key from $inputs"

fetch() { # package version -> path of the .deb in the shared download cache
	local deb
	deb="$(find "$cache_root/debs" -name "${1}_*.deb" | grep -F "$(echo "$2" | sed 's/^[0-9]*://')" | head -n1 || true)"
	if [[ -z "$deb" ]]; then
		(cd "$cache_root/debs" && apt-get download -q "$1=$2" >&2 2>/dev/null) ||
			(cd "$cache_root/debs" && apt-get download -q "$1=$2" >&2)
		deb="$(find "$cache_root/debs" -name "${1}_*.deb" | grep -F "$(echo "$2" | sed 's/^[0-9]*://')" | head -n1)"
	fi
	echo "$deb"
}
dpkg-deb -x "$(fetch "$kernel_pkg" "$kernel_ver")" "$work/kernel"
dpkg-deb -x "$(fetch isolinux "$syslinux_ver")" "$work/syslinux"
dpkg-deb -x "$(fetch syslinux-common "$syslinux_ver")" "$work/syslinux"

kdir="$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)"
krel="$(basename "$kdir")"
busybox depmod -b "$work/kernel" "$krel"

# Drivers the guest needs that Debian builds as modules, loaded by name at boot (dependencies follow).
modules=(virtio_pci virtio_blk virtio_scsi virtio_net virtio_console virtio-rng virtio_input
	ahci sr_mod sd_mod isofs i6300esb button evdev)
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,root,seed,etc} "$root/lib/modules/$krel"
cp -a "$here/rootfs/." "$root/"
cp /bin/busybox "$root/bin/busybox"
printf '%s\n' "${modules[@]}" >"$root/etc/podvirt-modules"
declare -A wanted=()
for m in "${modules[@]}"; do
	line="$(grep -E "/${m//-/[-_]}\.ko:" "$kdir/modules.dep")" || { log "module $m not found"; exit 1; }
	for f in ${line/:/}; do wanted[$f]=1; done
done
for f in "${!wanted[@]}"; do
	mkdir -p "$root/lib/modules/$krel/$(dirname "$f")"
	cp "$kdir/$f" "$root/lib/modules/$krel/$f"
done
cp "$kdir"/modules.{order,builtin} "$root/lib/modules/$krel/"
busybox depmod -b "$root" "$krel"

mkdir -p "$work/out"
cp "$work/kernel/boot/vmlinuz-$krel" "$work/out/vmlinuz"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$work/out/initrd.img"

iso="$work/iso"
mkdir -p "$iso/boot" "$iso/isolinux"
cp "$work/out/vmlinuz" "$work/out/initrd.img" "$iso/boot/"
cp "$work/syslinux/usr/lib/ISOLINUX/isolinux.bin" "$work/syslinux/usr/lib/syslinux/modules/bios/ldlinux.c32" "$iso/isolinux/"
cp "$here/isolinux.cfg" "$iso/isolinux/isolinux.cfg"
SOURCE_DATE_EPOCH=0 xorriso -as mkisofs -quiet -V PODVIRT_TINY -J -R \
	-isohybrid-mbr "$work/syslinux/usr/lib/ISOLINUX/isohdpfx.bin" \
	-b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
	-o "$work/tiny.img" "$iso" 2>&1 | grep -v '^xorriso : UPDATE' >&2 || true
qemu-img convert -q -f raw -O qcow2 "$work/tiny.img" "$work/out/tiny.qcow2"

py=/usr/bin/python3
$py "$here/oci.py" "$work/out/oci/containerdisk" "$work/out/containerdisk.oci.tar" latest \
	"$work/out/tiny.qcow2=disk/tiny.qcow2" >"$work/containerdisk.digest"
$py "$here/oci.py" "$work/out/oci/kernelboot" "$work/out/kernelboot.oci.tar" latest \
	"$work/out/vmlinuz=boot/vmlinuz" "$work/out/initrd.img=boot/initrd.img" >"$work/kernelboot.digest"

$py - "$work/out/manifest.json" "$krel" "$inputs" "$(cat "$work/containerdisk.digest")" \
	"$(cat "$work/kernelboot.digest")" <<'EOF'
import json, sys
path, krel, inputs, cd_digest, kb_digest = sys.argv[1:]
manifest = {
    "kernelRelease": krel,
    "inputs": inputs.split(),
    "kernel": "vmlinuz",
    "initrd": "initrd.img",
    "kernelArgs": "console=ttyS0 quiet",
    "disk": "tiny.qcow2",
    "oci": {
        "containerdisk": {"layout": "oci/containerdisk", "tar": "containerdisk.oci.tar", "digest": cd_digest,
                          "files": ["disk/tiny.qcow2"]},
        "kernelboot": {"layout": "oci/kernelboot", "tar": "kernelboot.oci.tar", "digest": kb_digest,
                       "files": ["boot/vmlinuz", "boot/initrd.img"]},
    },
}
with open(path, "w") as fh:
    json.dump(manifest, fh, indent=2)
EOF
chmod -R a+rX "$work/out"
rm -rf "$out"
mv "$work/out" "$out"
log "done: $(du -sh "$out" | cut -f1) in $out"
echo "$out"
