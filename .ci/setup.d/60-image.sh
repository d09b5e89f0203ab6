#!/usr/bin/env bash
# Wheels for tests/test_image.py, which builds the top-level Dockerfile with Podman offline:
# wheelfarm's dependencies and setuptools, fetched once here (tests/image_wheels.py), so the
# test needs no network. Podman and the base image come from 20-podman.sh. Idempotent.
# setup-inputs: pyproject.toml tests/image_wheels.py
set -euo pipefail
cd "$(dirname "$0")/../.."

if python3 tests/image_wheels.py --check; then
  echo "image wheels are current"
  exit 0
fi
# Debian's python3 (3.11, the base image's) has no pip of its own: a throwaway venv's pip.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/python" tests/image_wheels.py
