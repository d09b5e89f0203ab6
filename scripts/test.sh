#!/usr/bin/env bash
# Install the test dependencies into .venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
