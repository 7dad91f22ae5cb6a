#!/usr/bin/env bash
# Installs callbridge into a virtual environment from the committed lock: exact versions of every
# package, direct and transitive, checked against their hashes, so the same commit installs the
# same code today and next month. The environment is rebuilt from scratch whenever the lock or
# pyproject.toml is newer than the last install, so nothing outside the lock lingers in it.
# `make lock` refreshes requirements.lock from the ranges in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.installed"

if [ -x "$VENV/bin/python" ] && [ "$STAMP" -nt requirements.lock ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi
printf '\033[1m==> installing callbridge from requirements.lock into %s\033[0m\n' "$VENV"
"$PYTHON" -m venv --clear "$VENV"
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -c "import callbridge, playwright, pytest" # fail loudly when the install failed
touch "$STAMP"
