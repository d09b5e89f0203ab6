#!/usr/bin/env bash
# The system parts the test suite needs (Podman and its base image, PostgreSQL, Chromium, ...):
# runs each .ci/setup.d/*.sh in name order, as root on Debian. Each script is idempotent; a
# stamp under .cache/setup/ remembers a successful run, keyed on the script's content, the
# files it names on a "# setup-inputs:" line, and this boot (a reboot stops the services it
# started), so a second run skips it in milliseconds. WHEELFARM_SETUP=always runs every
# script again; WHEELFARM_SETUP=skip runs none (the tests then skip what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${WHEELFARM_SETUP:-}" = skip ] && exit 0
stamps=.cache/setup
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown-boot)

# The stamp one script's current run would leave: "<sha256> <name>".
stamp_key() {
  local script=$1 inputs
  inputs=$(sed -n 's/^# setup-inputs: *//p' "$script")
  # shellcheck disable=SC2086
  { echo "$boot"; cat "$script"; for f in $inputs; do cat "$f" 2>/dev/null || true; done; } \
    | sha256sum | cut -d' ' -f1
}

pending=()
for script in .ci/setup.d/*.sh; do
  [ -e "$script" ] || continue
  name=$(basename "$script" .sh)
  if [ "${WHEELFARM_SETUP:-}" != always ] \
    && [ "$(cat "$stamps/$name" 2>/dev/null)" = "$(stamp_key "$script")" ]; then
    continue
  fi
  pending+=("$script")
done
[ ${#pending[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=WHEELFARM_SETUP bash "$0"
  fi
  echo "The test suite needs system packages and services; this once, as root, run:" >&2
  echo "    sudo bash scripts/setup.sh" >&2
  echo "then bash scripts/test.sh again (or WHEELFARM_SETUP=skip bash scripts/test.sh to run" >&2
  echo "without them: the container, browser, image and PostgreSQL tests then skip)." >&2
  echo "Not set up yet: ${pending[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
mkdir -p "$stamps"
echo '*' > "$stamps/.gitignore"
for script in "${pending[@]}"; do
  echo "== $script"
  bash "$script"
  stamp_key "$script" > "$stamps/$(basename "$script" .sh)"
done
