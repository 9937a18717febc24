#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the production-stack tests and prints
# (on stdout, and nothing else) the `export` lines that point the tests at it; scripts/test.sh
# evals them. Idempotent: a second run finds the cluster running and prints the same lines.
# Needs root (initdb and pg_ctl run as the `postgres` user). Progress goes to stderr.
#   PINGVAS_PG_DIR   cluster directory   [/tmp/pingvas-pg]
#   PINGVAS_PG_PORT  TCP port            [55432]
#   PINGVAS_PG_DURABLE=1  PostgreSQL's own durability settings (fsync, synchronous_commit and
#                    full_page_writes on) instead of the test cluster's off: bench/run.sh's
#                    cluster, in its own PINGVAS_PG_DIR and PINGVAS_PG_PORT
# `postgres.sh status` exits 0 when the cluster in PINGVAS_PG_DIR runs, 1 otherwise;
# `postgres.sh stop` stops it (nothing when it does not run). Neither installs anything.
set -euo pipefail

DIR=${PINGVAS_PG_DIR:-/tmp/pingvas-pg}
PORT=${PINGVAS_PG_PORT:-55432}
ROLE=pingvas
PASS=pingvas

say() { echo "postgres: $*" >&2; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

as_pg() { runuser -u postgres -- "$@"; }

BIN=$(bindir || true)
case "${1:-}" in
  status)
    if [ -n "$BIN" ] && [ -s "$DIR/data/PG_VERSION" ] &&
       as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      exit 0
    fi
    exit 1 ;;
  stop)
    if [ -n "$BIN" ] && [ -s "$DIR/data/PG_VERSION" ] &&
       as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      say "stopping the cluster in $DIR"
      as_pg "$BIN/pg_ctl" -D "$DIR/data" stop -m fast >&2
    fi
    exit 0 ;;
  "") ;;
  *) say "unknown argument '$1' (none to start, or status, or stop)"; exit 2 ;;
esac
if [ -z "$BIN" ] || ! command -v psql >/dev/null 2>&1; then
  say "installing postgresql"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN=$(bindir)
fi
id postgres >/dev/null 2>&1 || { say "no 'postgres' user after installing postgresql"; exit 1; }

mkdir -p "$DIR"
chown postgres:postgres "$DIR"
chmod 0700 "$DIR"
if [ ! -s "$DIR/data/PG_VERSION" ]; then
  say "initdb $DIR/data"
  rm -rf "$DIR/data"
  as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >&2
fi

if as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  say "already running on 127.0.0.1:$PORT"
else
  # A throwaway test cluster: no fsync; enough connections for parallel tests (each pingvas
  # server keeps a pool of up to 8 plus one LISTEN connection). A durable one keeps
  # PostgreSQL's defaults: every commit flushed before it is acknowledged.
  LAX="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${PINGVAS_PG_DURABLE:-}" = 1 ] && LAX=""
  say "starting on 127.0.0.1:$PORT${LAX:+ (fsync off)}"
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 -o \
    "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 $LAX -c max_connections=400" start >&2 || {
    say "pg_ctl start failed; log follows"; tail -n 30 "$DIR/server.log" >&2 || true; exit 1; }
fi

for _ in $(seq 1 100); do
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.1
done
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || { say "not ready on port $PORT"; exit 1; }

psql_admin() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d postgres "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
  say "creating role $ROLE"
  psql_admin -c "CREATE ROLE $ROLE LOGIN SUPERUSER PASSWORD '$PASS'" >&2
fi

echo "export PINGVAS_TEST_PG_URL=postgresql://$ROLE:$PASS@127.0.0.1:$PORT/postgres"
