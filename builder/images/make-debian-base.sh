#!/usr/bin/env bash
# Make a Debian base image for build containers from Debian's own packages, with debootstrap,
# where no container registry can be reached. Usage:
#
#   make-debian-base.sh [IMAGE] [SUITE]
#
# IMAGE defaults to localhost/debian-12-py3.11-base:latest and SUITE to bookworm. The mirror
# is the one apt on this machine is configured with (or $DEBIAN_MIRROR when set). Does
# nothing when the image already exists, so it is safe to call on every CI run.
set -euo pipefail

IMAGE="${1:-localhost/debian-12-py3.11-base:latest}"
SUITE="${2:-bookworm}"
ENGINE="${ENGINE:-podman}"
PACKAGES="python3,python3-dev,python3-venv,python3-pip,build-essential,ca-certificates"

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
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap $SUITE from $MIRROR into $ROOTFS"
start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
  > "$ROOTFS.log" 2>&1 || { tail -n 40 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# Trim what a build container never needs: apt lists and caches, docs, man pages.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
  "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
# apt inside the image uses the same mirror (for extra packages in derived images).
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$ROOTFS/etc/apt/sources.list"

tar -C "$ROOTFS" --numeric-owner -c . \
  | "$ENGINE" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE"
echo "made $IMAGE in $(( $(date +%s) - start )) s"
