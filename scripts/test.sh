#!/usr/bin/env bash
# The whole test run: installs what is missing, starts a throwaway PostgreSQL and Redis on
# loopback, runs lint, types and every test (SQLite and PostgreSQL), and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || need_apt+=(postgresql)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)  # speech for the transcription tests
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# the softphone's browser tests: a SIP-over-WebSocket registrar and proxy on loopback
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ] || need_apt+=(kamailio-websocket-modules)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "make test needs these Debian packages: ${need_apt[*]}" >&2
    echo "install them with: sudo apt-get install ${need_apt[*]}  (or run make test as root)" >&2
    exit 2
  fi
fi

PYTHON="$PYTHON" VENV="$VENV" bash scripts/install.sh

TMP=$(mktemp -d /tmp/callbridge-test.XXXXXX)
chmod 755 "$TMP"
free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PG_PORT=${PG_PORT:-$(free_port)}
REDIS_PORT=${REDIS_PORT:-$(free_port)}
started_pg=""
cleanup() {
  set +e
  if [ -n "$started_pg" ]; then as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg" -m immediate -w stop >/dev/null 2>&1; fi
  if [ -f "$TMP/redis.pid" ]; then kill "$(cat "$TMP/redis.pid")" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

say "starting throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
if [ "$(id -u)" = 0 ]; then chown postgres "$TMP"; fi
as_pg "$PG_BIN/initdb" -D "$TMP/pg" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg.log" -w \
  -o "-k $TMP -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=300" \
  start >/dev/null || { cat "$TMP/pg.log" >&2; exit 1; }
started_pg=1

say "starting throwaway Redis on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --pidfile "$TMP/redis.pid" \
  --dir "$TMP" --save '' --appendonly no --logfile "$TMP/redis.log"

export CALLBRIDGE_TEST_POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/postgres"
export CALLBRIDGE_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export CALLBRIDGE_CHROMIUM="${CALLBRIDGE_CHROMIUM:-/usr/bin/chromium}"

if [ "${LINT:-1}" != 0 ]; then  # LINT=0 skips ruff and mypy while iterating on tests
  say "ruff"
  "$VENV/bin/ruff" check src tests bench
  "$VENV/bin/ruff" format --check src tests bench
  say "mypy --strict"
  "$VENV/bin/mypy"
fi
say "pytest (SQLite and PostgreSQL)"
mkdir -p "$ROOT/test-artifacts"
# Spread over the cores (pytest-xdist): TEST_WORKERS=0 runs in this process, one test at a time.
WORKERS=${TEST_WORKERS:-$(nproc)}
if [ "$WORKERS" -gt 0 ]; then
  set -- -n "$WORKERS" --dist loadgroup "$@"
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=20 "$@"
