#!/usr/bin/env bash
# Creates the Salt venv the formula tests use, only when it is missing, and prints its path.
# Salt comes from PyPI, pinned with its dependencies and their hashes in requirements-salt.lock
# (``make lock``), in a venv of its own (it pins packaging==24.0 and many lower bounds that must
# not reach the app's venv). The venv is cached between runs, keyed by the Salt version and the
# lock's checksum; the first build compiles timelib and takes about 3 minutes, later runs reuse it.
set -euo pipefail
SALT_VERSION=${SALT_VERSION:-3008.3}
CACHE=${CALLBRIDGE_SALT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callbridge-salt-venv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCK="$ROOT/requirements-salt.lock"
VENV="$CACHE/$SALT_VERSION-$(sha256sum "$LOCK" | cut -c1-12)"
STAMP="$VENV/.installed"
PYTHON=${SALT_PYTHON:-python3}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two test runs at once build it once
if [ ! -f "$STAMP" ] || [ ! -x "$VENV/bin/salt-call" ]; then
  printf '\033[1m==> building the Salt %s venv in %s (once; about 3 minutes)\033[0m\n' "$SALT_VERSION" "$VENV" >&2
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
  "$VENV/bin/salt-call" --version >&2
  touch "$STAMP"
fi
echo "$VENV"
