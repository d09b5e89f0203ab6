#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the web console's browser test
# (tests/test_console_browser.py, driven by Selenium). Idempotent.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core \
    >/dev/null
fi
chromium --version
chromedriver --version
