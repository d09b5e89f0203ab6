#!/usr/bin/env bash
# A PostgreSQL server on loopback for the suite's second run (WHEELFARM_TEST_DATABASE_URL).
# Idempotent: installs Debian's server, starts the default cluster, makes a test role.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_lsclusters >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >/dev/null
fi
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
  pg_createcluster 15 main >/dev/null
  cluster="15 main"
fi
# shellcheck disable=SC2086
pg_ctlcluster $cluster start 2>/dev/null || true
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='wheelfarm'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"create role wheelfarm login createdb password 'wheelfarm'\""
echo "PostgreSQL ready: postgresql+psycopg://wheelfarm:wheelfarm@127.0.0.1:5432/postgres"
