#!/usr/bin/env bash
# Debian's nginx, for the static export's read path (tests/test_export_nginx.py starts its
# own nginx, non-daemon, with deploy/nginx/wheelfarm.conf on a free loopback port).
# Idempotent. The package's own service must not keep port 80 (or fail on it): the default
# site is removed and the service stopped and disabled; the tests need only the binary.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! command -v nginx >/dev/null; then
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends nginx >/dev/null
fi
rm -f /etc/nginx/sites-enabled/default
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
elif [ -x /etc/init.d/nginx ]; then
  /etc/init.d/nginx stop >/dev/null 2>&1 || true
fi
built_with=$(nginx -V 2>&1)
case "$built_with" in
  *--with-http_gzip_static_module*) ;;
  *) echo "this nginx lacks gzip_static" >&2; exit 1 ;;
esac
nginx -v
