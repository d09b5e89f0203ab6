#!/usr/bin/env bash
# The whole suite, as CI runs it: sets up the system parts the tests need (scripts/setup.sh:
# Podman and its base image, PostgreSQL, Chromium, ...; skipped when done), installs the test
# dependencies into .venv, runs the suite on SQLite, then again on PostgreSQL (the builder's
# container tests use no database and run in the first pass only), and ends with what was
# skipped and why. The PostgreSQL pass uses WHEELFARM_TEST_DATABASE_URL, by default the
# server scripts/setup.sh started; WHEELFARM_TEST_DATABASE_URL= (empty) leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/venv.sh
# The editable install again only when pyproject.toml (dependencies, entry points) changed.
deps=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat .venv/.test-deps 2>/dev/null)" != "$deps" ]; then
  .venv/bin/pip install -q -e '.[test]'
  echo "$deps" > .venv/.test-deps
fi
jobs=$(nproc)
pg_default=postgresql+psycopg://wheelfarm:wheelfarm@127.0.0.1:5432/postgres
pg_url=${WHEELFARM_TEST_DATABASE_URL-$pg_default}
pg_note="WHEELFARM_TEST_DATABASE_URL is empty"
if [ -z "${WHEELFARM_TEST_DATABASE_URL+set}" ] \
  && ! .venv/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 2)' \
    2>/dev/null; then
  pg_url= pg_note="no PostgreSQL on 127.0.0.1:5432 (scripts/setup.sh starts one)"
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

status=0
# The first pass is on SQLite: the PostgreSQL URL is for the second one only.
WHEELFARM_TEST_DATABASE_URL= .venv/bin/python -m pytest -q -rs -n "$jobs" --dist loadfile "$@" \
  | tee "$logs/sqlite" || status=1
if [ -n "$pg_url" ]; then
  echo "== the suite again, on PostgreSQL"
  WHEELFARM_TEST_DATABASE_URL=$pg_url .venv/bin/python -m pytest -q -rs -n "$jobs" \
    --dist loadfile --ignore-glob='tests/test_builder_*' "$@" | tee "$logs/postgresql" || status=1
fi

# What was skipped and why, over both passes ("SKIPPED [count] where: reason" from -rs).
echo "== skipped"
for pass in sqlite postgresql; do
  [ -e "$logs/$pass" ] || { echo "$pass: not run ($pg_note)"; continue; }
  sed -n 's/^SKIPPED \[\([0-9]*\)\] [^ ]*: \(.*\)$/\1 \2/p' "$logs/$pass" \
    | awk -v pass="$pass" '{n=$1; $1=""; sum[$0]+=n; total+=n}
        END {printf "%s: %d skipped\n", pass, total; for (r in sum) printf "  %d:%s\n", sum[r], r}'
done
exit $status
