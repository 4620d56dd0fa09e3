#!/usr/bin/env bash
# Sets up everything podvirt needs on a fresh Debian machine; fast and silent when all is there.
# Debian packages, the virtualenv (from Debian's /usr/bin/python3 so non-root pod processes can run it),
# the project installed into it, and the Go-built cluster binaries (cached outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-dev libvirt-clients pkg-config
  qemu-system-x86 qemu-utils ovmf busybox-static nftables iproute2 cpio xorriso libxml2-utils
  gcc python3-dev python3-venv util-linux procps
)
VENV="${PODVIRT_VENV:-/opt/podvirt/venv}"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
  echo "setup: the Go toolchain is missing; installing Debian's golang" >&2
  apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi

# Pods of the stand-in node run podvirt as non-root users (the launcher as UID 107). When this checkout
# is not readable by them (a clone under /root, say), install a copy instead of an editable link.
PACKAGES=(kubevirt_types podvirt_common devcluster virt_controller virt_handler virt_launcher virt_api virtctl virt_operator)
if runuser -u nobody -- test -r "$(pwd)/pyproject.toml" 2>/dev/null; then
  mode=editable
  want="editable $(sha256sum pyproject.toml | cut -c1-16) $(pwd)"
else
  mode=copy
  want="copy $(find pyproject.toml "${PACKAGES[@]}" -type f \( -name '*.py' -o -name '*.toml' -o -name '*.go' -o -name '*.typed' \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
fi
stamp="$VENV/.podvirt-stamp"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: preparing the virtualenv $VENV ($mode install of podvirt)"
  mkdir -p "$(dirname "$VENV")"
  [[ -x "$VENV/bin/python" ]] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  if [[ $mode == editable ]]; then
    "$VENV/bin/pip" install -q -e ".[dev]"
  else
    "$VENV/bin/pip" install -q ".[dev]"
    rm -rf build
  fi
  echo "$want" >"$stamp"
fi
chmod -R a+rX "$(dirname "$VENV")"

"$VENV/bin/python" -m devcluster.binaries
