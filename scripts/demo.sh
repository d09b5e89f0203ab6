#!/usr/bin/env bash
# Install wheelfarm into .venv and run the demo on embedded defaults (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/pip install -q -e '.[server]'
exec .venv/bin/wheelfarm demo "$@"
