#!/usr/bin/env bash
# Starts an S3-compatible server on loopback for the production-stack tests and prints (on stdout,
# and nothing else) the `export` lines that point the tests at it; scripts/test.sh evals them.
# Idempotent: a second run finds the server running and prints the same lines.
# The server is @20minutes/s3rver (a maintained fork of npm's s3rver that verifies SigV4
# signatures, header and presigned), installed with `npm ci` from tests/peers/s3 and run by
# tests/peers/s3/server.js. Progress goes to stderr.
#   PINGVAS_S3_DIR   state directory (data, log, pid)  [/tmp/pingvas-s3]
#   PINGVAS_S3_PORT  TCP port                          [59000]
#   scripts/services/s3.sh stop    stops the server this script started
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEER="$ROOT/tests/peers/s3"
DIR=${PINGVAS_S3_DIR:-/tmp/pingvas-s3}
PORT=${PINGVAS_S3_PORT:-59000}
ENDPOINT="http://127.0.0.1:$PORT"
# Test-only credentials: distinct key and secret, so a test can tell whether a secret leaked.
ACCESS_KEY=pingvastest
SECRET_KEY=pingvas-test-secret-0123456789abcdef

say() { echo "s3: $*" >&2; }

running_pid() {
  local pid
  pid=$(cat "$DIR/server.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

answers() {
  # Anonymous ListBuckets: the test server answers it with an XML bucket list.
  curl -s --max-time 2 "$ENDPOINT/" 2>/dev/null | grep -q "ListAllMyBucketsResult"
}

if [ "${1:-}" = "stop" ]; then
  if pid=$(running_pid); then
    say "stopping pid $pid"
    kill "$pid"
  fi
  exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing nodejs and npm"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi

# Install the locked packages when node_modules is missing or was made from another lock file.
lock_sum=$(sha256sum "$PEER/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$PEER/node_modules/.pingvas-lock" 2>/dev/null || true)" != "$lock_sum" ] ||
   [ ! -f "$PEER/node_modules/@20minutes/s3rver/package.json" ]; then
  say "npm ci in $PEER"
  (cd "$PEER" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_sum" > "$PEER/node_modules/.pingvas-lock"
fi

mkdir -p "$DIR/data"
if pid=$(running_pid) && answers; then
  say "already running on $ENDPOINT (pid $pid)"
else
  if answers; then
    say "port $PORT already answers as an S3 server that this script did not start; using it"
  else
    say "starting on $ENDPOINT (data in $DIR/data)"
    PINGVAS_S3_ACCESS_KEY=$ACCESS_KEY PINGVAS_S3_SECRET_KEY=$SECRET_KEY \
      setsid nohup node "$PEER/server.js" --address 127.0.0.1 --port "$PORT" \
      --directory "$DIR/data" >"$DIR/server.log" 2>&1 </dev/null &
    echo $! > "$DIR/server.pid"
    for _ in $(seq 1 150); do
      answers && break
      running_pid >/dev/null || break
      sleep 0.2
    done
    if ! answers; then
      say "did not answer on $ENDPOINT; log follows"
      tail -n 30 "$DIR/server.log" >&2 || true
      exit 1
    fi
  fi
fi

echo "export PINGVAS_TEST_S3_ENDPOINT=$ENDPOINT"
echo "export PINGVAS_TEST_S3_REGION=us-east-1"
echo "export PINGVAS_TEST_S3_ACCESS_KEY=$ACCESS_KEY"
echo "export PINGVAS_TEST_S3_SECRET_KEY=$SECRET_KEY"
