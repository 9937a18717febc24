#!/usr/bin/env bash
# Starts a Redis server on loopback for the Celery bridge tests and prints (on stdout, and nothing
# else) the `export` line that points the tests at it; scripts/test.sh evals it. Idempotent: a
# second run finds the server answering and prints the same line. No persistence (no RDB, no
# AOF); each test uses its own database number. Also installs the npm Celery client the tests
# use as a producer (tests/peers/celery, `npm ci` from its lock file). Progress goes to stderr.
#   PINGVAS_REDIS_DIR   state directory (log, pid)  [/tmp/pingvas-redis]
#   PINGVAS_REDIS_PORT  TCP port                    [56379]
#   scripts/services/redis.sh stop    stops the server this script started
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEER="$ROOT/tests/peers/celery"
DIR=${PINGVAS_REDIS_DIR:-/tmp/pingvas-redis}
PORT=${PINGVAS_REDIS_PORT:-56379}

say() { echo "redis: $*" >&2; }

answers() {
  [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null || true)" = "PONG" ]
}

if [ "${1:-}" = "stop" ]; then
  if command -v redis-cli >/dev/null 2>&1 && answers; then
    say "stopping the server on port $PORT"
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
  exit 0
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  say "installing redis-server"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
    redis-tools >&2
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing nodejs and npm"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
lock_sum=$(sha256sum "$PEER/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$PEER/node_modules/.pingvas-lock" 2>/dev/null || true)" != "$lock_sum" ] ||
   [ ! -f "$PEER/node_modules/celery-node/package.json" ]; then
  say "npm ci in $PEER"
  (cd "$PEER" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_sum" > "$PEER/node_modules/.pingvas-lock"
fi

if answers; then
  say "already running on 127.0.0.1:$PORT"
else
  mkdir -p "$DIR"
  say "starting redis-server on 127.0.0.1:$PORT"
  redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --save "" --appendonly no \
    --databases 256 --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >&2
  for _ in $(seq 1 100); do
    answers && break
    sleep 0.1
  done
  if ! answers; then
    say "did not answer PING; see $DIR/redis.log"
    exit 1
  fi
fi
echo "export PINGVAS_TEST_REDIS_URL=redis://127.0.0.1:$PORT/0"
