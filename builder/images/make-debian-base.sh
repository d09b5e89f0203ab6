#!/usr/bin/env bash
# Make a Debian base image for build containers from Debian's own packages, with debootstrap,
# where no container registry can be reached. One recipe for every Debian platform:
#
#   make-debian-base.sh [IMAGE] [SUITE] [ARCH] [PYTHON_PACKAGES]
#
# IMAGE defaults to localhost/debian-12-py3.11-base:latest, SUITE to bookworm, ARCH (a
# Debian architecture, amd64 or arm64; x86_64 and aarch64 are accepted too) to the host's,
# and PYTHON_PACKAGES (comma separated) to the suite's default CPython with headers, venv and
# pip. A foreign ARCH runs under qemu-user-static through binfmt_misc (installed and
# registered here when missing). The mirror is the one apt on this machine is configured
# with (or $DEBIAN_MIRROR when set). Does nothing when the image already exists, so it is
# safe to call on every CI run.
set -euo pipefail

IMAGE="${1:-localhost/debian-12-py3.11-base:latest}"
SUITE="${2:-bookworm}"
ARCH="${3:-$(dpkg --print-architecture)}"
PYTHON_PACKAGES="${4:-python3,python3-dev,python3-venv,python3-pip}"
ENGINE="${ENGINE:-podman}"

case "$ARCH" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
esac
if ! [[ "$SUITE" =~ ^[a-z]+$ && "$ARCH" =~ ^[a-z0-9]+$ && "$PYTHON_PACKAGES" =~ ^[a-z0-9.+,-]+$ ]]; then
  echo "usage: make-debian-base.sh IMAGE SUITE ARCH PYTHON_PACKAGES (bad suite, arch or packages)" >&2
  exit 2
fi
PACKAGES="$PYTHON_PACKAGES,build-essential,patchelf,ca-certificates"

# A foreign architecture: qemu-user-static registered in binfmt_misc with the "F" flag, so
# the interpreter is found inside chroots and containers too. Checked even when the image
# exists: its containers need the registration as much as debootstrap does.
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
  qemu_arch=$(case "$ARCH" in arm64) echo aarch64 ;; armhf) echo arm ;; *) echo "$ARCH" ;; esac)
  if ! command -v "qemu-$qemu_arch-static" >/dev/null || ! command -v update-binfmts >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      qemu-user-static binfmt-support >/dev/null
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$qemu_arch" ]; then
    update-binfmts --enable "qemu-$qemu_arch"
  fi
fi

if "$ENGINE" image exists "$IMAGE" 2>/dev/null; then
  echo "base image $IMAGE exists"
  exit 0
fi

# The first Debian archive URI apt is configured with: deb822 *.sources ("URIs:") first,
# then one-line sources.list entries. Security and update archives are not base mirrors.
configured_mirror() {
  local files=()
  shopt -s nullglob
  files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  shopt -u nullglob
  local file uri
  for file in "${files[@]}"; do
    [ -r "$file" ] || continue
    if [[ "$file" == *.sources ]]; then
      uri=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$file")
    else
      uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$file")
    fi
    echo "$uri" | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1 || true
  done | head -n 1
}

MIRROR="${DEBIAN_MIRROR:-$(configured_mirror)}"
if [ -z "$MIRROR" ]; then
  echo "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
  exit 1
fi

ROOTFS=$(mktemp -d /var/tmp/wheelfarm-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT

echo "debootstrap $SUITE/$ARCH from $MIRROR into $ROOTFS"
start=$(date +%s)
# With the foreign architecture registered, debootstrap runs its second stage in the
# chroot directly (no --foreign): qemu runs the target's binaries.
debootstrap --variant=minbase --arch="$ARCH" --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
  > "$ROOTFS.log" 2>&1 || { tail -n 40 "$ROOTFS.log" >&2; exit 1; }
# Trim what a build container never needs: apt lists and caches, docs, man pages.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
  "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
# apt inside the image uses the same mirror (for extra packages in derived images).
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$ROOTFS/etc/apt/sources.list"
rm -f "$ROOTFS"/etc/apt/sources.list.d/*.sources 2>/dev/null || true

tar -C "$ROOTFS" --numeric-owner -c . \
  | "$ENGINE" import --arch "$ARCH" --os linux \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE"
echo "made $IMAGE ($SUITE/$ARCH) in $(( $(date +%s) - start )) s"
