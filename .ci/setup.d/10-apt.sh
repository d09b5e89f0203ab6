#!/usr/bin/env bash
# Debian packages the test suite needs.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
