#!/usr/bin/env bash
# Install the test dependencies into .venv and run the whole suite, on SQLite; and again on
# PostgreSQL when WHEELFARM_TEST_DATABASE_URL names a server (CI sets it; the builder's
# container tests use no database and run in the first pass only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/pip install -q -e '.[test]'
jobs=$(nproc)
# The first pass is on SQLite: the PostgreSQL URL is for the second one only.
WHEELFARM_TEST_DATABASE_URL= .venv/bin/python -m pytest -q -n "$jobs" --dist loadfile "$@"
if [ -n "${WHEELFARM_TEST_DATABASE_URL:-}" ]; then
  echo "== the suite again, on PostgreSQL"
  .venv/bin/python -m pytest -q -n "$jobs" --dist loadfile --ignore-glob='tests/test_builder_*' "$@"
fi
